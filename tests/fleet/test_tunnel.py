"""Tunnels through a fake cloudflared that logs, and refuses, like the real one."""

from __future__ import annotations

import io
import json
import subprocess
from pathlib import Path

import pytest

from scripts.actions_log import JobLog
from scripts.tunnel import (MAX_GRACE_SECONDS, DirectUrl, NamedTunnel, QuickTunnel, TunnelCredential, TunnelError,
                            choose_tunnel, cloudflared_binary, tunnel_credentials)
from tests.fleet.fake_cloudflared import make_fake

FAKE = str(Path(__file__).with_name("fake_cloudflared.py"))
TOKEN = "eyJhIjoiYWNjb3VudCIsInQiOiJ0dW5uZWwiLCJzIjoic2VjcmV0In0="


def records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_the_fake_refuses_what_cloudflared_refuses(tmp_path):
    """The fake's own refusals, as cloudflared's source has them: a grace period over 3m0s, a
    flag it does not define, a duration it cannot parse."""
    binary = make_fake(tmp_path)

    def run(*args: str, token: str = TOKEN) -> subprocess.CompletedProcess:
        return subprocess.run([binary, *args], env={"PATH": "/usr/bin:/bin", "TUNNEL_TOKEN": token},
                              capture_output=True, text=True, timeout=20)

    over = run("tunnel", "--no-autoupdate", "--grace-period", "300s", "run")
    assert over.returncode == 1
    assert 'Couldn\'t start tunnel error="grace-period must be equal or less than 3m0s"' in over.stderr
    assert run("tunnel", "--grace-period", "4m", "run").returncode == 1
    unknown = run("tunnel", "--grace", "10s", "run")
    assert unknown.returncode == 1 and "flag provided but not defined: -grace" in unknown.stderr
    bad = run("tunnel", "--grace-period", "300", "run")
    assert bad.returncode == 1 and 'invalid value "300" for flag -grace-period' in bad.stderr
    no_token = run("tunnel", "run", token="")
    assert no_token.returncode == 1 and "requires the ID or name of the tunnel" in no_token.stderr


def test_named_tunnel_caps_the_grace_period_at_cloudflareds_limit(tmp_path):
    record = tmp_path / "record.jsonl"
    lines: list[str] = []
    # The service drains for 300 s; cloudflared's own limit is 180 s and it refuses more.
    tunnel = NamedTunnel(TunnelCredential(TOKEN, "m.example.com"), "ignored", log=lines.append,
                         binary=make_fake(tmp_path, record=record), grace_seconds=300)
    try:
        assert tunnel.start(timeout=15) == "https://m.example.com"
    finally:
        tunnel.stop(timeout=5)
    assert tunnel.grace_seconds == MAX_GRACE_SECONDS == 180
    assert records(record)[0]["argv"] == ["tunnel", "--no-autoupdate", "--grace-period", "180s", "run"]
    assert not any("Couldn't start tunnel" in line for line in lines)
    with pytest.raises(TunnelError, match="at least 0"):
        NamedTunnel(TunnelCredential(TOKEN), "h", binary=FAKE, log=lines.append, grace_seconds=-1)


def test_quick_tunnel_is_up_only_once_cloudflared_has_connected(tmp_path):
    record = tmp_path / "record.jsonl"
    lines: list[str] = []
    tunnel = QuickTunnel("http://127.0.0.1:8101", binary=make_fake(tmp_path, record=record, connect_delay=0.5),
                         log=lines.append)
    try:
        assert tunnel.start(timeout=15) == "https://plain-fuzzy-words-example.trycloudflare.com"
        assert tunnel.alive()
        # The URL line comes first; start() returned only after a registered connection.
        assert any("Registered tunnel connection" in line for line in lines), lines
    finally:
        tunnel.stop(timeout=5)
    assert not tunnel.alive()
    assert records(record)[0]["argv"] == ["tunnel", "--no-autoupdate", "--url", "http://127.0.0.1:8101"]

    # A URL without a connection is not a tunnel: never registered with the gateway.
    silent = QuickTunnel("http://127.0.0.1:1", binary=make_fake(tmp_path, mode="no-connection", name="nc"),
                         log=lambda _: None)
    with pytest.raises(TunnelError, match="no tunnel after"):
        silent.start(timeout=2)
    assert not silent.alive()


