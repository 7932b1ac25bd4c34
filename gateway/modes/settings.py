"""Settings of the multi-model modes, from the environment (``ARENA_MODES_<FIELD>``).

The external orchestrator's token is read from ``GH_MODELS_TOKEN`` (the name GitHub Models
uses) or ``ARENA_MODES_ORCHESTRATOR_TOKEN``. It is a `SecretStr`: it never appears in a repr,
a log line, a page or an API answer; only `ExternalChat` reads its value, to put it in the
Authorization header of requests to that one endpoint.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

GITHUB_MODELS_URL = "https://models.github.ai/inference"
EXTERNAL = "external"


class ModesSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ARENA_MODES_", extra="ignore", populate_by_name=True)

    # Bounds of one session: a public URL means a hostile client.
    min_participants: int = Field(2, ge=2, le=6)
    max_participants: int = Field(6, ge=2, le=6)
    max_rounds: int = Field(4, ge=1, le=10, description="discussion and roundtable rounds")
    max_tokens_per_turn: int = Field(512, ge=16, le=4096)
    max_question_chars: int = Field(8000, ge=100, le=100_000)
    turn_timeout: float = Field(90.0, gt=0, description="seconds one turn may take before it is skipped")
    session_timeout: float = Field(600.0, gt=0, description="seconds a whole session may take")
    sessions_per_client: int = Field(2, ge=1, description="sessions one client may run at once")
    max_sessions: int = Field(32, ge=1, description="sessions the gateway runs at once")
    transcript_chars: int = Field(4000, ge=500, description="characters of earlier turns a prompt carries")

    # Who orchestrates (discussion), judges, or chairs (council) by default: a model key of the
    # fleet, "external", or empty for the first participant's model.
    orchestrator: str = ""
    orchestrator_max_tokens: int = Field(200, ge=32, le=2048)

    # An external OpenAI-compatible endpoint, e.g. GitHub Models.
    orchestrator_url: str | None = Field(None, description="base URL ending before /chat/completions")
    orchestrator_model: str = "openai/gpt-4o-mini"
    orchestrator_token: SecretStr | None = Field(
        None, validation_alias=AliasChoices("GH_MODELS_TOKEN", "ARENA_MODES_ORCHESTRATOR_TOKEN"))
    orchestrator_timeout: float = Field(60.0, gt=0)

    @field_validator("orchestrator_url", "orchestrator_token", mode="before")
    @classmethod
    def _empty_is_none(cls, value):
        return None if value == "" else value

    @property
    def external_url(self) -> str | None:
        """The external endpoint, if one is configured: a token alone means GitHub Models."""
        if self.orchestrator_url:
            return self.orchestrator_url.rstrip("/")
        return GITHUB_MODELS_URL if self.orchestrator_token else None
