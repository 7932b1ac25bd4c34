"""Per-request sampling: each sequence gets its own llama.cpp sampler chain."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field

import llama_cpp as llama
import numpy as np
from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from services.exceptions import InvalidParameter
from services.llama_backend import LlamaModel


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
    grammar: str | None = None
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


MAX_SCHEMA_BYTES = 32 * 1024
MAX_SCHEMA_DEPTH = 16
MAX_SCHEMA_REPEAT = 256  # a bound on minLength, maxItems...: the grammar spells each repetition out
_REPEAT_KEYS = ("minLength", "maxLength", "minItems", "maxItems", "minProperties", "maxProperties")


def check_schema_bounds(schema: object, param: str) -> None:
    """Refuse a JSON schema too large, too deep or too repetitive to turn into a grammar quickly
    (one place for response_format and tool parameters alike)."""
    if len(json.dumps(schema)) > MAX_SCHEMA_BYTES:
        raise InvalidParameter(f"The JSON schema is larger than {MAX_SCHEMA_BYTES} bytes.", param=param)

    def walk(node: object, depth: int) -> None:
        if depth > MAX_SCHEMA_DEPTH:
            raise InvalidParameter(f"The JSON schema nests deeper than {MAX_SCHEMA_DEPTH} levels.", param=param)
        if isinstance(node, dict):
            for key in _REPEAT_KEYS:
                value = node.get(key)
                if isinstance(value, (int, float)) and not isinstance(value, bool) and value > MAX_SCHEMA_REPEAT:
                    raise InvalidParameter(f"{key} is {value}; at most {MAX_SCHEMA_REPEAT} in a JSON schema here.",
                                           param=param)
            for value in node.values():
                walk(value, depth + 1)
        elif isinstance(node, list):
            for value in node:
                walk(value, depth + 1)

    walk(schema, 0)


def grammar_for_response_format(response_format: dict | None) -> str | None:
    """GBNF grammar that constrains sampling to the requested JSON, or None for plain text."""
    if not response_format:
        return None
    kind = response_format.get("type")
    if kind in (None, "text"):
        return None
    if kind == "json_object":
        return JSON_GBNF
    if kind == "json_schema":
        spec = response_format.get("json_schema")
        if not isinstance(spec, dict):
            raise InvalidParameter("response_format.json_schema must be an object with a 'schema'",
                                   param="response_format")
        schema = spec.get("schema", {"type": "object"})
        check_schema_bounds(schema, "response_format")
        try:
            return json_schema_to_gbnf(json.dumps(schema))
        except Exception as exc:  # the converter raises plain exceptions for unsupported schemas
            raise InvalidParameter(f"response_format.json_schema is not supported: {exc}",
                                   param="response_format") from exc
    raise InvalidParameter(f"response_format type {kind!r} is not supported (text, json_object, json_schema)",
                           param="response_format")


class SamplerChain:
    """A llama.cpp sampler chain for one sequence, freed when the request ends."""

    def __init__(self, model: LlamaModel, params: SamplingParams, *, seed_offset: int = 0) -> None:
        self._ptr = llama.llama_sampler_chain_init(llama.llama_sampler_chain_default_params())
        add = lambda sampler: llama.llama_sampler_chain_add(self._ptr, sampler)  # noqa: E731
        if params.grammar:
            grammar = llama.llama_sampler_init_grammar(model.vocab, params.grammar.encode(), b"root")
            if not grammar:
                self.close()
                raise InvalidParameter("the response format's grammar could not be compiled",
                                       param="response_format")
            add(grammar)
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
            seed = params.seed + seed_offset if params.seed is not None else random.getrandbits(32)
            add(llama.llama_sampler_init_dist(seed & 0xFFFFFFFF))

    def sample(self, ctx_ptr, batch_index: int) -> int:
        """Pick the next token from the logits at `batch_index` (and accept it into the chain)."""
        return llama.llama_sampler_sample(self._ptr, ctx_ptr, batch_index)

    def close(self) -> None:
        if self._ptr:
            llama.llama_sampler_free(self._ptr)
            self._ptr = None