def test_named_tunnel_gets_its_token_by_environment_and_never_logs_it(tmp_path):
    record = tmp_path / "record.jsonl"
    out = io.StringIO()
    log = JobLog(out, on_actions=True)
    log.mask(TOKEN)
    tunnel = NamedTunnel(TunnelCredential(TOKEN, "smollm2-135m.example.com"), "ignored",
                         binary=make_fake(tmp_path, mode="leak", record=record),
                         log=lambda line: log.info(f"cloudflared: {line}"))
    try:
        assert tunnel.start(timeout=15) == "https://smollm2-135m.example.com"
    finally:
        tunnel.stop(timeout=5)
    seen = records(record)[0]
    assert seen["token_given"] and not seen["token_in_argv"]
    text = out.getvalue()
    # The only occurrence is the ::add-mask:: command, which the Actions runner consumes.
    assert text.count(TOKEN) == 1 and text.startswith(f"::add-mask::{TOKEN}\n")
    assert "token is ***" in text


def test_cloudflared_sees_its_own_token_and_none_of_the_runners_secrets(tmp_path, monkeypatch):
    record = tmp_path / "record.jsonl"
    for name in ("WORKFLOW_PAT", "GITHUB_TOKEN", "TUNNELS_JSON", "ARENA_REGISTRATION_TOKEN",
                 "ARENA_INSTANCE_SECRET", "ACTIONS_RUNTIME_TOKEN", "CLOUDFLARE_API_TOKEN"):
        monkeypatch.setenv(name, "secret-value-123456")
    tunnel = NamedTunnel(TunnelCredential(TOKEN, "m.example.com"), "x", binary=make_fake(tmp_path, record=record),
                         log=lambda _: None)
    try:
        tunnel.start(timeout=15)
    finally:
        tunnel.stop(timeout=5)
    env = set(records(record)[0]["env"])
    assert "TUNNEL_TOKEN" in env and "PATH" in env
    assert not env & {"WORKFLOW_PAT", "GITHUB_TOKEN", "TUNNELS_JSON", "ARENA_REGISTRATION_TOKEN",
                      "ARENA_INSTANCE_SECRET", "ACTIONS_RUNTIME_TOKEN", "CLOUDFLARE_API_TOKEN"}, env


def test_a_cloudflared_that_exits_or_stays_silent_fails_clearly(tmp_path):
    with pytest.raises(TunnelError, match="exited with 1"):
        QuickTunnel("http://127.0.0.1:1", binary=make_fake(tmp_path, mode="fail"), log=lambda _: None).start(10)
    tunnel = NamedTunnel(TunnelCredential(TOKEN), "h", binary=make_fake(tmp_path, mode="silent", name="s"),
                         log=lambda _: None)
    with pytest.raises(TunnelError, match="no tunnel after"):
        tunnel.start(timeout=1.5)
    assert not tunnel.alive()


def test_stop_lets_cloudflared_use_its_grace_period(tmp_path):
    """A connector with requests in flight exits by itself when its grace period ends; stop()
    waits for that instead of killing it (before: a kill after 10 s, whatever the grace period)."""
    tunnel = NamedTunnel(TunnelCredential(TOKEN), "h", binary=make_fake(tmp_path, mode="busy"),
                         log=lambda _: None, grace_seconds=2)
    tunnel.start(timeout=15)
    tunnel.stop()
    assert tunnel._proc.process.returncode == 0      # exited by itself, not killed


def test_fake_on_path_is_found(tmp_path, monkeypatch):
    link = tmp_path / "cloudflared"
    link.symlink_to(FAKE)
    monkeypatch.delenv("ARENA_CLOUDFLARED", raising=False)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    assert cloudflared_binary() == str(link)
    with pytest.raises(TunnelError):
        cloudflared_binary(str(tmp_path / "missing"))


