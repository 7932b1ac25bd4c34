"""The in-process engine's model and context, loaded in a thread of their own.

`arena serve` starts the load as soon as it knows the model (its catalogue entry and settings).
This module imports only llama.cpp's bindings, so what the service imports afterwards (its request
handling, numpy, jinja2, FastAPI, uvicorn) runs beside the load, which is C code that releases
the GIL, rather than before it.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

from shared.catalogue import ModelSpec
from shared.model_files import resolve_model_file
from services.llama_backend import ContextShape, LlamaContext, LlamaModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    model: LlamaModel
    context: LlamaContext  # each of the spec's `parallel` sequences with `model.context_for(n_ctx)` cells


class ModelLoad:
    """Find the model's file (fetching or assembling it once), load it and create its context,
    in a thread (`start`) or on the caller's (`result` without `start`). `spec.threads` must be
    set (`shared.core_share.with_automatic_threads`)."""

    def __init__(self, spec: ModelSpec, *, model_cache: Path, model_path: Path | None = None) -> None:
        if spec.threads is None:
            raise ValueError("ModelLoad needs the spec's threads resolved")
        self.spec = spec
        self.model_cache = model_cache
        self.model_path = model_path
        self._thread: threading.Thread | None = None
        self._loaded: LoadedModel | None = None
        self._error: BaseException | None = None

    def start(self) -> ModelLoad:
        """Start the load in a thread, once."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="model-load", daemon=True)
            self._thread.start()
        return self

    def result(self) -> LoadedModel:
        """The loaded model and context (waiting for the thread, or loading here if it was never
        started); raises what the load raised."""
        if self._thread is None:
            self._run()
        else:
            self._thread.join()
        if self._loaded is None:
            raise self._error or RuntimeError(f"the load of {self.spec.key} ended without a model")
        return self._loaded

    def _run(self) -> None:
        try:
            self._loaded = self._load()
        except Exception as exc:  # handed to whoever waits in `result`
            self._error = exc

    def _load(self) -> LoadedModel:
        spec = self.spec
        path = self.model_path or resolve_model_file(spec, self.model_cache)
        log.info("loading %s from %s", spec.key, path)
        model = LlamaModel(path)
        shape = ContextShape(n_ctx_per_sequence=model.context_for(spec.n_ctx), n_sequences=spec.parallel,
                             n_batch=spec.n_batch, threads=spec.threads)
        return LoadedModel(model, LlamaContext(model, shape))
