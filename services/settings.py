"""Settings of one model service process: the catalogue's entry for the model, overridden by
environment (ARENA_SERVICE_*) and then by the command line."""

from __future__ import annotations

import os
from pathlib import Path
import socket
import uuid
from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.catalogue import Catalogue, ModelSpec
from shared.core_board import BOARD_ENV, SLOT_ENV
from shared.instance_auth import INSTANCE_SECRET_ENV


def _default_instance_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ARENA_SERVICE_", extra="ignore")

    model: str = ""
    host: str | None = None
    port: int | None = None
    parallel: int | None = Field(None, ge=1, le=64)
    n_ctx: int | None = Field(None, ge=128)
    threads: int | None = Field(None, ge=1)
    n_batch: int | None = Field(None, ge=8)
    max_queue: int | None = Field(None, ge=0)
    engine: Literal["llama-cpp-python", "llama-server"] | None = None
    llama_server_binary: Path | None = Field(None, description="default: the one `make install` built")
    instance_id: str = Field(default_factory=_default_instance_id)
    drain_timeout: float = Field(120.0, gt=0, description="seconds to finish in-flight work on SIGTERM")
    instance_secret: str | None = Field(None, validation_alias=AliasChoices(INSTANCE_SECRET_ENV))
    log_level: str = "info"
    log_format: Literal["json", "pretty"] = "pretty"
    tls_cert: Path | None = Field(None, description="PEM certificate: serve HTTPS (with tls_key)")
    tls_key: Path | None = Field(None, description="PEM private key of tls_cert")
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024, description="larger request bodies are refused (413)")
    core_board: Path | None = Field(None, validation_alias=AliasChoices(BOARD_ENV),
                                    description="the local fleet's core board: threads follow its busy instances")
    core_slot: int = Field(0, ge=0, validation_alias=AliasChoices(SLOT_ENV), description="this instance's cell on it")
    core_wait_limit: float = Field(0.3, ge=0, le=1, description=(
        "automatic threads: one thread while the decoding thread waits for a core more than this share of its "
        "runnable time (other work on the machine); 0: never"))

    def resolve(self, catalogue: Catalogue) -> ModelSpec:
        """The model's catalogue entry with this process's overrides applied."""
        spec = catalogue.model(self.model)
        overrides = {name: getattr(self, name) for name in ("parallel", "n_ctx", "threads", "n_batch", "max_queue",
                                                            "engine")
                     if getattr(self, name) is not None}
        if self.port is not None:
            overrides["port"] = self.port
        return spec.model_copy(update=overrides)
