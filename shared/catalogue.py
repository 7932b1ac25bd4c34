"""The catalogue of models and fleet settings (config/catalogue.yaml), as typed objects.

This is the one place a model, a port or a fleet setting is named. Environment variables
override the file:

- ``ARENA_FLEET__<FIELD>``, e.g. ``ARENA_FLEET__GATEWAY_PORT=9000``;
- ``ARENA_ARENA__<FIELD>`` (the `arena` section), e.g. ``ARENA_ARENA__VOTES_PER_MINUTE=30``;
- ``ARENA_MODEL_<KEY>__<FIELD>``, e.g. ``ARENA_MODEL_SMOLLM2_135M__PARALLEL=4``;
- ``ARENA_CATALOGUE`` names another catalogue file altogether.

``ARENA_CATALOGUE_OVERLAY`` names an *overlay file* merged over the catalogue file before the
environment overrides: the runtime overlay the gateway's admin side publishes to the repository
(`config/catalogue.overlay.yaml`, read by the runners on GitHub Actions). It holds ``models``
only: for a model of the catalogue, the fields it gives replace the file's (``sampling`` as a
whole); a key the catalogue lacks is a whole new entry (a model added at runtime).

`load_catalogue` is called once per process, by the command line, and the result is passed
to whatever needs it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, TypeAdapter, field_validator

from shared import paths

OVERLAY_ENV = "ARENA_CATALOGUE_OVERLAY"
MAX_OVERLAY_BYTES = 512 * 1024   # the overlay is settings and a few entries: kilobytes, never megabytes
# libyaml's parser when PyYAML was built with it: the same documents, read ~6x faster (the
# catalogue is read on every process's way to ready; measured in the README's cold-start line).
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
QUANT_RE = re.compile(r"^(I?Q\d[A-Z0-9_]*|UD-[A-Z0-9_]+|F16|BF16|F32|MXFP4[A-Z0-9_]*)$", re.IGNORECASE)


class CatalogueError(ValueError):
    """The catalogue file, or an override of it, is not valid."""


class ModelSource(BaseModel):
    """Where a model's GGUF file comes from."""

    model_config = ConfigDict(frozen=True)

    kind: Literal["package", "gemma-chunks", "path", "hub"]
    package: str | None = None
    repo: str | None = None
    file: str | None = None
    quant: str | None = None  # hub:<repo>:<QUANT>: the file is found by listing the repository

    @classmethod
    def parse(cls, text: str) -> "ModelSource":
        kind, sep, rest = text.partition(":")
        if not sep or not rest:
            raise CatalogueError(f"model source {text!r} is not of the form KIND:LOCATION")
        if kind == "package":
            package, slash, file = rest.partition("/")
            if not slash or not file:
                raise CatalogueError(f"package source {text!r} must be package:<dist>/<file>")
            return cls(kind="package", package=package, file=file)
        if kind == "gemma-chunks":
            return cls(kind="gemma-chunks", package=rest)
        if kind == "path":
            return cls(kind="path", file=rest)
        if kind == "hub":
            repo, colon, file = rest.rpartition(":")
            if not colon or not repo or not file:
                raise CatalogueError(f"hub source {text!r} must be hub:<repo>:<file> or hub:<repo>:<QUANT>")
            if file.lower().endswith(".gguf"):
                return cls(kind="hub", repo=repo, file=file)
            if not QUANT_RE.match(file):
                raise CatalogueError(f"hub source {text!r}: {file!r} is neither a .gguf file nor a quantisation "
                                     "such as Q4_K_M")
            return cls(kind="hub", repo=repo, quant=file)
        raise CatalogueError(f"unknown model source kind {kind!r} in {text!r}")

    def __str__(self) -> str:
        if self.kind == "package":
            return f"package:{self.package}/{self.file}"
        if self.kind == "gemma-chunks":
            return f"gemma-chunks:{self.package}"
        if self.kind == "path":
            return f"path:{self.file}"
        return f"hub:{self.repo}:{self.file or self.quant}"


