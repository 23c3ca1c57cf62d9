"""``caduceus doctor``: which isolation and which limits are in force for tools on this machine, and why.

Every mechanism that is missing is named, with what the worker does instead: tools marked untrusted are
refused where a call cannot be bounded as a whole (unless ``CADUCEUS_ALLOW_UNBOUNDED=1``), and others run
with per-process limits only."""

from __future__ import annotations

import argparse
import os
from typing import Any

from workers.errors import WorkersError
from workers.sandbox import detect, scratch_root, seccomp
from workers.sandbox.pool import binding_problem
from workers.sandbox.scratch import ScratchSettings, ScratchStore


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser(
        "doctor", help="show which tool isolation and limits are in force here and why"
    )
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    found = detect()
    print(f"isolation: {found.mechanism}")
    for reason in found.reasons:
        print(f"  - {reason}")
    if found.mechanism == "process":
        print("  tools marked untrusted (python) are refused: no isolation works on this machine")
    print(f"call limits (cgroup per call: memory, processes, CPU share): {found.call_limits}")
    try:
        store = ScratchStore(scratch_root(), ScratchSettings.from_env())
    except WorkersError as exc:
        print(f"caduceus doctor: {exc}")
        return 2
    print(f"scratch root: {store.root}")
    print(f"scratch quota: {store.describe()}")
    problem = binding_problem(found.mechanism, store.root)
    if problem is None:
        print("hosts: a pooled fleet, spare hosts forked from a template and bound at their first task")
    else:
        print(f"hosts: started per conversation, bound at their start: {problem}")
    unbounded = [*found.unbounded, *([f"scratch quota: {store.problem}"] if store.problem else [])]
    if unbounded:
        allowed = os.environ.get("CADUCEUS_ALLOW_UNBOUNDED") == "1"
        verdict = "RUN ANYWAY (CADUCEUS_ALLOW_UNBOUNDED=1)" if allowed else "REFUSED"
        print(f"WARNING: calls are not bounded as a whole here; untrusted tools are {verdict}; other tools")
        print("  run with per-process limits only. Missing: " + "; ".join(unbounded))
    print(f"signals: {found.signals}")
    print("mcp servers: one server process per conversation, isolated and limited like a tool call")
    print(
        f"seccomp: {'denies ' + ', '.join(seccomp.denied_names()) if seccomp.supported() else 'unavailable'}"
    )
    return 0
