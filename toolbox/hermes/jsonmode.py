"""JSON mode: the schema system prompt and checking the model's answer."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from toolbox.hermes.tokens import SCHEMA_CLOSE, SCHEMA_OPEN, neutralize_json
from toolbox.protocol import dumps
from toolbox.safe_schema import UncheckableError, problems

_FENCE = re.compile(r"^```(?:json|JSON)?\s*\n?(?P<body>.*?)\n?\s*```$", re.DOTALL)
_MAX_REPORTED = 8


def render_json_mode(schema: Mapping[str, Any]) -> str:
    """The JSON-mode system prompt for ``schema`` (the content of a system turn)."""
    return (
        "You are a helpful assistant that answers in JSON. Here's the json schema you must adhere to:\n"
        f"{SCHEMA_OPEN}\n{neutralize_json(dumps(dict(schema)))}\n{SCHEMA_CLOSE}"
    )


@dataclass(frozen=True)
class JsonAnswer:
    """The model's JSON answer: ``value`` when it validates, else ``error`` (text to send back)."""

    value: Any = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _refuse(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


def check_json_answer(text: str, schema: Mapping[str, Any]) -> JsonAnswer:
    """Unwrap a ```json fence, decode, and validate against ``schema``; never raises on the text."""
    body = text.strip()
    fence = _FENCE.match(body)
    if fence:
        body = fence.group("body").strip()
    try:
        value = json.loads(body, parse_constant=_refuse)
    except (ValueError, RecursionError) as exc:
        return JsonAnswer(error=f"your answer is not valid JSON ({exc}); answer with only the JSON object")
    try:
        found = problems(schema, value)
    except UncheckableError as exc:
        return JsonAnswer(error=f"your answer could not be checked against the schema: {exc}")
    if not found:
        return JsonAnswer(value=value)
    lines = []
    for problem in found[:_MAX_REPORTED]:
        where = "/".join(str(part) for part in problem.absolute_path)
        lines.append(f"at '{where}': {problem.message}" if where else problem.message)
    return JsonAnswer(error="your answer does not match the schema: " + "; ".join(lines))