class ModelProfile(BaseModel):
    """What a model is, for people, for the arena and for the modes' orchestrator: a short
    description, its size, what it is good at and not, its trained context, tool and reasoning
    support, published benchmark figures, and the words by which an answer gives away which
    model wrote it (its name, its maker). One place for these facts: battles read
    `identity_words`, the discussion's orchestrator weighs participants by the rest, the modes
    pages show them."""

    model_config = ConfigDict(extra="forbid")

    description: str = ""
    parameters: str | None = Field(None, description="size, e.g. '4B' or '270M'")
    strengths: list[str] = Field(default_factory=list)
    context_length: int | None = Field(None, ge=128, description="the model's trained context, in tokens")
    tools: bool = False
    reasoning: Literal["none", "optional", "always"] = "none"
    languages: list[str] = Field(default_factory=lambda: ["en"])
    weaknesses: list[str] = Field(default_factory=list, description="what it should not be trusted with")
    benchmarks: dict[str, str] = Field(default_factory=dict,
                                       description="benchmark name -> result as published, with its source")
    identity_words: list[str] = Field(default_factory=list)


class SamplingDefaults(BaseModel):
    """Sampling a model's service applies to the fields a request leaves out (unset: the
    service's own defaults). The ranges are those the service accepts in a request."""

    model_config = ConfigDict(extra="forbid")

    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0, le=1000)
    min_p: float | None = Field(None, ge=0, le=1)
    repeat_penalty: float | None = Field(None, gt=0, le=5)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)

    def given(self) -> dict[str, float | int]:
        return self.model_dump(exclude_none=True)


class ModelSpec(BaseModel):
    """One model of the fleet, as the catalogue names it."""

    model_config = ConfigDict(extra="forbid")

    key: str
    display_name: str
    description: str = ""
    source: ModelSource
    sha256: str | None = None
    # What decodes it: llama-cpp-python's bindings in our own process, or llama.cpp's own
    # `llama-server` as a child that our service fronts (services/llama_server.py).
    engine: Literal["llama-cpp-python", "llama-server"] = "llama-cpp-python"
    chat_template: str | None = None
    stop: list[str] = Field(default_factory=list)
    n_ctx: int = Field(2048, ge=128, le=1_048_576)
    threads: int | None = Field(None, ge=1)  # None: automatic (see shared.core_share)
    n_batch: int = Field(512, ge=8)
    parallel: int = Field(4, ge=1, le=64)
    max_queue: int = Field(64, ge=0)
    # At the gateway: requests held while every instance of the model is full (0: none held,
    # each goes to an instance's own queue), and the longest one is held before a 503.
    overload_buffer: int = Field(32, ge=0)
    overload_wait: float = Field(30.0, gt=0)
    prompt_cache_mb: int = Field(256, ge=0)  # RAM for KV of sequences evicted from slots; 0: off
    default_max_tokens: int = Field(256, ge=1, le=1_048_576)
    max_tokens_limit: int = Field(1024, ge=1, le=1_048_576)
    sampling: SamplingDefaults = Field(default_factory=SamplingDefaults)
    port: int = Field(ge=1, le=65535)
    hostname: str
    instances: int = Field(1, ge=0, le=8)
    # Instances on the Actions fleet, when not `instances` (models these machines cannot
    # download have 0 locally and some on Actions).
    actions_instances: int | None = Field(None, ge=0, le=8)
    battle_weight: float = Field(1.0, ge=0, le=100)
    categories: list[str] = Field(default_factory=list)
    profile: ModelProfile = Field(default_factory=ModelProfile)

    @field_validator("source", mode="before")
    @classmethod
    def _parse_source(cls, value: Any) -> Any:
        return ModelSource.parse(value) if isinstance(value, str) else value

    def instances_for(self, fleet: Literal["local", "actions"]) -> int:
        if fleet == "actions" and self.actions_instances is not None:
            return self.actions_instances
        return self.instances

    @property
    def env_prefix(self) -> str:
        """The stem of this model's environment variables, e.g. ``SMOLLM2_135M``."""
        return env_key(self.key)


class RoutingRule(BaseModel):
    model: str
    keywords: list[str]


class Routing(BaseModel):
    default: str | None = None
    rules: list[RoutingRule] = Field(default_factory=list)


