"""The shared secret between the gateway and its model instances.

An instance started with ``ARENA_INSTANCE_SECRET`` answers its OpenAI endpoints only to requests
that carry the same value in the `INSTANCE_SECRET_HEADER`, which only the gateway sends; so a
public tunnel URL is not a free back door. Health endpoints stay open for probes.
"""

from __future__ import annotations

import hmac

INSTANCE_SECRET_ENV = "ARENA_INSTANCE_SECRET"
INSTANCE_SECRET_HEADER = "X-Arena-Instance-Secret"


def secret_matches(expected: str | None, presented: str | None) -> bool:
    """True when no secret is required, or the presented one is right (constant-time)."""
    if not expected:
        return True
    return presented is not None and hmac.compare_digest(expected.encode(), presented.encode())
