"""Settings of the admin side, from the environment (``ARENA_ADMIN_<FIELD>``).

The admin key itself is the gateway's ``ARENA_GATEWAY_ADMIN_KEY`` (`GatewaySettings.admin_key`).
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class AdminSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ARENA_ADMIN_", extra="ignore")

    analytics_flush: float = Field(10.0, gt=0, le=3600,
                                   description="seconds between writes of the in-memory request analytics to the store")
    minute_retention_hours: float = Field(3.0, ge=1, le=48,
                                          description="hours minute points are kept before they are rolled up by hour")
    hour_retention_days: float = Field(30.0, ge=1, le=3650, description="days hour points are kept")
    audit_retention_days: float = Field(365.0, ge=1, description="days audit log entries are kept")
    max_download_bytes: int = Field(8 * 1024 ** 3, ge=1,
                                    description="largest model (all its files) the admin side downloads from the hub")
    max_active_downloads: int = Field(2, ge=1, le=16, description="hub downloads running at once")
    hub_list_timeout: float = Field(30.0, gt=0, le=600, description="seconds a hub repository listing is waited for")
    max_hub_listings: int = Field(4, ge=1, le=64,
                                  description="hub listings running at once (a hung one keeps its thread until the "
                                              "hub answers); past it a listing is refused with 503")
    overlay_refresh: float = Field(30.0, gt=0, le=3600,
                                   description="seconds between reloads of the runtime catalogue overlay from the store "
                                               "(changes made through another gateway on the same store)")
