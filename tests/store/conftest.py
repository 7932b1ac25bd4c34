"""Fixtures of the store tests: fake upstreams for the gateways they start (the `gateways`
fixture is the root conftest's)."""

from tests.gateway.conftest import fake_upstreams  # noqa: F401 (fixtures)
