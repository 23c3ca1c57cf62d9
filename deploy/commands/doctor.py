"""``caduceus doctor``: which isolation is in force for tools on this machine, and why."""

from __future__ import annotations

import argparse
from typing import Any

from workers.sandbox import detect, scratch_root, seccomp


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser("doctor", help="show which tool isolation is in force here and why")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    found = detect()
    print(f"isolation: {found.mechanism}")
    for reason in found.reasons:
        print(f"  - {reason}")
    if found.mechanism == "process":
        print("  tools marked untrusted (python) are refused: no isolation works on this machine")
    print(f"call limits: {found.call_limits}")
    print(
        f"seccomp: {'denies ' + ', '.join(seccomp.denied_names()) if seccomp.supported() else 'unavailable'}"
    )
    print(f"scratch root: {scratch_root()}")
    return 0
