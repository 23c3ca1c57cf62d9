"""Fitting a run's prompt into the model's context window.

Token counting sits behind ``TokenCounter``: exact when a tokenizer's ``encode`` is at hand
(``EncoderCounter``), otherwise a conservative estimate (``EstimateCounter``) that over-counts rather
than under-counts, so a prompt that we think fits really does.

When the next prompt would not leave room for the answer, the oldest turns of the window are dropped
(the run's system turns, with the tools, are never dropped; nor are the newest turns) and a short system
note in their place tells the model that earlier turns were omitted. The window never starts with a
``tool`` turn, which would leave results without the calls that asked for them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from toolbox.hermes import turn

GENERATION_PROMPT = "<|im_start|>assistant\n"
_TOOL_TURN = "<|im_start|>tool\n"


class TokenCounter(Protocol):
    def count(self, text: str) -> int: ...


class EstimateCounter:
    """An upper-bound estimate: a token per 3 UTF-8 bytes (BPE vocabularies average nearer 4)."""

    def count(self, text: str) -> int:
        return math.ceil(len(text.encode("utf-8")) / 3)


class EncoderCounter:
    """Exact counts from a tokenizer's ``encode`` (e.g. ``tokenizer.encode`` without special tokens)."""

    def __init__(self, encode: Callable[[str], Sequence[int]]) -> None:
        self._encode = encode

    def count(self, text: str) -> int:
        return len(self._encode(text))


class CachedCounter:
    """Remembers the counts of recent texts: each step re-counts the whole window, whose turns repeat."""

    def __init__(self, counter: TokenCounter, size: int = 65536) -> None:
        self._counter, self._size = counter, size
        self._counts: dict[str, int] = {}

    def count(self, text: str) -> int:
        found = self._counts.get(text)
        if found is None:
            if len(self._counts) >= self._size:
                self._counts.clear()
            found = self._counts[text] = self._counter.count(text)
        return found


def omitted_note(count: int) -> str:
    """The system turn that stands in for ``count`` dropped turns (rendered from the count alone, so a
    resumed run renders the same bytes)."""
    return turn(
        "system", f"[{count} earlier turns of this conversation were omitted to fit the context window]"
    )


def render(prefix: str, turns: Sequence[str], window_start: int, tail: str = "") -> str:
    """The prompt: system prefix, the omission note if turns were dropped, the window, ``tail`` (a turn
    shown for this model call only), the assistant cue."""
    note = omitted_note(window_start) if window_start else ""
    return f"{prefix}{note}{''.join(turns)}{tail}{GENERATION_PROMPT}"


@dataclass(frozen=True)
class Fit:
    """How many more turns to drop from the window's start (0: it fits as it is), or ``None``: even
    the newest turn alone does not fit."""

    drop: int | None
    tokens: int


def fit(
    counter: TokenCounter, prefix: str, turns: Sequence[str], window_start: int, room: int, *, tail: str = ""
) -> Fit:
    """The smallest drop that makes the prompt fit in ``room`` tokens."""
    sizes = [counter.count(t) for t in turns]
    fixed = counter.count(prefix) + counter.count(tail) + counter.count(GENERATION_PROMPT)
    total = fixed + sum(sizes) + (counter.count(omitted_note(window_start)) if window_start else 0)
    if total <= room:
        return Fit(0, total)
    kept = sum(sizes)
    for drop in range(1, len(turns)):
        kept -= sizes[drop - 1]
        if turns[drop].startswith(_TOOL_TURN):
            continue
        tokens = fixed + kept + counter.count(omitted_note(window_start + drop))
        if tokens <= room:
            return Fit(drop, tokens)
    return Fit(None, total)


def halve(turns: Sequence[str]) -> int | None:
    """How many turns to drop to halve the window (never leaving a ``tool`` turn first), or ``None``."""
    for drop in range(max(1, len(turns) // 2), len(turns)):
        if not turns[drop].startswith(_TOOL_TURN):
            return drop
    return None