def test_tunnels_json_shapes_and_errors_never_echo_tokens():
    parsed = tunnel_credentials(json.dumps({"m": {"token": "t1", "hostname": "m.example.com"}, "g": "t2"}))
    assert parsed == {"m": TunnelCredential("t1", "m.example.com"), "g": TunnelCredential("t2")}
    assert tunnel_credentials("") == {}
    with pytest.raises(TunnelError) as err:
        tunnel_credentials('{"m": {"token": "' + TOKEN + '"')
    assert TOKEN not in str(err.value)
    with pytest.raises(TunnelError):
        tunnel_credentials('{"m": {"hostname": "x"}}')


def test_job_log_redacts_registered_secrets_off_actions():
    out = io.StringIO()
    log = JobLog(out, on_actions=False)
    log.mask("supersecretvalue")
    log.mask("abc")                      # too short to be a secret; never masked
    log.error("failed with supersecretvalue in it")
    assert "supersecretvalue" not in out.getvalue() and "***" in out.getvalue()
    assert "::add-mask::" not in out.getvalue()


def test_annotations_escape_percent_and_line_breaks():
    """Workflow commands end at a line break: a multi-line message must be escaped whole
    (actions/toolkit's escapeData: % -> %25, CR -> %0D, LF -> %0A)."""
    out = io.StringIO()
    log = JobLog(out, on_actions=True, prefix="runner m/1")
    log.mask("supersecretvalue")
    log.error("first line\nsecond line 100% done\r\nsupersecretvalue")
    assert out.getvalue() == "::add-mask::supersecretvalue\n" \
        "::error title=runner m/1::first line%0Asecond line 100%25 done%0D%0A***\n"
    out.truncate(0), out.seek(0)
    JobLog(out, on_actions=True, prefix="gateway: a,b").warning("x")
    assert out.getvalue() == "::warning title=gateway%3A a%2Cb::x\n"


def test_choose_tunnel_picks_by_kind_masks_every_token_and_refuses_quick_tunnels(monkeypatch):
    monkeypatch.setenv("TUNNELS_JSON", json.dumps({"m": {"token": TOKEN, "hostname": "m.example.com"},
                                                   "other": TOKEN[::-1]}))
    out = io.StringIO()
    log = JobLog(out, on_actions=True)
    common = dict(hostname="m", local_url="http://127.0.0.1:8101", base_domain="example.org", job_log=log,
                  cloudflared=FAKE)
    named = choose_tunnel("auto", label="m", **common)
    assert isinstance(named, NamedTunnel) and named.public_url == "https://m.example.com"
    assert f"::add-mask::{TOKEN}" in out.getvalue() and f"::add-mask::{TOKEN[::-1]}" in out.getvalue()
    # Quick tunnels break every stream: refused for the fleet, with or without asking for one.
    for kind in ("auto", "quick"):
        with pytest.raises(TunnelError, match="Server-Sent Events"):
            choose_tunnel(kind, label="no-token" if kind == "auto" else "m", **common)
    # Allowed for a test, with a loud warning.
    assert isinstance(choose_tunnel("auto", label="no-token", allow_quick=True, **common), QuickTunnel)
    assert "::warning title=runner::QUICK TUNNEL" in out.getvalue()
    assert isinstance(choose_tunnel("quick", label="m", allow_quick=True, **common), QuickTunnel)
    direct = choose_tunnel("none", label="m", public_url="https://given.example", **common)
    assert isinstance(direct, DirectUrl) and direct.start(1) == "https://given.example"
    assert choose_tunnel("none", label="m", **common).start(1) == "http://127.0.0.1:8101"
    with pytest.raises(TunnelError, match="no tunnel token for no-token"):
        choose_tunnel("named", label="no-token", **common)


def test_choose_tunnel_defaults_a_named_tunnels_host_to_the_base_domain(monkeypatch):
    monkeypatch.setenv("TUNNELS_JSON", json.dumps({"arena": TOKEN}))
    tunnel = choose_tunnel("auto", label="arena", hostname="arena", local_url="http://127.0.0.1:8080",
                           base_domain="example.org", job_log=JobLog(io.StringIO(), on_actions=False),
                           cloudflared=FAKE)
    assert tunnel.public_url == "https://arena.example.org"
