"""The environment is the lock: checks run by `make` before it tests or demonstrates anything.

    python .ci/envcheck.py stamp LOCK     record the digest of pyproject.toml's dependencies in LOCK
    python .ci/envcheck.py check LOCK     fail unless LOCK matches pyproject.toml and this environment is LOCK
    python .ci/envcheck.py pick LOCK NAME print NAME's pinned requirement (with its hashes) from LOCK

A lock is a requirements file with hashes (``uv pip compile --generate-hashes``); its first line records a
digest of pyproject.toml's ``dependencies`` and ``optional-dependencies``, so an edit of either without a
new lock is caught here, never resolved silently at install time. Standard library only: it runs with the
interpreter that creates the environment as well as with the environment's own.
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
import tomllib
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MARK = "# pyproject-dependencies-sha256: "
PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;\\]+)")
# Installed by the venv itself or by `make install` outside the lock.
NOT_LOCKED = {"pip", "caduceus"}


def normalize(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def dependencies_digest() -> str:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    tables = {
        "dependencies": project.get("dependencies", []),
        "optional": project.get("optional-dependencies", {}),
    }
    return hashlib.sha256(json.dumps(tables, sort_keys=True).encode()).hexdigest()


def pins(lock: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in lock.read_text().splitlines():
        match = PIN.match(line)
        if match:
            found[normalize(match[1])] = match[2]
    return found


def stamp(lock: Path) -> None:
    lines = [line for line in lock.read_text().splitlines() if not line.startswith(MARK)]
    lock.write_text("\n".join([MARK + dependencies_digest(), *lines]) + "\n")


def installed() -> dict[str, str]:
    return {normalize(dist.metadata["Name"]): dist.version for dist in metadata.distributions()}


def differences(locked: dict[str, str], present: dict[str, str]) -> list[str]:
    problems = []
    for name in sorted(locked.keys() | present.keys()):
        want, have = locked.get(name), present.get(name)
        if name in NOT_LOCKED or want == have:
            continue
        if have is None:
            problems.append(f"  {name}: the lock has {want}; it is not installed")
        elif want is None:
            problems.append(f"  {name}: {have} is installed; the lock does not have it")
        else:
            problems.append(f"  {name}: {have} is installed; the lock has {want}")
    return problems


def check(lock: Path) -> int:
    first = lock.read_text().split("\n", 1)[0]
    if first != MARK + dependencies_digest():
        print(
            f"{lock.name} was not made from this pyproject.toml: its dependencies changed after the lock.\n"
            "Run `make lock` to resolve them again, review the lock's diff and commit both.",
            file=sys.stderr,
        )
        return 1
    problems = differences(pins(lock), installed())
    if problems:
        print(
            f"This environment ({sys.prefix}) is not {lock.name}:\n" + "\n".join(problems) + "\n"
            "Run `make sync` to make it exactly the lock (or `make lock` if the lock is what should change).",
            file=sys.stderr,
        )
        return 1
    print(f"{sys.prefix} is exactly {lock.name} ({len(pins(lock))} packages)")
    return 0


def pick(lock: Path, name: str) -> int:
    block: list[str] = []
    for line in lock.read_text().splitlines():
        match = PIN.match(line)
        if match:
            block = [line] if normalize(match[1]) == normalize(name) else []
        elif block and line.startswith("    --hash"):
            block.append(line)
        elif block:
            break
    if not block:
        print(f"{name} is not pinned in {lock.name}", file=sys.stderr)
        return 1
    print("\n".join(block).rstrip(" \\"))
    return 0


def main(argv: list[str]) -> int:
    if len(argv) >= 2 and argv[0] == "stamp":
        stamp(Path(argv[1]))
        return 0
    if len(argv) >= 2 and argv[0] == "check":
        return check(Path(argv[1]))
    if len(argv) == 3 and argv[0] == "pick":
        return pick(Path(argv[1]), argv[2])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
