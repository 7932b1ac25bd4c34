"""Typed settings of the gateway process.

Every field can be set by environment (``ARENA_GATEWAY_<FIELD>``); fields left unset take the
catalogue's `fleet` section (`for_catalogue`, `with_fleet_defaults`), so a fleet setting is named
in one place and the catalogue is passed in, never read from a global. Three secrets keep the
names the rest of the fleet uses: ``ARENA_REGISTRATION_TOKEN`` and ``ARENA_INSTANCE_SECRET``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from shared.catalogue import Catalogue, FleetSettings
from shared.instance_auth import INSTANCE_SECRET_ENV

ADMIN_KEY_MIN_LENGTH = 16  # shorter admin keys are refused at start: guessing must stay hopeless


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ARENA_GATEWAY_", extra="ignore", populate_by_name=True)

    host: str | None = Field(None, description="default: catalogue fleet.gateway_host")
    port: int | None = Field(None, ge=0, le=65535, description="default: catalogue fleet.gateway_port")
    log_format: Literal["json", "pretty"] = "pretty"
    log_level: str = "info"
    tls_cert: Path | None = Field(None, description="PEM certificate: serve HTTPS (with tls_key)")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert")

    # Health probes and state changes.
    health_interval: float | None = Field(None, gt=0, description="seconds between probes; default fleet")
    health_timeout: float | None = Field(None, gt=0, description="probe timeout; default fleet")
    recovery_probes: int = Field(2, ge=1, description="good probes in a row before an unhealthy instance is ready")
    flap_threshold: int = Field(3, ge=1, description="failures within flap_window that start a cool-down")
    flap_window: float = Field(60.0, gt=0)
    flap_cooldown: float = Field(30.0, ge=0, description="seconds a flapping instance gets no traffic")
    gone_retention: float = Field(300.0, ge=0, description="seconds an expired instance stays on the status page")

    # Proxying.
    request_timeout: float | None = Field(None, gt=0, description="upstream read timeout; default fleet")
    connect_timeout: float = Field(2.0, gt=0)
    retry_attempts: int = Field(3, ge=1, le=10, description="instances tried before the first byte")
    retry_backoff: float = Field(0.05, ge=0, description="first back-off between attempts, doubled each time")
    retry_backoff_max: float = Field(1.0, ge=0)
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="larger request bodies are refused (413)")
    max_response_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="cap on an instance's non-streamed answer")
    balancer: Literal["prefix-affinity", "least-busy", "power-of-two"] = "prefix-affinity"
    max_connections: int = Field(512, ge=1, description="upstream connections (a request waits connect_timeout "
                                                         "at most for one)")
    drain_timeout: float = Field(60.0, ge=0, description="on SIGTERM, seconds to let in-flight requests finish")
    drain_linger: float = Field(1.0, ge=0, description="on SIGTERM, seconds at least of 503s before exiting")

    # Instances.
    instance_urls: dict[str, list[str]] | None = Field(
        None, description="static instances, model key -> URLs; unset: <KEY>_API_URL, BASE_DOMAIN or the catalogue")
    catalogue_instances: bool = Field(
        True, description="without <KEY>_API_URL, use the catalogue's ports (or BASE_DOMAIN hostnames)")
    registration_token: str | None = Field(
        None, validation_alias=AliasChoices("ARENA_REGISTRATION_TOKEN", "ARENA_GATEWAY_REGISTRATION_TOKEN"))
    instance_secret: str | None = Field(
        None, validation_alias=AliasChoices(INSTANCE_SECRET_ENV, "ARENA_GATEWAY_INSTANCE_SECRET"))
    default_ttl: int = Field(60, ge=1)
    max_ttl: int = Field(24 * 3600, ge=1)
    registration_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="host patterns a registered URL may name (fnmatch, comma-separated; "
                                          "'loopback' for 127.0.0.0/8, ::1 and localhost); default: loopback and "
                                          "*.<BASE_DOMAIN>, or *.trycloudflare.com without a domain")
    max_registrations_per_model: int = Field(8, ge=1, description="live registrations one model may have")

    # Keys, limits, CORS, storage.
    require_api_key: bool = Field(False, description="require a key made with `arena keys create` on /v1/*")
    admin_key: str | None = Field(None, description=f"bearer key of the admin endpoints, at least "
                                                    f"{ADMIN_KEY_MIN_LENGTH} characters; unset: admin API off")
    auth_failures_per_minute: int = Field(20, ge=1, description="wrong admin or API keys one client may send per "
                                                                "minute before it is refused (429)")
    default_rpm: int = Field(0, ge=0, description="requests per minute of a key without its own limit; 0: none")
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    database_url: str | None = Field(
        None, validation_alias=AliasChoices("ARENA_DATABASE_URL", "ARENA_GATEWAY_DATABASE_URL"),
        description="the store: postgresql://user:password@host/db; unset: the SQLite file db_path")
    db_path: Path | None = Field(None, description="SQLite file of the store when ARENA_DATABASE_URL is unset; "
                                                   "default <fleet data dir>/gateway.sqlite3")
    key_refresh: float = Field(2.0, gt=0, description="seconds between reloads of the API keys from the store")
    registration_sync: float = Field(1.0, gt=0, description="seconds between syncs of registrations from the store")
    unvoted_battle_ttl: float = Field(7 * 24 * 3600, gt=0, description="seconds before an unvoted battle is pruned")
    prune_interval: float = Field(600.0, gt=0, description="seconds between prunes of old battles and rate windows")

    @field_validator("cors_origins", "registration_hosts", mode="before")
    @classmethod
    def _split_origins(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @field_validator("registration_token", "instance_secret", "admin_key", "database_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("admin_key")
    @classmethod
    def _long_admin_key(cls, value: str | None) -> str | None:
        if value is not None and len(value) < ADMIN_KEY_MIN_LENGTH:
            raise ValueError(f"ARENA_GATEWAY_ADMIN_KEY is {len(value)} characters; it must be at least "
                             f"{ADMIN_KEY_MIN_LENGTH} (a long random secret, e.g. `openssl rand -hex 32`)")
        return value

    @classmethod
    def for_catalogue(cls, catalogue: Catalogue, **overrides: Any) -> "GatewaySettings":
        """Settings from the environment and `overrides`, unset fields from the catalogue's fleet."""
        return cls(**overrides).with_fleet_defaults(catalogue.fleet)

    def registration_host_patterns(self, base_domain: str | None) -> list[str]:
        """The hosts registered instances may be at: the setting, else loopback and the tunnel domain."""
        if self.registration_hosts:
            return self.registration_hosts
        tunnel = f"*.{base_domain.strip('.')}" if base_domain else "*.trycloudflare.com"
        return ["loopback", tunnel]

    @property
    def store_url(self) -> str:
        """The store's database URL: ARENA_DATABASE_URL, else the SQLite file `db_path`."""
        return self.database_url or f"sqlite:///{self.db_path}"

    def with_fleet_defaults(self, fleet: FleetSettings) -> "GatewaySettings":
        """A copy whose unset fields take the fleet's values."""
        return self.model_copy(update={
            "host": self.host or fleet.gateway_host,
            "port": fleet.gateway_port if self.port is None else self.port,
            "health_interval": self.health_interval or fleet.health_interval,
            "health_timeout": self.health_timeout or fleet.health_timeout,
            "request_timeout": self.request_timeout or fleet.request_timeout,
            "db_path": self.db_path or fleet.data_path() / "gateway.sqlite3",
        })
