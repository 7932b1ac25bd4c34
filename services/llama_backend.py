"""A thin, typed wrapper over llama-cpp-python's low-level API (the ctypes bindings of llama.h).

Only the scheduler thread touches a `LlamaContext`; a `LlamaModel` (vocabulary, tokenizer,
metadata) is read-only after loading and safe to use from the request handlers.
"""

from __future__ import annotations

import ctypes
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from services.llama_bindings import llama

if TYPE_CHECKING:
    import numpy as np

log = logging.getLogger(__name__)

_backend_lock = threading.Lock()
_backend_ready = False


def _init_backend() -> None:
    global _backend_ready
    with _backend_lock:
        if not _backend_ready:
            llama.llama_backend_init()
            # llama.cpp's own stderr logger (NULL callback) instead of llama-cpp-python's Python
            # one: the same lines, written without taking the GIL for each of the ~2,000 a load
            # logs, so the load does not wait on `arena serve`'s imports running alongside it.
            llama.llama_log_set(ctypes.cast(None, llama.llama_log_callback), ctypes.c_void_p(0))
            _backend_ready = True


class LlamaError(RuntimeError):
    pass


class LlamaModel:
    """A loaded GGUF model: weights, vocabulary, tokenizer and metadata."""

    def __init__(self, path: Path, *, vocab_only: bool = False) -> None:
        """`vocab_only`: the tokenizer and metadata without the weights (for an engine that
        decodes elsewhere)."""
        _init_backend()
        params = llama.llama_model_default_params()
        params.n_gpu_layers = 0
        params.vocab_only = vocab_only
        self.path = path
        self._ptr = llama.llama_model_load_from_file(str(path).encode(), params)
        if not self._ptr:
            raise LlamaError(f"llama.cpp could not load the model {path}")
        self.vocab = llama.llama_model_get_vocab(self._ptr)
        self.n_vocab = llama.llama_vocab_n_tokens(self.vocab)
        self.n_ctx_train = llama.llama_model_n_ctx_train(self._ptr)
        self.bos = llama.llama_vocab_bos(self.vocab)
        self.eos = llama.llama_vocab_eos(self.vocab)
        self.add_bos = bool(llama.llama_vocab_get_add_bos(self.vocab))
        self._piece_cache: dict[int, bytes] = {}

    @property
    def ptr(self):
        return self._ptr

    @property
    def trained_context(self) -> int:
        """The context the model was trained with (read from its metadata when only the
        vocabulary is loaded, which has no hyperparameters); 0 if it does not say."""
        if self.n_ctx_train > 0:
            return self.n_ctx_train
        value = self.metadata(f"{self.metadata('general.architecture')}.context_length")
        try:
            return int(value) if value else 0
        except ValueError:
            return 0

    def context_for(self, configured: int) -> int:
        """A sequence's context: the configured one, at most the one the model was trained with."""
        trained = self.trained_context
        return min(configured, trained) if trained > 0 else configured

    def metadata(self, key: str) -> str | None:
        size = 1 << 16
        buf = ctypes.create_string_buffer(size)
        n = llama.llama_model_meta_val_str(self._ptr, key.encode(), buf, size)
        if n < 0:
            return None
        if n >= size:  # too long for the first buffer: ask again with room for all of it
            buf = ctypes.create_string_buffer(n + 1)
            llama.llama_model_meta_val_str(self._ptr, key.encode(), buf, n + 1)
        return buf.value.decode("utf-8", errors="replace")

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        capacity = len(data) + 8
        tokens = (llama.llama_token * capacity)()
        n = llama.llama_tokenize(self.vocab, data, len(data), tokens, capacity, add_special, parse_special)
        if n < 0:
            capacity = -n
            tokens = (llama.llama_token * capacity)()
            n = llama.llama_tokenize(self.vocab, data, len(data), tokens, capacity, add_special, parse_special)
            if n < 0:
                raise LlamaError("tokenization failed")
        return list(tokens[:n])

    def token_bytes(self, token: int) -> bytes:
        """The bytes a generated token stands for (control tokens render as nothing)."""
        cached = self._piece_cache.get(token)
        if cached is not None:
            return cached
        buf = ctypes.create_string_buffer(64)
        n = llama.llama_token_to_piece(self.vocab, token, buf, 64, 0, False)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = llama.llama_token_to_piece(self.vocab, token, buf, -n, 0, False)
        piece = buf.raw[: max(n, 0)]
        self._piece_cache[token] = piece
        return piece

    def is_end_of_generation(self, token: int) -> bool:
        return bool(llama.llama_vocab_is_eog(self.vocab, token))


