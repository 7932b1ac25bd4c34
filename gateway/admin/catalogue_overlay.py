"""The runtime overlay of the catalogue: models added at runtime and settings changed by an admin.

The reviewed YAML (`config/catalogue.yaml`) stays the base. The overlay, kept in the gateway's
store (table ``catalogue_overlay``), holds

- *runtime models*: whole catalogue entries of models added from the hub;
- *overrides*: the changed settings of a model of the base.

`effective_catalogue()` is the base with the overlay applied, validated by the catalogue's own
types (`shared.catalogue`), so nothing the overlay holds can be a setting the YAML would refuse.
`export_yaml()` writes the effective catalogue in the catalogue's own format (the base file's
fields, not its environment overrides), so a user can commit it in place of the YAML.
`overlay_yaml()` writes the overlay alone as the file runners on Actions merge over the YAML
(`config/catalogue.overlay.yaml`, published by `gateway.instance_control.overlay_publication`).

Hooks, for the parts of the gateway that act on a change:

- `on_catalogue_changed`: plain callables given the new effective `Catalogue` (the gateway swaps
  the catalogue its registry, status and arena read);
- `on_settings_changed`: async callables given a model key, after a setting its instances read
  (context, slots, tokens, sampling) was saved: the fleet applies it by a rolling restart. With
  no subscriber, the change waits for the next restart of the model (`restart_needed()`).

Several gateways on one store each read the overlay at startup and every
``ARENA_ADMIN_OVERLAY_REFRESH`` seconds (`load()`); a change made through one gateway reaches the
others at their next reload (its rolling restart is started by the gateway that made it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from pathlib import Path
from typing import Any, Awaitable, Callable, Iterable

import yaml
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import delete, select, text
from sqlalchemy.dialects import postgresql, sqlite

from gateway.store import Database
from gateway.store.schema import catalogue_overlay
from shared.catalogue import Catalogue, CatalogueError, ModelSpec, merge_overlay
from shared.errors import DomainError

log = logging.getLogger("gateway.admin.catalogue")

# The settings an admin may change, and those the model's service reads at its start.
EDITABLE = ("n_ctx", "parallel", "default_max_tokens", "max_tokens_limit", "sampling", "battle_weight")
RESTART_FIELDS = frozenset({"n_ctx", "parallel", "default_max_tokens", "max_tokens_limit", "sampling"})
KEY_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")

OVERLAY_FILE_HEADER = (
    "# The runtime overlay of config/catalogue.yaml, published by the gateway's admin side: models\n"
    "# added at runtime (whole entries) and changed settings of the catalogue's models. Runners on\n"
    "# GitHub Actions merge it over the catalogue (ARENA_CATALOGUE_OVERLAY). The gateway's store\n"
    "# holds the overlay: this file is replaced at each publication, so change settings in the\n"
    "# admin page, not here.\n")

SettingsHook = Callable[[str], Awaitable[None]]
CatalogueHook = Callable[[Catalogue], None]


class OverlayError(DomainError):
    code = "invalid_value"


class UnknownModel(OverlayError):
    code = "model_not_found"

    def __init__(self, key: str, known: Iterable[str]) -> None:
        super().__init__(f"No model '{key}' in the catalogue; it has: {', '.join(sorted(known))}.", param="model")


class InvalidSetting(OverlayError):
    code = "invalid_value"


class ModelExists(OverlayError):
    code = "model_exists"


class NotARuntimeModel(OverlayError):
    code = "not_a_runtime_model"


def _param(error: dict[str, Any]) -> str:
    loc = [str(p) for p in error.get("loc", ()) if not isinstance(p, int) or p]
    return ".".join(loc) or "body"


def invalid_setting(exc: ValidationError, prefix: str = "") -> InvalidSetting:
    """The first error of a pydantic validation as an `InvalidSetting` naming its field."""
    first = exc.errors()[0]
    param = prefix + _param(first)
    return InvalidSetting(f"{param}: {first['msg']} (got {first.get('input')!r}).", param=param)


def _spec_to_yaml_fields(spec: ModelSpec, *, full: bool) -> dict[str, Any]:
    """A model's entry as the catalogue writes it: source as text, no key (it is the mapping's)."""
    data = spec.model_dump(mode="json", exclude={"key"}, exclude_defaults=not full)
    data["source"] = str(spec.source)
    if "sampling" in data:
        data["sampling"] = spec.sampling.given()
        if not data["sampling"]:
            del data["sampling"]
    return data


def _ports_end(spec: ModelSpec) -> int:
    """The first port after the model's: one with port P and `instances: N` uses P..P+N-1 locally
    (P alone with no instance)."""
    return spec.port + max(spec.instances, 1)


class CatalogueOverlay:
    """The base catalogue plus the store's overlay. `load()` before use (the gateway's startup)."""

    def __init__(self, base: Catalogue, db: Database, *, clock: Callable[[], float] = time.time,
                 published_file: Path | None = None) -> None:
        """`published_file`: the overlay file of the gateway's checkout (ARENA_CATALOGUE_OVERLAY),
        imported into an empty store (`import_published`); `base` is read without it."""
        self.base = base
        self.db = db
        self.clock = clock
        self.published_file = published_file
        self._loaded = False
        self._runtime: dict[str, ModelSpec] = {}
        self._overrides: dict[str, dict[str, Any]] = {}
        self._effective = base
        self.on_catalogue_changed: list[CatalogueHook] = []
        self.on_settings_changed: list[SettingsHook] = []
        self.skipped: dict[str, str] = {}  # rows of the store that no longer validate: key -> why
        self._lock = asyncio.Lock()  # one change or reload at a time: a reload never undoes a change

    # -- reading ---------------------------------------------------------------------------

    def effective_catalogue(self) -> Catalogue:
        return self._effective

    def model_spec(self, key: str) -> ModelSpec:
        """The model's entry: the base's with its overrides, or the runtime model's."""
        try:
            return self._effective.models[key]
        except KeyError:
            raise UnknownModel(key, self._effective.models) from None

    def is_runtime(self, key: str) -> bool:
        return key in self._runtime

    def runtime_models(self) -> list[str]:
        return list(self._runtime)

    def overrides(self, key: str) -> dict[str, Any]:
        return dict(self._overrides.get(key, {}))

    def settings(self, key: str) -> dict[str, Any]:
        return self.settings_of(self.model_spec(key))

    # -- the store -------------------------------------------------------------------------

    async def load(self) -> None:
        """Read the overlay from the store. A row that no longer validates against the base (a
        runtime model whose key the YAML now names, an override of a model the YAML dropped, a
        value out of a range the catalogue narrowed) is left out and logged, not fatal."""
        async with self._lock:
            await self._load()

    async def _load(self) -> None:
        async with self.db.read() as conn:
            rows = (await conn.execute(select(catalogue_overlay))).all()
        runtime: dict[str, ModelSpec] = {}
        overrides: dict[str, dict[str, Any]] = {}
        skipped: dict[str, str] = {}
        for row in rows:
            try:
                data = json.loads(row.spec)
                if row.kind == "model":
                    if row.key in self.base.models:
                        raise CatalogueError("the catalogue file now names a model of this key")
                    runtime[row.key] = ModelSpec.model_validate({**data, "key": row.key})
                else:
                    if row.key not in self.base.models:
                        raise CatalogueError("the catalogue file no longer names this model")
                    self._merged(self.base.models[row.key], data)
                    overrides[row.key] = data
            except (ValueError, ValidationError, CatalogueError) as exc:
                skipped[row.key] = str(exc).splitlines()[0]
                log.warning("catalogue overlay: %s left out: %s", row.key, skipped[row.key])
        self.skipped = skipped
        if self._loaded and (runtime, overrides) == (self._runtime, self._overrides):
            return  # the periodic reload found nothing new: the published catalogue stands
        self._loaded = True  # the first load publishes: the gateway's catalogue becomes base + store
        self._runtime, self._overrides = runtime, overrides
        self._publish()

    async def store_is_empty(self) -> bool:
        async with self.db.read() as conn:
            return (await conn.execute(select(catalogue_overlay.c.key).limit(1))).first() is None

    async def import_published(self, data: Any, *, source: str, actor: str = "startup") -> list[str] | None:
        """Import a published overlay file's mapping (`overlay_data()`'s shape) into the store when
        the store holds no overlay (a fresh store); None when it does: the store is the overlay's
        one source and is never overwritten. An entry that does not validate is left out and
        logged; when the whole would not be a catalogue, nothing is imported. The keys imported."""
        async with self._lock:
            if not await self.store_is_empty():
                return None
            entries = merge_overlay({"models": {}}, data, source=source)["models"]
            runtime: dict[str, ModelSpec] = {}
            overrides: dict[str, dict[str, Any]] = {}
            for key, fields in entries.items():
                try:
                    if key in self.base.models:
                        unknown = sorted(set(fields) - set(EDITABLE))
                        if unknown:
                            raise CatalogueError(f"{unknown[0]} is not a setting the admin side changes")
                        updated = self._merged(self.base.models[key], fields)
                        self._check_tokens(updated)
                        changed = self._overrides_of(updated)
                        if changed:
                            overrides[key] = changed
                    else:
                        if not KEY_RE.match(key):
                            raise CatalogueError("not a model key")
                        runtime[key] = ModelSpec.model_validate({**fields, "key": key})
                        self._check_tokens(runtime[key])
                except ValidationError as exc:
                    log.warning("catalogue overlay import from %s: %s left out: %s", source, key,
                                invalid_setting(exc).message)
                except (ValueError, CatalogueError, OverlayError) as exc:
                    log.warning("catalogue overlay import from %s: %s left out: %s", source, key,
                                str(exc).splitlines()[0])
            try:
                self._effective_of(runtime, overrides)
            except (ValueError, ValidationError, CatalogueError, OverlayError) as exc:
                log.warning("catalogue overlay import from %s: not imported, the whole is no catalogue: %s", source,
                            str(exc).splitlines()[0])
                return []
            # Gateways starting at once on one fresh store: the first to write imports, the others
            # find its rows (one transaction that holds the overlay's writes off while it looks).
            async with self.db.write() as conn:
                if not self.db.is_sqlite:  # SQLite's write transaction already excludes other writers
                    await conn.execute(text("LOCK TABLE catalogue_overlay IN EXCLUSIVE MODE"))
                if (await conn.execute(select(catalogue_overlay.c.key).limit(1))).first() is not None:
                    return None
                for key, spec in runtime.items():
                    await self._upsert(conn, key, "model", _spec_to_yaml_fields(spec, full=False), actor)
                for key, changed in overrides.items():
                    await self._upsert(conn, key, "override", changed, actor)
            await self._load()
            return [*overrides, *runtime]

    async def _save(self, key: str, kind: str, data: dict[str, Any] | None, actor: str) -> None:
        async with self.db.write() as conn:
            if data is None:
                await conn.execute(delete(catalogue_overlay).where(catalogue_overlay.c.key == key))
            else:
                await self._upsert(conn, key, kind, data, actor)

    async def _upsert(self, conn: Any, key: str, kind: str, data: dict[str, Any], actor: str) -> None:
        """One row per key, written in one statement: an upsert, since two gateways saving the same
        key at once would both find no row to delete and the second insert would fail (PostgreSQL)."""
        values = {"key": key, "kind": kind, "spec": json.dumps(data, sort_keys=True),
                  "updated_at": self.clock(), "updated_by": actor[:64]}
        insert = (sqlite if self.db.is_sqlite else postgresql).insert(catalogue_overlay).values(**values)
        await conn.execute(insert.on_conflict_do_update(
            index_elements=[catalogue_overlay.c.key],
            set_={name: insert.excluded[name] for name in ("kind", "spec", "updated_at", "updated_by")}))

    # -- changes ---------------------------------------------------------------------------

    def new_model_spec(self, fields: dict[str, Any]) -> ModelSpec:
        """Validate a runtime model's entry (key, display name, source, settings...). The port is
        the next one after the catalogue's, the hostname the key, unless given."""
        key = fields.get("key")
        if not isinstance(key, str) or not KEY_RE.match(key):
            raise InvalidSetting("key: lower-case letters, digits, '.', '_' and '-', at most 63, "
                                 f"starting with a letter or digit (got {key!r}).", param="key")
        if key in self._effective.models:
            raise ModelExists(f"The catalogue already has a model '{key}'.", param="key")
        data = {"display_name": key, "hostname": key, "port": self._next_port(), "instances": 0, **fields}
        try:
            spec = ModelSpec.model_validate(data)
        except ValidationError as exc:
            raise invalid_setting(exc) from None
        self._check_tokens(spec)
        return spec

    def _next_port(self) -> int:
        """After every model's ports."""
        return max((_ports_end(m) for m in self._effective.models.values()), default=8101)

    def _ports_taken(self, spec: ModelSpec) -> bool:
        """Whether `spec`'s ports meet another model's."""
        return any(m.port < _ports_end(spec) and spec.port < _ports_end(m) for m in self._effective.models.values())

    async def add_model(self, spec: ModelSpec, *, actor: str = "") -> ModelSpec:
        async with self._lock:
            return await self._add_model(spec, actor)

    async def _add_model(self, spec: ModelSpec, actor: str) -> ModelSpec:
        if spec.key in self._effective.models:
            raise ModelExists(f"The catalogue already has a model '{spec.key}'.", param="key")
        if self._ports_taken(spec):
            # Another model took this port since the spec was made (two downloads at once: each
            # was given the next port then); the next free one is picked here, under the lock.
            spec = spec.model_copy(update={"port": self._next_port()})
        await self._save(spec.key, "model", _spec_to_yaml_fields(spec, full=False), actor)
        self._runtime[spec.key] = spec
        self._publish()
        return spec

    async def remove_model(self, key: str, *, actor: str = "") -> None:
        async with self._lock:
            await self._remove_model(key, actor)

    def check_removable(self, key: str) -> None:
        """Only a model added at runtime can be removed here."""
        if key not in self._runtime:
            if key in self._effective.models:
                raise NotARuntimeModel(f"'{key}' is a model of the catalogue file, not one added at runtime; "
                                       "remove it from the YAML instead.", param="model")
            raise UnknownModel(key, self._effective.models)

    async def _remove_model(self, key: str, actor: str) -> None:
        self.check_removable(key)
        await self._save(key, "model", None, actor)
        del self._runtime[key]
        self._publish()

    async def update_settings(self, key: str, changes: dict[str, Any], *, actor: str = "",
                              on_saved: Callable[[], Awaitable[None]] | None = None) -> tuple[ModelSpec, bool]:
        """Validate and save `changes` to the model's settings. Returns the new entry and whether
        the change needs the model's instances restarted; the `on_settings_changed` hooks are
        awaited for such a change (a failing hook is logged: the change is saved). `on_saved` is
        awaited once the change is saved, before the hooks (the audit log records the change
        before the rolling restart it causes)."""
        async with self._lock:
            updated, restart = await self._update_settings(key, changes, actor)
        if on_saved is not None:
            await on_saved()
        if restart:
            await self._settings_changed(key)
        return updated, restart

    async def _update_settings(self, key: str, changes: dict[str, Any], actor: str) -> tuple[ModelSpec, bool]:
        current = self.model_spec(key)
        unknown = sorted(set(changes) - set(EDITABLE))
        if unknown:
            raise InvalidSetting(f"{unknown[0]}: not a setting that can be changed here; these can: "
                                 f"{', '.join(EDITABLE)}.", param=unknown[0])
        if not changes:
            raise InvalidSetting(f"no setting given; these can be changed: {', '.join(EDITABLE)}.", param="body")
        if isinstance(changes.get("sampling"), dict):  # a partial change of sampling; null clears a field
            sampling = {**current.sampling.given(), **changes["sampling"]}
            changes = {**changes, "sampling": {k: v for k, v in sampling.items() if v is not None}}
        updated = self._merged(current, changes)
        self._check_tokens(updated)
        changed = {name for name in changes if getattr(updated, name) != getattr(current, name)}
        if key in self._runtime:
            await self._save(key, "model", _spec_to_yaml_fields(updated, full=False), actor)
            self._runtime[key] = updated
        else:
            overrides = self._overrides_of(updated)
            await self._save(key, "override", overrides or None, actor)
            if overrides:
                self._overrides[key] = overrides
            else:
                self._overrides.pop(key, None)
        self._publish()
        return updated, bool(changed & RESTART_FIELDS)

    async def _settings_changed(self, key: str) -> None:
        for hook in list(self.on_settings_changed):
            try:
                await hook(key)
            except Exception:  # the change is saved; the fleet reports its own failure
                log.exception("catalogue overlay: settings hook failed for %s", key)

    async def reset_settings(self, key: str, *, actor: str = "",
                             on_saved: Callable[[], Awaitable[None]] | None = None) -> ModelSpec:
        """Drop the overrides of a base model (back to the YAML's settings); `on_saved` as in
        `update_settings`."""
        if key not in self.base.models:
            raise NotARuntimeModel(f"'{key}' was added at runtime: it has no catalogue settings to go back to.",
                                   param="model")
        async with self._lock:
            had = key in self._overrides
            if had:
                await self._save(key, "override", None, actor)
                del self._overrides[key]
                self._publish()
        if on_saved is not None:
            await on_saved()
        if had:
            await self._settings_changed(key)
        return self.model_spec(key)

    def restart_needed(self) -> bool:
        """True when a settings change waits for a restart (nobody applies it by itself)."""
        return not self.on_settings_changed

    # -- export ----------------------------------------------------------------------------

    def export_data(self) -> dict[str, Any]:
        """The effective catalogue as the YAML file's mapping: the base file as written (without
        the environment's overrides), its models' overrides applied, the runtime models added."""
        raw: dict[str, Any] | None = None
        if self.base.path is not None:
            try:
                raw = yaml.safe_load(self.base.path.read_text()) or {}
            except (OSError, yaml.YAMLError):
                raw = None
        if raw is None:
            raw = self.base.model_dump(mode="json", exclude={"models"})
            raw["models"] = {k: _spec_to_yaml_fields(m, full=False) for k, m in self.base.models.items()}
        models = {key: dict(value or {}) for key, value in (raw.get("models") or {}).items()}
        for key, overrides in self._overrides.items():
            entry = models.setdefault(key, {})
            for name, value in overrides.items():
                if name == "sampling" and isinstance(entry.get("sampling"), dict):
                    value = {**entry["sampling"], **value}
                entry[name] = value
        for key, spec in self._runtime.items():
            models[key] = _spec_to_yaml_fields(spec, full=False)
        return {**raw, "models": models}

    def export_yaml(self) -> str:
        data = self.export_data()
        runtime = ", ".join(self._runtime) or "none"
        changed = ", ".join(self._overrides) or "none"
        header = ("# The effective catalogue, exported by the gateway's admin side: the catalogue file with the\n"
                  "# runtime overlay applied (models added at runtime: " + runtime + "; settings changed: "
                  + changed + ").\n# Commit it as config/catalogue.yaml to make the overlay part of the reviewed "
                  "catalogue.\n")
        return header + yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=110)

    def overlay_data(self) -> dict[str, Any]:
        """The overlay alone, as the overlay file the runners merge over the catalogue file
        (`shared.catalogue.merge_overlay`): each changed model's changed settings, each runtime
        model's whole entry."""
        models: dict[str, Any] = {key: dict(overrides) for key, overrides in sorted(self._overrides.items())}
        for key, spec in sorted(self._runtime.items()):
            models[key] = _spec_to_yaml_fields(spec, full=False)
        return {"models": models}

    def overlay_yaml(self) -> str:
        """`overlay_data()` as the text of `config/catalogue.overlay.yaml`: the same overlay gives
        the same bytes (no time, no author in it), so publishing it again changes nothing."""
        return OVERLAY_FILE_HEADER + yaml.safe_dump(self.overlay_data(), sort_keys=True, allow_unicode=True,
                                                    width=110)

    # -- inside ----------------------------------------------------------------------------

    @staticmethod
    def settings_of(spec: ModelSpec) -> dict[str, Any]:
        return {name: (spec.sampling.given() if name == "sampling" else getattr(spec, name)) for name in EDITABLE}

    def _overrides_of(self, spec: ModelSpec) -> dict[str, Any]:
        """The settings in which `spec`, a model of the base, differs from the base's entry."""
        base = self.base.models[spec.key]
        return {name: value for name, value in self.settings_of(spec).items()
                if getattr(spec, name) != getattr(base, name)}

    @staticmethod
    def _merged(spec: ModelSpec, changes: dict[str, Any]) -> ModelSpec:
        data = spec.model_dump()
        data.update(changes)
        try:
            return ModelSpec.model_validate(data)
        except ValidationError as exc:
            raise invalid_setting(exc) from None

    @staticmethod
    def _check_tokens(spec: ModelSpec) -> None:
        if spec.max_tokens_limit > spec.n_ctx:
            raise InvalidSetting(f"max_tokens_limit: {spec.max_tokens_limit} is above the context size n_ctx "
                                 f"{spec.n_ctx}.", param="max_tokens_limit")
        if spec.default_max_tokens > spec.max_tokens_limit:
            raise InvalidSetting(f"default_max_tokens: {spec.default_max_tokens} is above max_tokens_limit "
                                 f"{spec.max_tokens_limit}.", param="default_max_tokens")

    def _effective_of(self, runtime: dict[str, ModelSpec], overrides: dict[str, dict[str, Any]]) -> Catalogue:
        models: dict[str, ModelSpec] = {}
        for key, spec in self.base.models.items():
            models[key] = self._merged(spec, overrides[key]) if key in overrides else spec
        models.update(runtime)
        effective = self.base.model_copy(update={"models": models})
        TypeAdapter(Catalogue).validate_python(effective.model_dump())  # the whole stays a catalogue
        return effective

    def _publish(self) -> None:
        effective = self._effective = self._effective_of(self._runtime, self._overrides)
        for hook in list(self.on_catalogue_changed):
            hook(effective)
