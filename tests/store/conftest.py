"""The gateway tests' process fixtures (real gateways, fake upstreams), for the store's tests."""

from tests.gateway.conftest import fake_upstreams  # noqa: F401 (fixtures)
