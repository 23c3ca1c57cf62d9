"""Exceptions raised by ``toolbox``: our callers' mistakes, never the model's.

What the model can fix (a malformed call, invalid arguments) is returned as a value: a ``ParseError`` in
a ``ParsedTurn`` or a ``ToolError`` in a ``ToolResult``. What is a programming or configuration error
raises one of these::

    ToolboxError
    ├── SchemaError     a tool cannot be described: undocumented parameter, unsupported type, bad schema
    └── RenderError     messages or tools that cannot be rendered: unknown role, malformed dict, bad style
"""


class ToolboxError(Exception):
    """Base of every exception raised by the toolbox package."""


class SchemaError(ToolboxError):
    """A tool's schema cannot be built or is not valid JSON Schema."""


class RenderError(ToolboxError):
    """The messages or tools given to ``render_prompt`` cannot be rendered."""
