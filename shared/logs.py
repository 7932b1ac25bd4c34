"""Log lines of both apps: JSON (one object a line) or pretty, by setting.

With tracing on (`shared.telemetry`), each line also carries the `trace_id` and `span_id` of the
request it belongs to.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "color_message"}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        line.update({k: v for k, v in record.__dict__.items() if k not in _STANDARD and not k.startswith("_")})
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str)


class PrettyFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        extra = " ".join(f"{k}={v}" for k, v in record.__dict__.items()
                         if k not in _STANDARD and not k.startswith("_") and v is not None)
        text = f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()}"
        if extra:
            text += f"  {extra}"
        if record.exc_info:
            text += "\n" + self.formatException(record.exc_info)
        return text


def configure_logging(fmt: str = "pretty", level: str = "info", *, record_filter: logging.Filter | None = None) -> None:
    """Every logger through one handler on stderr; `record_filter` (such as the trace ids of
    `Telemetry.log_filter()`) sees each record first."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else PrettyFormatter())
    if record_filter is not None:
        handler.addFilter(record_filter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers[:] = []
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").disabled = True  # each app writes its own request line
    logging.getLogger("httpx").setLevel(logging.WARNING)
