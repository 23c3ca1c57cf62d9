"""The ``files`` tool: read, write and list files in the conversation's scratch directory, and nowhere else.

Paths are resolved (symlinks included) and must stay under the scratch directory; the final component is
opened without following a symlink, so a link swapped in after the check cannot lead outside either.
Under bubblewrap the scratch directory is also the only host directory the tool can see at all.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from toolbox.tools import context

_MAX_LIST = 1000


def files(action: str, path: str = ".", content: str | None = None) -> Any:
    """Read, write or list files in this conversation's working directory.

    Args:
        action: What to do. (choices: ["read", "write", "list"])
        path: A path relative to the working directory.
        content: The text to write; required for "write".
    Returns:
        The file's text for "read", the number of characters written for "write", the entries for "list".
    """
    target = _confined(path)
    if action == "read":
        return _read(target, context.current().output_bytes)
    if action == "write":
        if content is None:
            raise ValueError("'write' needs 'content'")
        return _write(target, content)
    if action == "list":
        return _list(target)
    raise ValueError(f"unknown action {action!r}; use 'read', 'write' or 'list'")


def _confined(path: str) -> Path:
    root = context.current().scratch.resolve()
    if "\x00" in path:
        raise ValueError("the path contains a NUL character")
    resolved = (root / path).resolve()
    if resolved != root and root not in resolved.parents:
        raise context.DeniedError(f"{path!r} is outside the working directory; use a relative path inside it")
    return resolved


def _read(target: Path, limit: int) -> str:
    fd = os.open(target, os.O_RDONLY | os.O_NOFOLLOW)
    with os.fdopen(fd, "rb") as handle:
        data = handle.read(limit + 1)
    text = data[:limit].decode("utf-8", errors="replace")
    if len(data) > limit:
        raise context.OutputTruncatedError(f"the file is longer than the {limit}-byte output limit", text)
    return text


def _write(target: Path, content: str) -> int:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o644)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(content)
    return len(content)


def _list(target: Path) -> list[str]:
    entries = sorted(entry.name + ("/" if entry.is_dir() else "") for entry in os.scandir(target))
    return entries[:_MAX_LIST]
