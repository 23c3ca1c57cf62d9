"""The ``python`` tool: run model-written code and report its output and the value of its last line.

It always runs inside a sandbox (its isolation class is ``untrusted``); nothing here tries to restrict
the code, because in-process restrictions of Python are known to be escapable. What it does is capture
output within the call's budget, so that a flood of output cannot exhaust the worker.
"""

from __future__ import annotations

import ast
import io
import json
import sys

# This module is imported by every cold sandbox host: ``typing``, ``contextlib`` and ``traceback`` would
# add milliseconds to each start, so annotations stay unevaluated and traceback is imported on error.
from toolbox.tools import context

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any


class _Bounded(io.TextIOBase):
    """A text sink that keeps the first ``limit`` characters and counts the rest."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[str] = []
        self.kept = 0
        self.dropped = 0

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        room = max(0, self.limit - self.kept)
        if room:
            self.parts.append(text[:room])
            self.kept += min(room, len(text))
        self.dropped += max(0, len(text) - room)
        return len(text)

    def value(self) -> str:
        return "".join(self.parts)


def python(code: str) -> dict[str, object]:
    """Run Python code in a sandbox and return its output and the value of its last expression.

    Args:
        code: Python source to run. Files persist in the working directory for this conversation.
    Returns:
        stdout, stderr, the repr-or-JSON value of the last expression (or null), and the error if it raised.
    """
    budget = context.current().output_bytes // 2
    stdout, stderr = _Bounded(budget), _Bounded(budget)
    result: Any = None
    error: str | None = None
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = stdout, stderr
    try:
        result = _run(code)
    except MemoryError:
        raise
    except SystemExit:
        pass
    except BaseException as exc:  # the model's code failing is the normal outcome to report
        error = _user_traceback(exc)
    finally:
        sys.stdout, sys.stderr = saved
    report = {"stdout": stdout.value(), "stderr": stderr.value(), "result": _jsonable(result), "error": error}
    if stdout.dropped or stderr.dropped:
        dropped = stdout.dropped + stderr.dropped
        raise context.OutputTruncatedError(
            f"the code printed more than the output limit; {dropped} characters cut", report
        )
    return report


def _user_traceback(exc: BaseException) -> str:
    """The traceback from the model's own code on: our wrapper frames (and their host paths) are noise."""
    import traceback  # noqa: PLC0415 (see the imports)

    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != "<python>":
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb)[-8:])


def _run(code: str) -> Any:
    tree = ast.parse(code, filename="<python>", mode="exec")
    namespace: dict[str, Any] = {"__name__": "__main__"}
    last = tree.body[-1] if tree.body and isinstance(tree.body[-1], ast.Expr) else None
    if last is not None:
        tree.body.pop()
    exec(compile(tree, "<python>", "exec"), namespace)
    if last is None:
        return None
    return eval(compile(ast.Expression(last.value), "<python>", "eval"), namespace)


def _jsonable(value: Any) -> Any:
    if value is None:
        return None
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return repr(value)
    return value
