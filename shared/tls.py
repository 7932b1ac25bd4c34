"""HTTPS served by the apps themselves: a certificate and key from settings, handed to uvicorn."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def uvicorn_tls(cert: Path | None, key: Path | None) -> dict[str, Any]:
    """uvicorn's TLS options for this certificate and key (both, or neither: plain HTTP)."""
    if cert is None and key is None:
        return {}
    if cert is None or key is None:
        raise ValueError("TLS needs both a certificate (tls_cert) and its key (tls_key)")
    for path in (cert, key):
        if not Path(path).is_file():
            raise ValueError(f"TLS file {path} does not exist")
    return {"ssl_certfile": str(cert), "ssl_keyfile": str(key)}
