"""Reading a Hermes model's output: prose, scratch-pad reasoning and ``<tool_call>`` blocks.

One incremental state machine does all the work; ``parse(text)`` is that machine fed the whole text, so
streaming equals batch for every chunking by construction (and a property test checks it). Each input
character is scanned once: the machine keeps only a short held-back tail (a tag that may be starting),
so the total work is linear in the output.

The rules, in the order the machine applies them:

- Outside a call, ``<tool_call>`` opens a call block when what follows it is JSON (``{``, ``[``), a
  Python literal or a fence, or begins on a new line; otherwise (``use a <tool_call> block``) it is prose.
- Inside a block the scanner tracks JSON strings, so ``</tool_call>``, ``&`` and ``<`` inside an argument
  are just text. The block ends at ``</tool_call>`` outside a string; a ``<tool_call>`` there ends it too
  (the model forgot to close it). A raw newline inside a string is not JSON: the string tracking is then
  not trusted and the block ends at the first closing tag in it.
- ``<scratch_pad>...</scratch_pad>`` is reasoning: neither content nor calls.
- ``<tool_response>`` (the model may not write tool results), ``<|im_end|>`` and ``<|im_start|>`` end the
  turn: everything after them is dropped and ``ParsedTurn.stop`` names the marker.
- At the end of the stream a held-back partial tag is content; an unclosed block with complete JSON is a
  call; an unclosed block without it is a "truncated" error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from toolbox.hermes.decode import ParseError, decode_block, number_calls
from toolbox.hermes.events import (
    ContentDelta,
    ParsedTurn,
    ReasoningDelta,
    StreamEvent,
    ToolCallFailed,
    ToolCallReady,
    TurnEnded,
)
from toolbox.hermes.tokens import (
    CALL_CLOSE,
    CALL_OPEN,
    IM_END,
    IM_START,
    RESPONSE_OPEN,
    SCRATCH_CLOSE,
    SCRATCH_OPEN,
)
from toolbox.protocol import ToolCall

_CUT_MARKERS = (RESPONSE_OPEN, IM_END, IM_START)
_TEXT_TAGS = (CALL_OPEN, SCRATCH_OPEN, *_CUT_MARKERS)
_REASON_TAGS = (SCRATCH_CLOSE, *_CUT_MARKERS)
_BLOCK_TAGS = (CALL_CLOSE, CALL_OPEN, *_CUT_MARKERS)
_BLOCK_END = re.compile("|".join(re.escape(tag) for tag in _BLOCK_TAGS))
_IN_STRING = re.compile(r'["\\\n]')
_OUT_OF_STRING = re.compile(r'["<]')
_CALL_START = frozenset("{[`'\"")
_LONGEST_TAG = max(len(tag) for tag in _BLOCK_TAGS)


# States of the machine: plain module-level ints, because ``feed`` compares one per chunk.
_TEXT, _REASON, _OPEN, _BLOCK, _DONE, _FINISHED = range(1, 7)


@dataclass
class _Block:
    """An open ``<tool_call>`` block: its text so far and the JSON-string tracking state."""

    parts: list[str] = field(default_factory=list)
    carry: str = ""
    scanned: int = 0
    in_string: bool = False
    bad: bool = False


def _prefixes(tags: tuple[str, ...]) -> frozenset[str]:
    return frozenset(tag[:n] for tag in tags for n in range(1, len(tag)))


_TEXT_PREFIXES = _prefixes(_TEXT_TAGS)
_PREFIXES: dict[tuple[str, ...], frozenset[str]] = {
    tags: _prefixes(tags) for tags in (_TEXT_TAGS, _REASON_TAGS, _BLOCK_TAGS, (CALL_CLOSE,))
}


def _tag_at(text: str, pos: int, tags: tuple[str, ...]) -> str | None:
    """The tag starting at ``pos``; ``""`` if the text ends inside what may still become one.

    Every tag ends with its only ``>``, so the candidate is the text up to the next ``>``.
    """
    end = text.find(">", pos, pos + _LONGEST_TAG)
    if end >= 0:
        candidate = text[pos : end + 1]
        return candidate if candidate in tags else None
    return "" if text[pos : pos + _LONGEST_TAG] in _PREFIXES[tags] else None


class StreamParser:
    """Feed model output as it streams; get content deltas and each call the moment it is complete."""

    def __init__(self, *, id_prefix: str = "call_") -> None:
        self._id_prefix = id_prefix
        self._mode = _TEXT
        self._hold = ""
        self._open_ws = ""
        self._block = _Block()
        self._unscanned: list[str] = []
        self._push = self._unscanned.append  # bound once: the hot path of 1-character feeding
        self._events: list[StreamEvent] = []
        self._content: list[str] = []
        self._reasoning: list[str] = []
        self._calls: list[ToolCall] = []
        self._errors: list[ParseError] = []
        self._blocks = 0
        self._raw: list[str] = []
        self._fed = 0
        self._stop: str | None = None
        self._stop_at: int | None = None
        self._finished: ParsedTurn | None = None
        self._block_start = 0

    @property
    def done(self) -> bool:
        """True once the turn has ended (a cut marker was read); further input is ignored."""
        return self._mode >= _DONE

    def feed(self, chunk: str) -> list[StreamEvent]:
        """Read the next piece of output; returns what became known because of it."""
        mode = self._mode
        if mode == _BLOCK:
            self._push(chunk)
            if ">" not in chunk or not self._may_end_block():
                # A block ends only at a tag: '<', a name, '>'. Until one can have arrived, scanning waits.
                return []
            self._run_unscanned()
        elif mode == _TEXT and "<" not in chunk:
            if not chunk:
                return []
            self._raw.append(chunk)
            self._fed += len(chunk)
            if not self._hold:
                self._content.append(chunk)
                return [ContentDelta(chunk)]
            held = self._hold + chunk
            if ">" not in chunk and held in _TEXT_PREFIXES:
                self._hold = held  # a tag is still arriving, one piece at a time
                return []
            self._run(held, 0, self._fed - len(held))
        elif mode >= _DONE or not chunk:
            return []
        else:
            self._raw.append(chunk)
            self._fed += len(chunk)
            self._run(self._hold + chunk, 0, self._fed - len(self._hold) - len(chunk))
        events, self._events = self._events, []
        return events

    def finish(self) -> ParsedTurn:
        """The end of the stream: flush what was held back and return the whole turn."""
        if self._finished is None:
            self._close()
            self._finished = self._turn()
            self._mode = _FINISHED
        return self._finished

    def drain(self) -> list[StreamEvent]:
        """Events produced by ``finish()`` (a call whose block never closed, a truncation error...)."""
        events, self._events = self._events, []
        return events

    # -- the state machine ------------------------------------------------------------------------

    def _run(self, text: str, pos: int, start: int) -> None:
        """Process ``text`` (from ``pos``; text[0] is at global offset ``start``) until used up or held."""
        self._hold = ""
        while self._mode != _DONE:
            if self._mode == _BLOCK:
                ended = self._scan_block(text, pos, start)
                if ended is None:
                    return
                text, pos, start = ended
                continue
            if pos >= len(text):
                return
            step = self._open if self._mode == _OPEN else self._prose
            pos = step(text, pos, start)
            if self._hold:
                return

    def _prose(self, text: str, pos: int, start: int) -> int:
        """Outside a block: content (or, in a scratch pad, reasoning) up to the next tag."""
        tags, emit = (_TEXT_TAGS, self._say) if self._mode == _TEXT else (_REASON_TAGS, self._think)
        lt = text.find("<", pos)
        if lt < 0:
            emit(text[pos:])
            return len(text)
        emit(text[pos:lt])
        tag = _tag_at(text, lt, tags)
        if tag == "":
            self._hold = text[lt:]
            return len(text)
        if tag is None:
            emit("<")
            return lt + 1
        if tag == CALL_OPEN:
            self._mode, self._open_ws = _OPEN, ""
        elif tag in (SCRATCH_OPEN, SCRATCH_CLOSE):
            self._mode = _REASON if tag == SCRATCH_OPEN else _TEXT
        else:
            self._end_turn(tag, start + lt)
        return lt + len(tag)

    def _open(self, text: str, pos: int, start: int) -> int:
        """After ``<tool_call>``: decide between a call block and a prose mention of the tag."""
        while pos < len(text) and text[pos].isspace():
            self._open_ws += text[pos]
            pos += 1
        if pos == len(text):
            return pos
        char = text[pos]
        if char == "<":
            tag = _tag_at(text, pos, (CALL_CLOSE,))
            if tag == "":
                self._hold = text[pos:]
                return len(text)
            if tag == CALL_CLOSE:
                self._mode = _TEXT
                self._decode("", truncated=False)
                return pos + len(CALL_CLOSE)
        if char in _CALL_START or char == "<" or "\n" in self._open_ws:
            self._mode, self._block, self._block_start = _BLOCK, _Block(), start + pos
            return pos
        self._mode = _TEXT
        self._say(CALL_OPEN + self._open_ws)
        return pos

    def _may_end_block(self) -> bool:
        """Whether the text since the last scan holds a whole block-ending tag.

        A tag that ends the block ends in the newest chunk (an earlier one would have been scanned
        already) and is at most ``_LONGEST_TAG`` characters long, so the last chunks hold all of it;
        empty chunks can make that window short, and then we scan to be safe.
        """
        chunks = self._unscanned
        recent = "".join(chunks[-_LONGEST_TAG:])
        if len(chunks) > _LONGEST_TAG and len(recent) < _LONGEST_TAG + len(chunks[-1]):
            return True
        return _BLOCK_END.search(self._block.carry + recent) is not None

    def _run_unscanned(self) -> None:
        """Scan the chunks that arrived while a block was open (counted in ``_fed`` only now)."""
        text = "".join(self._unscanned)
        self._unscanned.clear()
        self._raw.append(text)
        self._fed += len(text)
        self._run(text, 0, self._fed - len(text))

    def _scan_block(self, text: str, pos: int, start: int) -> tuple[str, int, int] | None:
        """Scan ``text[pos:]`` as block body. When the block ends there, decode it and return where the
        text after it continues, as (text, pos, global offset of text[0]); else keep it and return None.
        """
        block = self._block
        if block.carry:
            text, pos, start = block.carry + text[pos:], 0, start + pos - len(block.carry)
            block.carry = ""
        if not block.bad:
            resume, found = self._scan_json(text, pos)
            if found is not None:
                return self._end_block(text, pos, start, found)
            if not block.bad:
                block.parts.append(text[pos:resume])
                block.carry = text[resume:]
                return None
            # The string tracking just broke: the closing tag may be in what was scanned before.
            body = "".join(block.parts) + text[pos:]
            match = _BLOCK_END.search(body)
            if match is not None:
                return self._end_block_in(body, match.start(), match.group())
            block.parts = [body[: len(body) - len(text) + pos]]
        match = _BLOCK_END.search(text, pos)
        if match is not None:
            return self._end_block(text, pos, start, (match.start(), match.group()))
        keep = max(pos, len(text) - (_LONGEST_TAG - 1))
        block.parts.append(text[pos:keep])
        block.carry = text[keep:]
        return None

    def _scan_json(self, text: str, pos: int) -> tuple[int, tuple[int, str] | None]:
        """Track JSON strings over ``text[pos:]``: (where to resume, (offset, tag) if a tag ends it)."""
        block = self._block
        while pos < len(text):
            if block.in_string:
                pos, stop = self._skip_string(text, pos)
                if stop:
                    return pos, None
                continue
            match = _OUT_OF_STRING.search(text, pos)
            if match is None:
                return len(text), None
            at = match.start()
            if match.group() == '"':
                block.in_string, pos = True, at + 1
                continue
            tag = _tag_at(text, at, _BLOCK_TAGS)
            if tag == "":
                return at, None
            if tag is not None:
                return at, (at, tag)
            pos = at + 1
        return pos, None

    def _skip_string(self, text: str, pos: int) -> tuple[int, bool]:
        """Inside a JSON string: (where to go on, whether this text is done with)."""
        match = _IN_STRING.search(text, pos)
        if match is None:
            return len(text), True
        at, char = match.start(), match.group()
        if char == '"':
            self._block.in_string = False
            return at + 1, False
        if char == "\\":
            return (at, True) if at + 1 == len(text) else (at + 2, False)
        self._block.bad = True  # a raw newline: not JSON, so the string tracking cannot be trusted
        return len(text), True

    def _end_block(self, text: str, pos: int, start: int, found: tuple[int, str]) -> tuple[str, int, int]:
        """The block ends at ``found`` in ``text``: decode it; the text mode goes on after the tag."""
        at, tag = found
        body = "".join(self._block.parts) + text[pos:at]
        self._decode(body, truncated=tag != CALL_CLOSE)
        self._mode, self._block = _TEXT, _Block()
        return text, at + (len(tag) if tag == CALL_CLOSE else 0), start

    def _end_block_in(self, body: str, at: int, tag: str) -> tuple[str, int, int]:
        """The block ends at ``at`` in its own ``body``: decode it; what follows is text again."""
        self._decode(body[:at], truncated=tag != CALL_CLOSE)
        self._mode, self._block = _TEXT, _Block()
        return body, at + (len(tag) if tag == CALL_CLOSE else 0), self._block_start

    def _decode(self, body: str, *, truncated: bool) -> None:
        objects, errors = decode_block(body, self._blocks, truncated=truncated)
        self._blocks += 1
        calls = number_calls(objects, self._id_prefix, len(self._calls))
        self._calls.extend(calls)
        self._errors.extend(errors)
        self._events.extend(ToolCallReady(call) for call in calls)
        self._events.extend(ToolCallFailed(error) for error in errors)

    def _close(self) -> None:
        """End of stream: settle whatever mode the machine is in (an unclosed block may hold more)."""
        while self._mode not in (_DONE, _TEXT, _REASON):
            if self._mode == _OPEN:
                self._mode = _TEXT
                self._decode(self._hold, truncated=True)
                self._hold = ""
            elif self._unscanned:
                self._run_unscanned()  # text deferred until a '>' must be scanned first
            else:
                self._close_block()
        if self._mode == _TEXT:
            self._say(self._hold)
        elif self._mode == _REASON:
            self._think(self._hold)
        self._hold = ""

    def _close_block(self) -> None:
        block = self._block
        body = "".join(block.parts) + block.carry
        match = _BLOCK_END.search(body) if block.in_string or block.bad else None
        if match is None:
            self._mode, self._block = _TEXT, _Block()
            self._decode(body, truncated=True)
            return
        self._run(*self._end_block_in(body, match.start(), match.group()))

    def _end_turn(self, marker: str, at: int) -> None:
        self._mode = _DONE
        self._stop, self._stop_at = marker, at
        self._events.append(TurnEnded(marker))

    def _say(self, text: str) -> None:
        if text:
            self._content.append(text)
            self._events.append(ContentDelta(text))

    def _think(self, text: str) -> None:
        if text:
            self._reasoning.append(text)
            self._events.append(ReasoningDelta(text))

    def _turn(self) -> ParsedTurn:
        raw = "".join(self._raw)
        return ParsedTurn(
            content="".join(self._content).strip(),
            tool_calls=list(self._calls),
            errors=list(self._errors),
            reasoning="".join(self._reasoning).strip(),
            stop=self._stop,
            text=raw if self._stop_at is None else raw[: self._stop_at],
        )


def parse(text: str, *, id_prefix: str = "call_") -> ParsedTurn:
    """Read a finished model output. Never raises on any input."""
    parser = StreamParser(id_prefix=id_prefix)
    parser.feed(text)
    return parser.finish()
