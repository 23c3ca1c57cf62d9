"""Which tools exist and how each one runs: built-ins, Python functions named by import path, MCP servers.

Each entry carries its spec (from ``toolbox.schema.tool_spec`` or the MCP server's listing), its
isolation class, its limits and its network allow-list. ``trusted`` (in-process) is granted only to tools
the operator named when building the registry: a tool cannot make itself trusted.
"""

from __future__ import annotations

import importlib
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from toolbox.errors import SchemaError
from toolbox.protocol import ToolSpec
from toolbox.schema import tool_spec
from workers.errors import ToolConfigError
from workers.sandbox.policy import Isolation, Limits, Outcome

#: A tool called elsewhere than in a sandbox host (an MCP server): arguments, limits and the conversation
#: (whose session it runs in) in, outcome out.
RemoteCall = Callable[[dict[str, Any], Limits, str], Awaitable[Outcome]]

BUILTINS: dict[str, tuple[str, Isolation]] = {
    "python": ("toolbox.tools.python:python", "untrusted"),
    "calculator": ("toolbox.tools.calculator:calculator", "sandboxed"),
    "files": ("toolbox.tools.files:files", "sandboxed"),
    "current_time": ("toolbox.tools.clock:current_time", "sandboxed"),
}
HTTP_GET = "toolbox.tools.http:http_get"


@dataclass(frozen=True)
class ToolEntry:
    spec: ToolSpec
    isolation: Isolation
    limits: Limits = field(default_factory=Limits)
    egress: tuple[str, ...] = ()
    target: str | None = None  # "module:function", for tools run by a sandbox host or in-process
    remote: RemoteCall | None = None


def resolve(target: str) -> Callable[..., Any]:
    """The function named ``module:function``; ``ToolConfigError`` if it cannot be imported."""
    module_name, sep, attribute = target.partition(":")
    if not sep or not module_name or not attribute:
        raise ToolConfigError(f"tool import path {target!r} must look like 'package.module:function'")
    try:
        function = getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as exc:
        raise ToolConfigError(f"cannot import tool {target!r}: {exc}") from exc
    if not callable(function):
        raise ToolConfigError(f"tool {target!r} is not a function")
    return function  # type: ignore[no-any-return]


class ToolRegistry:
    """The tools one executor offers, by name."""

    def __init__(self, *, trusted: Iterable[str] = ()) -> None:
        self.trusted = frozenset(trusted)
        self.entries: dict[str, ToolEntry] = {}

    def add_function(
        self,
        target: str,
        *,
        isolation: Isolation = "sandboxed",
        limits: Limits | None = None,
        egress: Iterable[str] = (),
        name: str | None = None,
    ) -> ToolEntry:
        """Register the function named ``module:function``; its schema comes from its signature."""
        try:
            spec = tool_spec(resolve(target), name=name)
        except SchemaError as exc:
            raise ToolConfigError(f"tool {target!r}: {exc}") from exc
        entry = ToolEntry(spec, isolation, limits or Limits(), tuple(egress), target=target)
        return self.add(entry)

    def add(self, entry: ToolEntry) -> ToolEntry:
        if entry.isolation not in ("trusted", "sandboxed", "untrusted"):
            raise ToolConfigError(f"tool {entry.spec.name!r}: unknown isolation class {entry.isolation!r}")
        if entry.isolation == "trusted" and entry.spec.name not in self.trusted:
            raise ToolConfigError(
                f"tool {entry.spec.name!r} asks to run in-process ('trusted'), but the operator did not "
                "flag it trusted; add its name to the trusted tools or use 'sandboxed'"
            )
        if entry.spec.name in self.entries:
            raise ToolConfigError(f"two tools are named {entry.spec.name!r}")
        self.entries[entry.spec.name] = entry
        return entry

    def get(self, name: str) -> ToolEntry | None:
        return self.entries.get(name)

    def specs(self) -> list[ToolSpec]:
        return [entry.spec for entry in self.entries.values()]

    def sandbox_modules(self) -> tuple[str, ...]:
        """Modules that warm sandbox hosts import ahead of a call."""
        found = (
            e.target.partition(":")[0] for e in self.entries.values() if e.target and e.isolation != "trusted"
        )
        return tuple(dict.fromkeys(found))


def builtin_registry(*, http_allow: Iterable[str] = (), trusted: Iterable[str] = ()) -> ToolRegistry:
    """The built-in tools; ``http_get`` only when ``http_allow`` names at least one host."""
    registry = ToolRegistry(trusted=trusted)
    for name, (target, isolation) in BUILTINS.items():
        chosen: Isolation = "trusted" if name in registry.trusted and isolation != "untrusted" else isolation
        registry.add_function(target, isolation=chosen)
    hosts = tuple(host.lower() for host in http_allow)
    if hosts:
        registry.add_function(HTTP_GET, egress=hosts)
    return registry
