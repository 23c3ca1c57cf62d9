"""The demo's tools: ``calculator`` and ``files``, offered with narrower argument schemas than their own.

A 135M model is small: given a free-form string it rambles. Offered numbers and short patterned strings, it
writes arguments the tools accept, and each narrowed schema is still valid for the real tool (the executor
validates calls against these specs, then runs the real functions). The service offers this set instead
of the built-in tools when ``tool_workers.tools`` is ``demo``.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from toolbox.protocol import ToolSpec
from workers.registry import ToolRegistry, builtin_registry

#: Shown to the model on the turn that must answer in words (``RunRequest.answer_instruction``): a small
#: model asked at the start of the task forgets; asked here, it reads the results back.
ANSWER_INSTRUCTION = (
    "Reply to the user in one short sentence that says what the calculator returned and what the files "
    "tool wrote."
)

#: Narrower schemas than the tools' own, offered to the model (each still valid for the real tool).
NARROW: dict[str, dict[str, Any]] = {
    "calculator": {"expression": {"type": "string", "pattern": "^[0-9]{1,4} [*+/-] [0-9]{1,4}$"}},
    "files": {
        "action": {"type": "string", "enum": ["write"]},
        "path": {"type": "string", "pattern": "^[a-z]{1,12}\\.txt$"},
        "content": {"type": "string", "pattern": "^-?[0-9]{1,9}$"},
    },
}


def narrowed(spec: ToolSpec) -> ToolSpec:
    """``spec`` with the demo's narrower argument schemas, all of them required."""
    properties = {**spec.parameters.get("properties", {}), **NARROW.get(spec.name, {})}
    parameters = {**spec.parameters, "properties": properties, "required": list(properties)}
    return replace(spec, parameters=parameters)


def demo_registry(*, narrow: bool = False) -> ToolRegistry:
    """``calculator`` and ``files``; with ``narrow``, registered under their narrowed specs (what the
    service offers, and what its executor then validates calls against)."""
    registry = ToolRegistry()
    builtins = builtin_registry()
    for name in ("calculator", "files"):
        entry = builtins.get(name)
        assert entry is not None
        registry.add(replace(entry, spec=narrowed(entry.spec)) if narrow else entry)
    return registry
