"""Per-request sampling: each sequence gets its own llama.cpp sampler chain."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

from services.exceptions import InvalidParameter
from services.llama_backend import LlamaModel
from services.llama_bindings import llama


@dataclass(frozen=True)
class SamplingParams:
    """One request's sampling; the defaults are those of a request that does not say."""

    temperature: float = 0.8
    top_p: float = 1.0
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    penalty_last_n: int = 64
    seed: int | None = None
    # Compiled off the scheduler's thread: one per choice (each sequence needs its own state).
    grammars: tuple[CompiledGrammar, ...] = ()
    stop: tuple[str, ...] = field(default_factory=tuple)
    max_tokens: int = 256
    top_logprobs: int | None = None  # None: no log-probabilities; else the sampled token's and this many others


@dataclass(frozen=True)
class TokenLogprob:
    """The log-probability of a sampled token under the model (log-softmax of the raw logits of
    its step, before any sampler), with the most likely alternatives of that step."""

    token: bytes
    logprob: float
    top: tuple[tuple[bytes, float], ...] = ()


def token_logprobs(model: LlamaModel, logits: np.ndarray, token: int, top: int) -> TokenLogprob:
    shifted = logits - logits.max()
    logprobs = shifted - np.log(np.exp(shifted).sum())
    alternatives: tuple[tuple[bytes, float], ...] = ()
    if top > 0:
        best = np.argpartition(-logprobs, top)[:top]
        best = best[np.argsort(-logprobs[best], kind="stable")]
        alternatives = tuple((model.token_bytes(int(i)), float(logprobs[i])) for i in best)
    return TokenLogprob(model.token_bytes(token), float(logprobs[token]), alternatives)


class CompiledGrammar:
    """A llama.cpp grammar sampler compiled ahead of the job (in a worker thread: compiling a
    grammar can take a while, and must not hold up the scheduler's step). The sampler chain of
    the job takes it over; one never taken is freed with this object."""

    def __init__(self, model: LlamaModel, gbnf: str, *, param: str = "response_format") -> None:
        self._ptr = llama.llama_sampler_init_grammar(model.vocab, gbnf.encode(), b"root")
        if not self._ptr:
            raise InvalidParameter(f"the grammar of {param} could not be compiled", param=param)

    def take(self):
        ptr, self._ptr = self._ptr, None
        if not ptr:
            raise RuntimeError("this grammar was already used by a sampler chain")
        return ptr

    def __del__(self) -> None:
        if getattr(self, "_ptr", None):
            llama.llama_sampler_free(self._ptr)
            self._ptr = None


class SamplerChain:
    """A llama.cpp sampler chain for one sequence, freed when the request ends."""

    def __init__(self, model: LlamaModel, params: SamplingParams, *, choice: int = 0) -> None:
        """`choice`: which of the request's choices this chain samples (its grammar, its seed)."""
        self._ptr = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
        add = lambda sampler: llama.llama_sampler_chain_add(self._ptr, sampler)  # noqa: E731
        if params.grammars:
            add(params.grammars[choice].take())
        if params.repeat_penalty != 1.0 or params.presence_penalty or params.frequency_penalty:
            add(llama.llama_sampler_init_penalties(model.n_vocab, params.penalty_last_n, params.repeat_penalty,
                                                   params.frequency_penalty, params.presence_penalty))
        if params.temperature <= 0:
            add(llama.llama_sampler_init_greedy())
        else:
            if params.top_k > 0:
                add(llama.llama_sampler_init_top_k(params.top_k))
            if params.top_p < 1.0:
                add(llama.llama_sampler_init_top_p(params.top_p, 1))
            if params.min_p > 0:
                add(llama.llama_sampler_init_min_p(params.min_p, 1))
            add(llama.llama_sampler_init_temp(params.temperature))
            # Choice i of a request with a seed samples with seed + i: each choice differs, and
            # the whole answer is repeatable.
            seed = params.seed + choice if params.seed is not None else random.getrandbits(32)
            add(llama.llama_sampler_init_dist(seed & 0xFFFFFFFF))

    def sample(self, ctx_ptr, batch_index: int) -> int:
        """Pick the next token from the logits at `batch_index` (and accept it into the chain)."""
        return llama.llama_sampler_sample(self._ptr, ctx_ptr, batch_index)

    def close(self) -> None:
        if self._ptr:
            llama.llama_sampler_free(self._ptr)
            self._ptr = None
