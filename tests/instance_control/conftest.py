"""The instance-control tests use the gateway tests' fixtures (in-process gateways)."""

from tests.gateway.conftest import gateway_apps  # noqa: F401 (fixture)