class ArenaPolicy(BaseModel):
    """Limits of the arena's battles and votes (see the README's arena section)."""

    model_config = ConfigDict(extra="forbid")

    max_turns: int = Field(4, ge=1, le=50, description="user turns a battle may have before the vote")
    max_prompt_chars: int = Field(8_000, ge=1, description="characters in one user turn")
    max_system_chars: int = Field(4_000, ge=0)
    max_conversation_chars: int = Field(32_000, ge=1, description="characters of all turns of a battle")
    battles_per_minute: int = Field(10, ge=0, description="battles one client may open per minute; 0: no limit")
    votes_per_minute: int = Field(10, ge=0, description="votes one client may cast per minute; 0: no limit")
    flood_votes_per_hour: int = Field(60, ge=1, description="votes per hour from one client shown as a flood")
    answer_deadline: float = Field(90.0, gt=0, le=3600, description="seconds an answer may go without progress "
                                   "(its first word, or the next) before its panel fails")
    max_regenerations: int = Field(3, ge=0, le=20, description="regenerations of a voted battle's sides")
    sessions_per_minute: int = Field(6, ge=0, description="mode sessions (discussion, council, roundtable) one "
                                                          "client may start per minute; 0: no limit")
    transcript_retention_days: float = Field(90, ge=0, description="days a mode session's transcript is kept; "
                                                                   "0: for ever")
    trusted_proxies: list[str] = Field(default_factory=list,
                                       description="addresses or networks whose X-Forwarded-For is believed")


class FleetSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    gateway_host: str = "127.0.0.1"
    gateway_port: int = 8080
    service_host: str = "127.0.0.1"
    base_domain: str | None = None
    gateway_hostname: str = "arena"
    health_interval: float = Field(2.0, gt=0)
    health_timeout: float = Field(2.0, gt=0)
    request_timeout: float = Field(600.0, gt=0)
    data_dir: str | None = None
    model_cache_dir: str | None = None
    runner_duration_hours: float = Field(5.5, gt=0)
    runner_handoff_margin_minutes: float = Field(15, ge=0)
    response_cache_entries: int = Field(1024, ge=0)   # the gateway's cache of deterministic answers; 0: off
    response_cache_ttl: float = Field(600.0, gt=0)
    shared_threads: bool = True  # local fleet: instances share cores by who is busy (shared.core_share); off: fixed shares

    def data_path(self) -> Path:
        """`data_dir` (relative to the checkout, if run from one), else the default data folder."""
        if not self.data_dir:
            return paths.data_dir()
        path = Path(self.data_dir).expanduser()
        root = paths.checkout_root()
        return path if path.is_absolute() or root is None else root / path

    def model_cache_path(self) -> Path:
        if self.model_cache_dir:
            return Path(self.model_cache_dir).expanduser()
        return paths.cache_dir() / "models"


class Catalogue(BaseModel):
    fleet: FleetSettings
    models: dict[str, ModelSpec]
    routing: Routing = Field(default_factory=Routing)
    arena: ArenaPolicy = Field(default_factory=ArenaPolicy)
    _path: Path | None = PrivateAttr(None)
    _overlay_file: Path | None = PrivateAttr(None)
    _without_overlay: "Catalogue | None" = PrivateAttr(None)
    _plain: dict[str, Any] | None = PrivateAttr(None)  # the mapping without the overlay, validated when asked

    @property
    def path(self) -> Path | None:
        """The file this catalogue was read from (child processes are pointed at it)."""
        return self._path

    @property
    def overlay_file(self) -> Path | None:
        """The overlay file merged into this catalogue (``ARENA_CATALOGUE_OVERLAY``), if any."""
        return self._overlay_file

    def without_overlay(self) -> "Catalogue":
        """This catalogue as read without its overlay file (itself when none was merged): the
        gateway's base, whose own overlay lives in its store. Validated on the first call only
        (only the gateway's admin side asks: every other process validates the catalogue once)."""
        if self._plain is None:
            return self
        if self._without_overlay is None:
            self._without_overlay = _validate(self._plain, self._path)
        return self._without_overlay

    def model(self, key: str) -> ModelSpec:
        try:
            return self.models[key]
        except KeyError:
            known = ", ".join(sorted(self.models))
            raise CatalogueError(f"unknown model {key!r}; the catalogue has: {known}") from None


def env_key(model_key: str) -> str:
    """``smollm2-135m`` -> ``SMOLLM2_135M`` (the stem of a model's environment variables)."""
    return model_key.upper().replace("-", "_").replace(".", "_")


