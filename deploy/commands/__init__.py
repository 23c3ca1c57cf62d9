"""Command groups of the ``caduceus`` CLI. Each module exposes ``register(subparsers)``, which adds its
sub-command(s) and sets ``handler`` (a function of the parsed args returning the exit code)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from deploy.commands import client, demo, doctor, presets, serve, tool

Register = Callable[["argparse._SubParsersAction[Any]"], None]

#: Every command group, in the order ``caduceus --help`` lists them.
COMMANDS: list[Register] = [
    demo.register,
    serve.register,
    client.register,
    presets.register,
    tool.register,
    doctor.register,
]
