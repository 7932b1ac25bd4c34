"""Settings of the arena, from the environment (``ARENA_UI_<FIELD>``) over catalogue defaults."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ArenaSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ARENA_UI_", extra="ignore")

    bootstrap_rounds: int = Field(200, ge=10, le=5000, description="resamples behind the 95% intervals")
    leaderboard_max_age: float = Field(30.0, ge=0, description="seconds a leaderboard is served before new "
                                                               "votes are looked for (0: every request looks)")
