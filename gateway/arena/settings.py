"""Settings of the arena, from the environment (``ARENA_UI_<FIELD>``) over catalogue defaults."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.catalogue import Catalogue


class ArenaSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ARENA_UI_", extra="ignore")

    votes_db: Path | None = Field(None, description="SQLite file of battles and votes; default "
                                                    "<fleet data dir>/arena.sqlite3")
    bootstrap_rounds: int = Field(200, ge=10, le=5000, description="resamples behind the 95% intervals")

    def votes_path(self, catalogue: Catalogue) -> Path:
        return self.votes_db or catalogue.fleet.data_path() / "arena.sqlite3"
