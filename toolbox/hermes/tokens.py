"""The exact strings of the Hermes/ChatML wire format, and neutralization of untrusted text.

The wire format's rule for untrusted text: text from users, tools or documents must never open a turn, close
a tool response, or fake a call. ``neutralize`` breaks every control string in plain text with a zero-width
space after
its ``<``; ``neutralize_json`` escapes the same ``<`` as ``\\u003c`` inside JSON text, which is lossless
(a JSON decoder gives back the original string) because ``<`` can only occur inside JSON strings.
"""

from __future__ import annotations

import re

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"
TOOLS_OPEN, TOOLS_CLOSE = "<tools>", "</tools>"
CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
RESPONSE_OPEN, RESPONSE_CLOSE = "<tool_response>", "</tool_response>"
SCHEMA_OPEN, SCHEMA_CLOSE = "<schema>", "</schema>"
SCRATCH_OPEN, SCRATCH_CLOSE = "<scratch_pad>", "</scratch_pad>"

#: Stop strings for every generation request (the README's wire format: a turn ends at either).
STOP = (IM_END, IM_START)

ZERO_WIDTH_SPACE = "\u200b"

# Any "<|...|>" special token (ChatML's and Llama 3's own) and every Hermes tag, opening or closing.
_CONTROL = re.compile(r"<(?=\||/?(?:tools|tool_call|tool_response|schema|scratch_pad)>)")
_TURN = re.compile(r"<(?=\|)")


def neutralize(text: str) -> str:
    """Untrusted plain text with every control string broken by a zero-width space after its ``<``."""
    if "<" not in text:
        return text
    return _CONTROL.sub("<" + ZERO_WIDTH_SPACE, text)


def neutralize_turns(text: str) -> str:
    """Break only ``<|...|>`` turn markers: for the model's own raw output, whose Hermes tags are real.

    An engine stops at ``<|im_end|>`` and ``<|im_start|>``, so real raw output never holds them and
    replaying it stays byte-exact; text that does hold one can still never end the assistant turn.
    """
    return _TURN.sub("<" + ZERO_WIDTH_SPACE, text) if "<|" in text else text


def neutralize_json(json_text: str) -> str:
    """JSON text with the ``<`` of every control string escaped as ``\\u003c`` (decodes unchanged)."""
    if "<" not in json_text:
        return json_text
    return _CONTROL.sub(r"\\u003c", json_text)


def contains_control(text: str) -> bool:
    """Whether ``text`` holds a string that the Hermes format would read as structure."""
    return bool(_CONTROL.search(text))
