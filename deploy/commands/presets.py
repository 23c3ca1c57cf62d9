"""``caduceus presets``: the placement each model preset's replica requests, computed by Ray Serve LLM."""

from __future__ import annotations

import argparse
import json
from typing import Any

from deploy.presets import PRESETS, placement


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    parser = subparsers.add_parser("presets", help="print each model preset's GPU placement as JSON")
    parser.add_argument("names", nargs="*", help="presets to show (default: all)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    unknown = [name for name in args.names if name not in PRESETS]
    if unknown:
        print(f"caduceus presets: unknown preset(s) {', '.join(unknown)}; known: {', '.join(PRESETS)}")
        return 2
    names = args.names or list(PRESETS)
    print(json.dumps({name: placement(PRESETS[name]) for name in names}, indent=2))
    return 0