@dataclass(frozen=True)
class ContextShape:
    n_ctx_per_sequence: int
    n_sequences: int
    n_batch: int
    threads: int


class LlamaContext:
    """A llama context holding one KV-cache sequence per slot (not unified: each sequence has its
    own `n_ctx_per_sequence` cells, so one long conversation cannot starve the others)."""

    def __init__(self, model: LlamaModel, shape: ContextShape) -> None:
        params = llama.llama_context_default_params()
        params.n_ctx = shape.n_ctx_per_sequence * shape.n_sequences
        params.n_batch = shape.n_batch
        params.n_ubatch = shape.n_batch
        params.n_seq_max = shape.n_sequences
        params.n_threads = shape.threads
        params.n_threads_batch = shape.threads
        params.kv_unified = False
        params.no_perf = True
        self.model = model
        self.shape = shape
        self._ptr = llama.llama_init_from_model(model.ptr, params)
        if not self._ptr:
            raise LlamaError("llama.cpp could not create a context (out of memory?)")
        self._memory = llama.llama_get_memory(self._ptr)
        self.batch = llama.llama_batch_init(shape.n_batch, 0, 1)

    @property
    def ptr(self):
        return self._ptr

    def set_threads(self, threads: int) -> None:
        """Threads of the next decodes (llama.cpp reads it at every decode; with OpenMP the
        pool's extra threads stay parked while fewer are used)."""
        llama.llama_set_n_threads(self._ptr, threads, threads)

    def decode(self) -> None:
        rc = llama.llama_decode(self._ptr, self.batch)
        if rc != 0:
            raise LlamaError(f"llama_decode failed with code {rc}")

    def clear_batch(self) -> None:
        self.batch.n_tokens = 0

    def add_to_batch(self, token: int, pos: int, seq_id: int, want_logits: bool) -> int:
        """Append a token to the batch; returns its index (where its logits will be)."""
        batch = self.batch
        i = batch.n_tokens
        batch.token[i] = token
        batch.pos[i] = pos
        batch.n_seq_id[i] = 1
        batch.seq_id[i][0] = seq_id
        batch.logits[i] = want_logits
        batch.n_tokens = i + 1
        return i

    def logits(self, index: int) -> np.ndarray:
        """A copy of the logits the last decode produced at batch position `index`."""
        import numpy as np  # not at the top: this module is on the way to the model's load

        ptr = llama.llama_get_logits_ith(self._ptr, index)
        if not ptr:
            raise LlamaError(f"no logits at batch index {index}")
        return np.ctypeslib.as_array(ptr, shape=(self.model.n_vocab,)).copy()

    def copy_sequence(self, src: int, dst: int) -> None:
        """Make sequence `dst` hold exactly what `src` holds (the copy of the KV data happens at
        the next decode, before that decode's tokens)."""
        llama.llama_memory_seq_rm(self._memory, dst, -1, -1)
        llama.llama_memory_seq_cp(self._memory, src, dst, -1, -1)

    def remove_from(self, seq_id: int, start: int) -> bool:
        """Drop positions >= start of a sequence; False if the cache cannot cut there (then the
        caller must clear the whole sequence)."""
        return bool(llama.llama_memory_seq_rm(self._memory, seq_id, start, -1))

    def clear_sequence(self, seq_id: int) -> None:
        llama.llama_memory_seq_rm(self._memory, seq_id, -1, -1)

    def save_sequence(self, seq_id: int) -> bytes:
        """A copy of one sequence's KV state (for `restore_sequence`, into any sequence)."""
        size = llama.llama_state_seq_get_size(self._ptr, seq_id)
        buf = (ctypes.c_uint8 * size)()
        written = llama.llama_state_seq_get_data(self._ptr, buf, size, seq_id)
        if written == 0:
            raise LlamaError(f"could not save the state of sequence {seq_id}")
        return bytes(memoryview(buf)[:written])

    def restore_sequence(self, seq_id: int, state: bytes) -> bool:
        """Replace a sequence's KV with a saved state; False if llama.cpp refused it (then the
        sequence is empty)."""
        self.clear_sequence(seq_id)
        buf = (ctypes.c_uint8 * len(state)).from_buffer_copy(state)
        if llama.llama_state_seq_set_data(self._ptr, buf, len(state), seq_id) == 0:
            self.clear_sequence(seq_id)
            return False
        return True

