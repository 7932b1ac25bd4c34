"""What each child of a runner may see of its environment: only what it needs.

A runner's own environment holds the fleet's credentials (`WORKFLOW_PAT`, `GITHUB_TOKEN`,
`TUNNELS_JSON` with every tunnel's token, the registration token, the runner's own
`ACTIONS_*` tokens). Its children get an allow-list instead of a copy:

- the model service: the basics of a process, its `ARENA_*` settings (the instance secret
  included, which it checks), the hub's variables and OpenTelemetry's;
- the gateway: the same, plus the gateway's own secrets (registration token, admin key,
  database URL), which it uses;
- cloudflared: the basics and its one tunnel token, nothing else;
- a model service's llama-server child: the basics, OMP_/GGML_ settings and its API key.
"""

from __future__ import annotations

from typing import Iterable, Mapping

BASICS = ("PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR",
          "SSL_CERT_FILE", "SSL_CERT_DIR", "VIRTUAL_ENV", "XDG_CACHE_HOME", "XDG_DATA_HOME",
          "XDG_CONFIG_HOME", "HTTPS_PROXY", "HTTP_PROXY", "NO_PROXY", "https_proxy", "http_proxy", "no_proxy")
# Runner-only credentials: never in a model service. The gateway uses them (the last two: the
# token it starts and stops instances with, on Actions or through `arena up`'s control channel).
GATEWAY_SECRETS = ("ARENA_REGISTRATION_TOKEN", "ARENA_GATEWAY_ADMIN_KEY", "ARENA_DATABASE_URL",
                   "ARENA_FLEETCTL_GITHUB_TOKEN", "ARENA_FLEET_CONTROL_TOKEN")
SERVICE_PREFIXES = ("ARENA_", "HF_", "OTEL_", "OMP_", "GGML_", "LLAMA_", "PYTHON")


def _pick(environ: Mapping[str, str], names: Iterable[str] = (), prefixes: Iterable[str] = (),
          deny: Iterable[str] = ()) -> dict[str, str]:
    names, prefixes, deny = set(names), tuple(prefixes), set(deny)
    return {key: value for key, value in environ.items()
            if key not in deny and (key in names or key in BASICS or key.startswith(prefixes))}


def service_env(environ: Mapping[str, str]) -> dict[str, str]:
    return _pick(environ, prefixes=SERVICE_PREFIXES, deny=GATEWAY_SECRETS)


def gateway_env(environ: Mapping[str, str]) -> dict[str, str]:
    return _pick(environ, prefixes=SERVICE_PREFIXES)


def llama_server_env(environ: Mapping[str, str], api_key: str) -> dict[str, str]:
    """The engine child of a model service: the basics, ggml's and OpenMP's knobs, and the API
    key it must demand (so other local users cannot use its loopback port)."""
    return {**_pick(environ, prefixes=("OMP_", "GGML_")), "LLAMA_API_KEY": api_key}


def cloudflared_env(environ: Mapping[str, str], token: str | None = None) -> dict[str, str]:
    env = _pick(environ)
    if token:
        env["TUNNEL_TOKEN"] = token
    return env
