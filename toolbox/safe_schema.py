"""JSON Schema checking that the schema cannot turn against the checker: bounded size, bounded time.

Schemas come from tenants (a run's ``json_schema``) and from tool servers, and what they check comes from
the model, so both sides are untrusted. Two things are bounded here:

- **What is accepted** (``check_bounds``): a schema nested deeper than ``MAX_DEPTH`` levels or longer than
  ``MAX_BYTES`` as JSON is refused, and so is one with a pattern that cannot be compiled, or one that
  combines ``unevaluatedProperties`` with ``patternProperties`` (jsonschema matches those patterns with
  Python's backtracking ``re``, out of our reach). A stored run must read back: pydantic's JSON reader
  stops at 200 levels, well past ``MAX_DEPTH``.
- **How long patterns may take** (``problems``): ``pattern`` and ``patternProperties`` (and the
  ``additionalProperties`` that depends on them) are matched with the ``regex`` engine under one time
  budget per check, ``PATTERN_BUDGET_S`` for all patterns together, and with the GIL released while it
  matches. A pattern like ``^(a|aa)+$`` on a long value backtracks exponentially: past the budget the
  check stops with ``UncheckableError``, which callers turn into an error the model reads.
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from functools import lru_cache
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator
from jsonschema.validators import extend

from toolbox.errors import SchemaError


def _engine() -> Any:
    # Every service lock has ``regex``; an environment without it (the loop benchmark's) refuses patterns.
    try:
        return importlib.import_module("regex")
    except ImportError:  # pragma: no cover
        return None


_REGEX = _engine()

MAX_DEPTH = 64  # levels of JSON nesting in one schema
MAX_BYTES = 64 * 1024  # one schema, as compact JSON
PATTERN_BUDGET_S = 0.1  # all pattern matching of one check together

_DEADLINE: ContextVar[float] = ContextVar("pattern_deadline", default=0.0)


class UncheckableError(SchemaError):
    """A value could not be checked against its schema safely: a pattern ran past the time budget, or
    cannot be compiled. The message says which pattern, for the model (or the client) to read."""


def json_depth(value: Any, *, stop_at: int = MAX_DEPTH + 1) -> int:
    """Levels of nesting of a JSON value (a scalar is 0, ``{}`` is 1), counted without recursion and up to
    ``stop_at`` at most (a value nested a million levels deep is measured in ``stop_at`` steps)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, list | tuple):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest >= stop_at:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def check_bounds(schema: Any, what: str, *, max_depth: int = MAX_DEPTH, max_bytes: int = MAX_BYTES) -> None:
    """Refuse (``SchemaError`` naming ``what`` and the limit) a schema we would not store or check safely."""
    if json_depth(schema, stop_at=max_depth + 1) > max_depth:
        raise SchemaError(f"{what} is nested more than {max_depth} levels deep; the limit is {max_depth}")
    try:
        size = len(json.dumps(schema, separators=(",", ":"), allow_nan=False).encode())
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"{what} is not plain JSON ({exc})") from None
    if size > max_bytes:
        raise SchemaError(f"{what} is {size} bytes as JSON; the limit is {max_bytes} bytes")
    if _mixes_patterns(schema):
        raise SchemaError(f"{what} {_MIXED}")
    for pattern in _patterns(schema):
        try:
            _compiled(pattern)
        except UncheckableError as exc:
            raise SchemaError(f"{what}: {exc}") from None


def problems(schema: Mapping[str, Any], instance: Any) -> list[ValidationError]:
    """Every way ``instance`` fails ``schema`` (Draft 2020-12); ``UncheckableError`` when its patterns
    cannot be matched within the budget."""
    validator = _validator(json.dumps(schema, sort_keys=True))
    token = _DEADLINE.set(time.monotonic() + PATTERN_BUDGET_S)
    try:
        return list(validator.iter_errors(instance))
    finally:
        _DEADLINE.reset(token)


_MIXED = (
    "combines unevaluatedProperties with patternProperties, which cannot be checked within a time "
    "bound; use additionalProperties instead"
)


def has_patterns(schema: Any) -> bool:
    """Whether checking a value against ``schema`` may match a pattern (and so take up to the budget)."""
    return next(_patterns(schema), None) is not None


def _mixes_patterns(schema: Any) -> bool:
    # jsonschema's unevaluatedProperties matches patternProperties with Python's backtracking `re`.
    names = _keys(schema)
    return "unevaluatedProperties" in names and "patternProperties" in names


def _keys(value: Any) -> set[str]:
    found: set[str] = set()
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            found.update(str(key) for key in item)
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)
    return found


def _patterns(value: Any) -> Iterator[str]:
    """Every ``pattern`` value and ``patternProperties`` key in a schema (over-approximated: a property
    named ``pattern`` counts too, which only means one more compile)."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            if isinstance(item.get("pattern"), str):
                yield item["pattern"]
            if isinstance(item.get("patternProperties"), Mapping):
                yield from (str(key) for key in item["patternProperties"])
            stack.extend(item.values())
        elif isinstance(item, list | tuple):
            stack.extend(item)


@lru_cache(maxsize=1024)
def _compiled(pattern: str) -> Any:
    if _REGEX is None:
        raise UncheckableError(f"the pattern {pattern!r} cannot be checked here (no regex engine)")
    try:
        return _REGEX.compile(pattern)
    except (_REGEX.error, RecursionError, OverflowError) as exc:
        raise UncheckableError(f"the pattern {pattern!r} is not a valid regular expression: {exc}") from None


def _search(pattern: str, text: str) -> bool:
    compiled = _compiled(pattern)
    left = _DEADLINE.get() - time.monotonic()
    try:
        if left <= 0:
            raise TimeoutError
        return compiled.search(text, timeout=left, concurrent=True) is not None
    except TimeoutError:
        raise UncheckableError(
            f"the value {_clip(text)!r} could not be checked against the pattern {pattern!r} within "
            f"{PATTERN_BUDGET_S:g} s; use a shorter or simpler value"
        ) from None


def _clip(text: str) -> str:
    return text if len(text) <= 60 else text[:57] + "..."


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not _search(pattern, instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: Mapping[str, Any], instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        for key, value in instance.items():
            if _search(pattern, key):
                yield from validator.descend(value, subschema, path=key, schema_path=pattern)


_BASE = Draft202012Validator.VALIDATORS


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    # jsonschema's own keyword matches patternProperties with `re`: match them here, then hand it the
    # properties no pattern took, with the patterns gone.
    patterns = schema.get("patternProperties") if isinstance(schema, Mapping) else None
    if patterns and validator.is_type(instance, "object"):
        instance = {k: v for k, v in instance.items() if not any(_search(p, k) for p in patterns)}
        schema = {k: v for k, v in schema.items() if k != "patternProperties"}
    yield from _BASE["additionalProperties"](validator, additional, instance, schema)


_SafeValidator = extend(  # type: ignore[no-untyped-call]  # jsonschema leaves it unannotated
    Draft202012Validator,
    validators={
        "pattern": _pattern,
        "patternProperties": _pattern_properties,
        "additionalProperties": _additional_properties,
    },
)


@lru_cache(maxsize=512)
def _validator(schema_json: str) -> Validator:
    schema = json.loads(schema_json)
    if _mixes_patterns(schema):  # a schema that was never bounded (check_bounds refuses it)
        raise UncheckableError(f"the schema {_MIXED}")
    validator: Validator = _SafeValidator(schema)
    return validator
