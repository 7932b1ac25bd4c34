"""Settings of runtime instance control (``ARENA_FLEETCTL_<FIELD>``).

Which fleet the gateway starts and stops instances in: the local fleet when `arena up` handed it
its control channel (``ARENA_FLEET_CONTROL_URL`` and ``_TOKEN``, set for the gateway child only),
else GitHub Actions when a repository and a token are set, else none (the page says how).
"""

from __future__ import annotations

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from scripts.github_api import API_URL
from shared.fleet_control import CONTROL_TOKEN_ENV, CONTROL_URL_ENV

NOT_CONFIGURED = ("Starting and stopping instances is off: run the gateway under `arena up` (the local fleet "
                  "hands it its control channel), or, for the fleet on GitHub Actions, set "
                  "ARENA_FLEETCTL_GITHUB_REPOSITORY=owner/name and ARENA_FLEETCTL_GITHUB_TOKEN (a token with "
                  "'Actions: Read and write' on that repository).")


class InstanceControlSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ARENA_FLEETCTL_", extra="ignore", populate_by_name=True)

    control_url: str | None = Field(None, validation_alias=AliasChoices(CONTROL_URL_ENV, "ARENA_FLEETCTL_CONTROL_URL"))
    control_token: str | None = Field(None, validation_alias=AliasChoices(CONTROL_TOKEN_ENV,
                                                                          "ARENA_FLEETCTL_CONTROL_TOKEN"))
    github_repository: str | None = Field(None, description="owner/name whose fleet.yml runs the model instances")
    github_token: str | None = Field(None, description="a token allowed to run and cancel workflows there")
    github_api_url: str = API_URL
    github_ref: str | None = Field(None, description="branch the runs start from; default: the repository's")
    fleet_workflow: str = "fleet.yml"
    ready_timeout: float = Field(600.0, gt=0, description="seconds a new instance may take to become ready")
    drain_timeout: float = Field(180.0, gt=0, description="seconds a draining instance may take to be gone")
    poll_interval: float = Field(1.0, gt=0, description="seconds between looks at the local fleet's processes")

    @field_validator("control_url", "control_token", "github_repository", "github_token", "github_ref", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        return None if value == "" else value

    @property
    def backend_kind(self) -> str | None:
        if self.control_url and self.control_token:
            return "local"
        if self.github_repository and self.github_token:
            return "actions"
        return None
