"""`arena serve`'s model service, its load under way as early as it can be.

This module imports only the catalogue, the settings and (through `services.model_load`) llama.cpp's
bindings: the service's own modules (its request handling, numpy, jinja2) and the HTTP stack are
imported after the in-process engine's load has started, and run beside it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from shared.catalogue import Catalogue, ModelSpec
from shared.core_share import with_automatic_threads
from services.model_load import ModelLoad
from services.settings import ServiceSettings

if TYPE_CHECKING:
    from services.generation import GenerationService


def build_service(catalogue: Catalogue, settings: ServiceSettings) -> GenerationService:
    """A `GenerationService` (a `LlamaServerService` for the llama-server engine), not started."""
    return _service(catalogue, settings, settings.resolve(catalogue))


def start_service(catalogue: Catalogue, settings: ServiceSettings, spec: ModelSpec) -> GenerationService:
    """The service of `spec` (`settings.resolve(catalogue)`), loading: for the in-process engine
    the model's load starts before the service's modules are imported (for llama-server, the
    child starts once they are)."""
    model_load = None
    if spec.engine != "llama-server":
        model_load = ModelLoad(with_automatic_threads(spec), model_cache=catalogue.fleet.model_cache_path()).start()
    service = _service(catalogue, settings, spec, model_load)
    service.start_loading()
    return service


def _service(catalogue: Catalogue, settings: ServiceSettings, spec: ModelSpec,
             model_load: ModelLoad | None = None) -> GenerationService:
    if spec.engine == "llama-server":
        # Imported only for this engine: it brings httpx (and its command line's rich) and
        # prometheus_client's parser, which the in-process engine's start does not need.
        from services.llama_server import LlamaServerService

        return LlamaServerService(spec, instance_id=settings.instance_id, binary=settings.llama_server_binary,
                                  model_cache=catalogue.fleet.model_cache_path(),
                                  request_timeout=catalogue.fleet.request_timeout)
    from services.generation import GenerationService

    return GenerationService(spec, instance_id=settings.instance_id, model_cache=catalogue.fleet.model_cache_path(),
                             core_board=settings.core_board, core_slot=settings.core_slot,
                             core_wait_limit=settings.core_wait_limit, model_load=model_load)