def _coerce(text: str) -> Any:
    """Read an override value as YAML, so numbers, booleans and lists work."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def _apply_overrides(raw: dict[str, Any], environ: dict[str, str]) -> dict[str, Any]:
    fleet = dict(raw.get("fleet") or {})
    arena = dict(raw.get("arena") or {})
    models = {key: dict(value or {}) for key, value in (raw.get("models") or {}).items()}
    by_env_key = {env_key(key): key for key in models}
    for name, value in environ.items():
        if name.startswith("ARENA_FLEET__"):
            fleet[name[len("ARENA_FLEET__"):].lower()] = _coerce(value)
        elif name.startswith("ARENA_ARENA__"):
            arena[name[len("ARENA_ARENA__"):].lower()] = _coerce(value)
        elif name.startswith("ARENA_MODEL_") and "__" in name:
            stem, _, field = name[len("ARENA_MODEL_"):].partition("__")
            if stem in by_env_key:
                models[by_env_key[stem]][field.lower()] = _coerce(value)
    for key, spec in models.items():
        spec["key"] = key
    return {**raw, "fleet": fleet, "models": models, **({"arena": arena} if arena else {})}


def merge_overlay(raw: dict[str, Any], overlay: Any, *, source: str = "the overlay") -> dict[str, Any]:
    """The catalogue mapping `raw` with an overlay mapping (``{"models": {key: fields}}``) merged
    over it: fields of a known model replace the catalogue's, an unknown key is a whole entry."""
    if overlay is None:
        return raw
    if not isinstance(overlay, dict) or set(overlay) - {"models"}:
        raise CatalogueError(f"{source} may hold only a 'models' mapping")
    entries = overlay.get("models") or {}
    if not isinstance(entries, dict):
        raise CatalogueError(f"{source}: 'models' must map model keys to their settings")
    models = {key: dict(value or {}) for key, value in (raw.get("models") or {}).items()}
    for key, fields in entries.items():
        if not isinstance(key, str) or not isinstance(fields, dict):
            raise CatalogueError(f"{source}: the entry {key!r} must map setting names to values")
        models[key] = {**models.get(key, {}), **fields}
    return {**raw, "models": models}


def read_overlay(path: str | Path) -> Any:
    """The overlay file's mapping (bounded: MAX_OVERLAY_BYTES)."""
    path = Path(path).expanduser()
    try:
        with path.open("rb") as file:
            data = file.read(MAX_OVERLAY_BYTES + 1)
    except OSError as exc:
        raise CatalogueError(f"cannot read the catalogue overlay {path}: {exc}") from exc
    if len(data) > MAX_OVERLAY_BYTES:
        raise CatalogueError(f"the catalogue overlay {path} is larger than {MAX_OVERLAY_BYTES} bytes")
    try:
        return yaml.safe_load(data.decode("utf-8"))
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise CatalogueError(f"the catalogue overlay {path} is not YAML: {exc}") from exc


def load_catalogue(path: str | Path | None = None, environ: dict[str, str] | None = None) -> Catalogue:
    """Read the catalogue file (`path`, else ``ARENA_CATALOGUE``, else the bundled one), merge the
    overlay file ``ARENA_CATALOGUE_OVERLAY`` names (if any) and apply environment overrides."""
    env = dict(os.environ if environ is None else environ)
    path = Path(path or env.get("ARENA_CATALOGUE") or paths.bundled_catalogue()).expanduser().resolve()
    try:
        raw = yaml.load(path.read_text(), Loader=YAML_LOADER) or {}
    except OSError as exc:
        raise CatalogueError(f"cannot read the catalogue {path}: {exc}") from exc
    plain = raw
    if env.get(OVERLAY_ENV):
        raw = merge_overlay(raw, read_overlay(env[OVERLAY_ENV]), source=f"the catalogue overlay {env[OVERLAY_ENV]}")
    catalogue = _validate(_apply_overrides(raw, env), path)
    if raw is not plain:
        catalogue._plain = _apply_overrides(plain, env)
        catalogue._overlay_file = Path(env[OVERLAY_ENV]).expanduser()
    return catalogue


def _validate(mapping: dict[str, Any], path: Path | None) -> Catalogue:
    try:
        catalogue = TypeAdapter(Catalogue).validate_python(mapping)
    except ValueError as exc:
        raise CatalogueError(f"invalid catalogue {path}: {exc}") from exc
    catalogue._path = path
    return catalogue
