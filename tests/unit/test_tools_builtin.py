"""The built-in tools as plain functions (the sandboxed runs are in tests/integration)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from toolbox.schema import tool_spec
from toolbox.tools import context
from toolbox.tools.calculator import calculator
from toolbox.tools.clock import current_time
from toolbox.tools.files import files
from toolbox.tools.http import http_get
from toolbox.tools.python import python


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    root = tmp_path / "scratch"
    root.mkdir()
    token = context.use(context.ToolContext(root, (), 1000))
    yield root
    context.reset(token)


@pytest.mark.parametrize("fn", [python, calculator, files, http_get, current_time])
def test_every_builtin_has_a_schema_from_its_signature(fn: object) -> None:
    spec = tool_spec(fn)  # type: ignore[arg-type]
    assert spec.parameters["type"] == "object"
    assert spec.description


def test_files_schema_offers_the_actions_as_an_enum() -> None:
    assert tool_spec(files).parameters["properties"]["action"]["enum"] == ["read", "write", "list"]


@pytest.mark.parametrize(
    ("expression", "value"),
    [("1 + 2 * 3", 7), ("2 ** 10", 1024), ("(1 + 2) / 4", 0.75), ("-sqrt(16)", -4.0), ("max(1, 5, 3)", 5)],
)
def test_calculator_evaluates_arithmetic(expression: str, value: float) -> None:
    assert calculator(expression) == value


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os').system('id')",
        "(1).__class__",
        "open('/etc/passwd')",
        "9 ** 9 ** 9",
        "x + 1",
        "'a' * 3",
    ],
)
def test_calculator_refuses_anything_but_arithmetic(expression: str) -> None:
    with pytest.raises(ValueError):
        calculator(expression)


def test_current_time_is_iso_and_timezone_aware() -> None:
    assert datetime.fromisoformat(current_time("Europe/Paris")).utcoffset() is not None
    with pytest.raises(ValueError, match="unknown time zone"):
        current_time("Mars/Olympus")


def test_files_write_read_list_inside_scratch(scratch: Path) -> None:
    assert files("write", "notes/a.txt", "hello") == 5
    assert files("read", "notes/a.txt") == "hello"
    assert files("list", ".") == ["notes/"]
    assert (scratch / "notes" / "a.txt").read_text() == "hello"


@pytest.mark.parametrize("path", ["../outside.txt", "/etc/passwd", "notes/../../x"])
def test_files_refuses_paths_outside_scratch(scratch: Path, path: str) -> None:
    with pytest.raises(context.DeniedError, match="outside the working directory"):
        files("read", path)


def test_files_refuses_a_symlink_out_of_scratch(scratch: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    os.symlink(secret, scratch / "link")
    with pytest.raises(context.DeniedError):
        files("read", "link")
    with pytest.raises(context.DeniedError):
        files("write", "link", "overwritten")
    assert secret.read_text() == "top secret"


def test_files_read_is_cut_at_the_output_budget(scratch: Path) -> None:
    (scratch / "big.txt").write_text("y" * 5000)
    with pytest.raises(context.OutputTruncatedError) as caught:
        files("read", "big.txt")
    assert caught.value.partial == "y" * 1000


def test_python_reports_output_and_last_expression(scratch: Path) -> None:
    report = python("import sys\nprint('out')\nprint('err', file=sys.stderr)\n6 * 7")
    assert report == {"stdout": "out\n", "stderr": "err\n", "result": 42, "error": None}


def test_python_reports_the_exception_of_the_code(scratch: Path) -> None:
    report = python("1 / 0")
    assert report["error"] is not None and "ZeroDivisionError" in report["error"]


def test_python_tracebacks_start_at_the_models_code(scratch: Path) -> None:
    error = python("def f():\n    return 1 / 0\nf()")["error"]
    assert 'File "<python>", line 3' in error and 'File "<python>", line 2, in f' in error
    assert "toolbox" not in error and ZeroDivisionError.__name__ in error
    assert "SyntaxError" in python("def (")["error"]


def test_python_cuts_output_at_the_budget(scratch: Path) -> None:
    with pytest.raises(context.OutputTruncatedError) as caught:
        python("print('z' * 10_000)")
    assert isinstance(caught.value.partial, dict)
    assert len(caught.value.partial["stdout"]) == 500


def test_http_get_refuses_hosts_off_the_allow_list(scratch: Path) -> None:
    with pytest.raises(context.DeniedError, match="allow-list"):
        http_get("http://127.0.0.1:9/")
    with pytest.raises(ValueError, match="not an http"):
        http_get("file:///etc/passwd")
