"""`response_format` to a llama.cpp grammar, within bounds.

llama-cpp-python's JSON-schema converter expands repetition counts into grammar text: an array
with ``"maxItems": 300000000`` becomes gigabytes of rules, which stalls the service and then
kills it. So a schema is checked before it is converted (`check_response_format`, cheap, on
the request path): its size, its nesting depth, every repetition count (``minItems``,
``maxLength``, the ``{m,n}`` of a ``pattern``) and its references (local only: the converter
would fetch a remote ``$ref`` over HTTP). The conversion and the grammar's compilation then
run in a worker thread (`GenerationService.open_stream`), never on the event loop or in the
scheduler's step, and the grammar they produce is bounded too.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from llama_cpp.llama_grammar import JSON_GBNF, json_schema_to_gbnf

from services.exceptions import InvalidParameter, SchemaTooLarge

_COUNT_KEYS = ("minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties",
               "minContains", "maxContains")
_QUANTIFIER = re.compile(r"\{\s*(\d*)\s*(?:,\s*(\d*)\s*)?\}")


@dataclass(frozen=True)
class SchemaLimits:
    max_schema_bytes: int = 16 * 1024
    max_depth: int = 16
    max_count: int = 256          # any one minItems/maxItems/minLength/... and any {m,n} in a pattern
    max_pattern_repetition: int = 1024   # the product of a pattern's {m,n} bounds (they may nest)
    max_grammar_bytes: int = 128 * 1024


DEFAULT_LIMITS = SchemaLimits()


def _invalid(message: str, param: str = "response_format") -> InvalidParameter:
    return InvalidParameter(message, param=param)


def _too_large(message: str, param: str = "response_format") -> SchemaTooLarge:
    what = "response_format.json_schema" if param == "response_format" else param
    return SchemaTooLarge(f"{what} is too large: {message}", param=param)


def check_response_format(response_format: Any, limits: SchemaLimits = DEFAULT_LIMITS) -> dict | None:
    """Validate `response_format`; return the JSON schema to convert (None: no schema)."""
    if not response_format:
        return None
    if not isinstance(response_format, dict):
        raise _invalid("response_format must be an object such as {\"type\": \"json_object\"}.")
    kind = response_format.get("type")
    if kind in (None, "text", "json_object"):
        return None
    if kind != "json_schema":
        raise _invalid(f"response_format type {kind!r} is not supported (text, json_object, json_schema)")
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict):
        raise _invalid("response_format.json_schema must be an object with a 'schema'")
    schema = spec.get("schema", {"type": "object"})
    if not isinstance(schema, (dict, bool)):
        raise _invalid("response_format.json_schema.schema must be a JSON schema object")
    check_json_schema(schema, param="response_format", limits=limits)
    return schema if isinstance(schema, dict) else {}


def check_json_schema(schema: Any, *, param: str, limits: SchemaLimits = DEFAULT_LIMITS) -> None:
    """The bounds of any JSON schema that becomes a grammar (a response format's, a tool's
    parameters): size, nesting depth, repetition counts, local references only."""
    try:
        size = len(json.dumps(schema))
    except (ValueError, RecursionError):
        raise _too_large("it cannot be encoded", param) from None
    if size > limits.max_schema_bytes:
        raise _too_large(f"{size} bytes, above the limit of {limits.max_schema_bytes}", param)
    _walk(schema, 0, limits, param)


def _walk(node: Any, depth: int, limits: SchemaLimits, param: str) -> None:
    if depth > limits.max_depth:
        raise _too_large(f"nested deeper than {limits.max_depth} levels", param)
    if isinstance(node, list):
        for item in node:
            _walk(item, depth + 1, limits, param)
        return
    if not isinstance(node, dict):
        return
    for key in _COUNT_KEYS:
        if key in node:
            value = node[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise _invalid(f"{param}: {key} must be a non-negative integer", param)
            if value > limits.max_count:
                raise _too_large(f"{key} is {value}, above the limit of {limits.max_count}", param)
    ref = node.get("$ref")
    if ref is not None and (not isinstance(ref, str) or not ref.startswith("#")):
        raise _invalid(f"{param}: only local references ('#/...') are supported", param)
    pattern = node.get("pattern")
    if pattern is not None:
        if not isinstance(pattern, str):
            raise _invalid(f"{param}: pattern must be a string", param)
        _check_pattern(pattern, limits, param)
    for value in node.values():
        if isinstance(value, (dict, list)):
            _walk(value, depth + 1, limits, param)


def _check_pattern(pattern: str, limits: SchemaLimits, param: str) -> None:
    product = 1
    for low, high in _QUANTIFIER.findall(pattern):
        bound = max(int(low or 0), int(high or 0))
        if bound > limits.max_count:
            raise _too_large(f"a pattern repeats {bound} times, above the limit of {limits.max_count}", param)
        product *= max(bound, 1)
        if product > limits.max_pattern_repetition:
            raise _too_large(f"a pattern's repetitions multiply to more than {limits.max_pattern_repetition}", param)


def grammar_source(response_format: Any, limits: SchemaLimits = DEFAULT_LIMITS) -> str | None:
    """The GBNF text for `response_format` (slow for a schema: call it off the event loop)."""
    if not response_format or response_format.get("type") in (None, "text"):
        return None
    if response_format.get("type") == "json_object":
        return JSON_GBNF
    schema = check_response_format(response_format, limits)
    try:
        gbnf = json_schema_to_gbnf(json.dumps(schema))
    except (RecursionError, MemoryError):
        raise _too_large("its grammar would be too large") from None
    except Exception as exc:  # the converter raises plain exceptions for unsupported schemas
        raise _invalid(f"response_format.json_schema is not supported: {exc}") from exc
    if len(gbnf) > limits.max_grammar_bytes:
        raise _too_large(f"its grammar has {len(gbnf)} bytes, above the limit of {limits.max_grammar_bytes}")
    return gbnf
