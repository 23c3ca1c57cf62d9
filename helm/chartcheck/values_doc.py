"""values.yaml's `# --` comments: every value is documented, and README.md's table is generated from them."""

from __future__ import annotations

import json
import re
from typing import Any

import yaml

from chartcheck import CHART, CheckError

README_START, README_END = "<!-- values:start -->", "<!-- values:end -->"


VALUE_KEY = re.compile(r"^(\s*)([A-Za-z_][\w.-]*):")


def documented_values(text: str) -> list[tuple[str, str, Any]]:
    """(key path, description, default) of each key with a `# --` comment; checks every leaf has one."""
    values = yaml.safe_load(text)
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    rows: list[tuple[str, str, Any]] = []
    leaves: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        if pending is not None and stripped.startswith("#"):
            pending.append(stripped[1:].strip())
            continue
        match = VALUE_KEY.match(line)
        if match:
            indent = len(match.group(1))
            stack = [(i, k) for i, k in stack if i < indent] + [(indent, match.group(2))]
            path = ".".join(k for _, k in stack)
            found, value = lookup(values, path)
            if found and pending is not None:
                rows.append((path, " ".join(pending), value))
            if found and (not isinstance(value, dict) or not value):
                leaves.append(path)
        pending = None
    documented = {row[0] for row in rows}
    for leaf in leaves:
        parts = leaf.split(".")
        if not any(".".join(parts[:n]) in documented for n in range(1, len(parts) + 1)):
            raise CheckError(f"values.yaml: {leaf} has no `# --` comment (nor has a parent)")
    return rows


def lookup(values: Any, path: str) -> tuple[bool, Any]:
    for key in path.split("."):
        if not isinstance(values, dict) or key not in values:
            return False, None
        values = values[key]
    return True, values


def values_table() -> str:
    rows = documented_values((CHART / "values.yaml").read_text(encoding="utf-8"))
    lines = ["| Key | Default | Description |", "|-----|---------|-------------|"]
    for path, description, value in rows:
        default = json.dumps(value, separators=(", ", ": ")).replace("|", "\\|")
        text = description.replace("|", "\\|")
        lines.append(f"| `{path}` | `{default}` | {text} |")
    return "\n".join(lines)


def readme_with_table(readme: str) -> str:
    before, _, rest = readme.partition(README_START)
    _, _, after = rest.partition(README_END)
    if not rest:
        raise CheckError(f"helm/caduceus/README.md lacks the markers {README_START} ... {README_END}")
    return f"{before}{README_START}\n{values_table()}\n{README_END}{after}"
