"""The service object of `arena serve`'s model, for the engine the settings choose (without
the HTTP app, so that its load can start before FastAPI is imported)."""

from __future__ import annotations

from shared.catalogue import Catalogue
from services.generation import GenerationService
from services.settings import ServiceSettings


def build_service(catalogue: Catalogue, settings: ServiceSettings) -> GenerationService:
    """A `GenerationService` (a `LlamaServerService` for the llama-server engine), not loaded."""
    spec = settings.resolve(catalogue)
    if spec.engine == "llama-server":
        # Imported only for this engine: it brings httpx (and its command line's rich) and
        # prometheus_client's parser, which the in-process engine's start does not need.
        from services.llama_server import LlamaServerService

        return LlamaServerService(spec, instance_id=settings.instance_id, binary=settings.llama_server_binary,
                                  model_cache=catalogue.fleet.model_cache_path(),
                                  request_timeout=catalogue.fleet.request_timeout)
    return GenerationService(spec, instance_id=settings.instance_id, model_cache=catalogue.fleet.model_cache_path(),
                             core_board=settings.core_board, core_slot=settings.core_slot,
                             core_wait_limit=settings.core_wait_limit)
