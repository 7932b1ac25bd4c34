"""The instance-control tests use the gateway tests' fixtures (in-process gateways, fake upstreams)."""

from tests.gateway.conftest import fake_upstreams, gateway_apps  # noqa: F401 (fixtures)
