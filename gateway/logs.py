"""Structured logs: one line per request on `gateway.access`, JSON or pretty by setting
(`shared.logs`)."""

from __future__ import annotations

import logging
from typing import Any

from shared.logs import JsonFormatter, PrettyFormatter, configure_logging

__all__ = ["ACCESS_LOGGER", "JsonFormatter", "PrettyFormatter", "configure_logging", "log_request"]

ACCESS_LOGGER = "gateway.access"


def log_request(**fields: Any) -> None:
    logging.getLogger(ACCESS_LOGGER).info("request", extra=fields)
