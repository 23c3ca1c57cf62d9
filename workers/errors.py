"""Exceptions raised by ``workers``: faults of the infrastructure or of the configuration, never the model's.

What the model can fix or should know (invalid arguments, a timeout, running out of memory, a crash, cut
output, a denied action) comes back as a ``ToolResult`` with a ``ToolError``. These are for the operator::

    WorkersError
    ├── SandboxError            the sandbox machinery itself failed (a call's cgroup limits could not
    │   │                       be set, a scratch volume could not be mounted)
    │   └── SandboxStartError   a sandbox host could not be started or did not get ready (the executor
    │                           answers the call with an error result: the call did not run)
    ├── ToolConfigError         a tool cannot be registered: bad import path, trusted without the
    │                           operator's flag, unknown isolation class, duplicate name; or a
    │                           tools setting is invalid (the scratch quota or expiry)
    └── ToolSourceError         a tool source (an MCP server) cannot be started or listed
"""


class WorkersError(Exception):
    """Base of every exception raised by the workers package."""


class SandboxError(WorkersError):
    """The sandbox machinery failed (not the tool: a tool's failure is a result)."""


class SandboxStartError(SandboxError):
    """A sandbox host could not be started or did not report ready."""


class ToolConfigError(WorkersError):
    """A tool's registration, or a setting of the tools, is invalid."""


class ToolSourceError(WorkersError):
    """A tool source (an MCP server) could not be started, listed or reached."""
