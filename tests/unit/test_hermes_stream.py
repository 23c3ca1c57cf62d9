"""Properties of the incremental parser: streaming equals batch, events are timely, nothing raises."""

from __future__ import annotations

import itertools
import json
import random
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from toolbox.hermes import (
    ContentDelta,
    ReasoningDelta,
    StreamEvent,
    StreamParser,
    ToolCallFailed,
    ToolCallReady,
    TurnEnded,
    assistant_turn,
    parse,
)
from toolbox.protocol import AssistantMessage, ToolCall

TAGS = [
    "<tool_call>",
    "</tool_call>",
    "<scratch_pad>",
    "</scratch_pad>",
    "<tool_response>",
    "<|im_end|>",
    "<|im_start|>",
    "<tools>",
    "<tool",
    "</tool_",
    "<",
    ">",
]
NOISE = st.sampled_from([*TAGS, '"', "\\", "\n", " ", "{", "}", "[", "]", "'", ",", ":", "```", "NaN", "é🙂"])

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=False, allow_infinity=False, width=32)
    | st.lists(st.sampled_from(list("ab <>&\"\\\n'é") + TAGS), max_size=6).map("".join),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text("abxyz", max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
names = st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True)
arguments = st.dictionaries(st.text("abcxyz_", min_size=1, max_size=5), json_values, max_size=4)


@st.composite
def call_block(draw: st.DrawFn) -> str:
    obj: dict[str, Any] = {"name": draw(names), "arguments": draw(arguments)}
    if draw(st.booleans()):
        obj = {"arguments": obj["arguments"], "name": obj["name"]}
    body = json.dumps(obj, ensure_ascii=draw(st.booleans()))
    style = draw(st.sampled_from(["plain", "newlines", "python", "cut", "unclosed", "array"]))
    if style == "python":
        body = repr(obj)
    elif style == "array":
        body = json.dumps([obj, obj])
    elif style == "cut":
        body = body[: draw(st.integers(0, len(body)))]
    if style == "newlines":
        return f"<tool_call>\n{body}\n</tool_call>"
    if style in ("cut", "unclosed"):
        return f"<tool_call>{body}"
    return f"<tool_call>{body}</tool_call>"


fragments = st.lists(
    st.one_of(call_block(), NOISE, st.text(max_size=8)),
    max_size=10,
)


def _chunked(text: str, cuts: list[int]) -> list[str]:
    points = sorted({cut % (len(text) + 1) for cut in cuts} | {0, len(text)})
    return [text[a:b] for a, b in itertools.pairwise(points)]


def _stream(chunks: list[str]) -> tuple[Any, list[StreamEvent]]:
    parser = StreamParser()
    events: list[StreamEvent] = []
    for chunk in chunks:
        events.extend(parser.feed(chunk))
    result = parser.finish()
    events.extend(parser.drain())
    return result, events


FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(fragments, st.lists(st.integers(0, 10_000), max_size=30))
def test_streaming_equals_batch_for_any_chunking(parts: list[str], cuts: list[int]) -> None:
    text = "".join(parts)
    result, _ = _stream(_chunked(text, cuts))
    assert result == parse(text)


@FAST
@given(fragments)
def test_one_character_at_a_time_equals_batch(parts: list[str]) -> None:
    text = "".join(parts)
    result, _ = _stream(list(text))
    assert result == parse(text)


@FAST
@given(fragments, st.lists(st.integers(0, 10_000), max_size=10))
def test_events_add_up_to_the_turn(parts: list[str], cuts: list[int]) -> None:
    text = "".join(parts)
    result, events = _stream(_chunked(text, cuts))
    content = "".join(e.text for e in events if isinstance(e, ContentDelta))
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    assert content.strip() == result.content
    assert reasoning.strip() == result.reasoning
    assert [e.call for e in events if isinstance(e, ToolCallReady)] == result.tool_calls
    assert [e.error for e in events if isinstance(e, ToolCallFailed)] == result.errors
    assert [e.marker for e in events if isinstance(e, TurnEnded)] == ([result.stop] if result.stop else [])


@settings(max_examples=500, deadline=None)
@given(
    st.text(alphabet=st.characters(codec="utf-8"), max_size=200) | st.lists(NOISE, max_size=40).map("".join)
)
def test_parser_never_raises_on_garbage(text: str) -> None:
    result = parse(text)
    assert isinstance(result.content, str)
    _stream(list(text[:80]))


def test_random_fuzz_never_raises_and_streaming_matches() -> None:
    rng = random.Random(20261122)
    pieces = [*TAGS, '{"name": "f", "arguments": {"x": 1}}', '"', "\\", "\n", "{", "}", "'", "x", "```"]
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 20)))
        chunks = []
        pos = 0
        while pos < len(text):
            size = rng.randint(1, 6)
            chunks.append(text[pos : pos + size])
            pos += size
        assert _stream(chunks)[0] == parse(text)


@FAST
@given(
    st.lists(st.tuples(names, arguments), min_size=1, max_size=4),
    st.sampled_from(["tool_use", "tool_use_arguments_first"]),
)
def test_render_then_parse_round_trips_calls(calls: list[tuple[str, dict[str, Any]]], style: str) -> None:
    message = AssistantMessage(
        tool_calls=tuple(
            ToolCall(id=f"c{n}", name=name, arguments=args) for n, (name, args) in enumerate(calls)
        )
    )
    rendered = assistant_turn(message, style=style)
    body = rendered.removeprefix("<|im_start|>assistant\n").removesuffix("<|im_end|>\n")
    result = parse(body)
    assert [(call.name, call.arguments) for call in result.tool_calls] == calls
    assert result.errors == []


def test_a_call_is_reported_the_moment_its_block_closes() -> None:
    parser = StreamParser()
    head = 'Checking.\n<tool_call>\n{"name": "f", "arguments": {"x": 1}}\n</tool_call'
    assert not any(isinstance(e, ToolCallReady) for e in parser.feed(head))
    events = parser.feed(">")
    assert [e.call.name for e in events if isinstance(e, ToolCallReady)] == ["f"]
    # The model goes on generating; the call was already out.
    parser.feed('\n<tool_call>{"name": "g", "arguments": {}}')
    assert parser.drain() == []
    parser.finish()
    assert [e.call.name for e in parser.drain() if isinstance(e, ToolCallReady)] == ["g"]


def test_content_streams_without_waiting_for_the_end() -> None:
    parser = StreamParser()
    assert parser.feed("Hello") == [ContentDelta("Hello")]
    assert parser.feed(" wor") == [ContentDelta(" wor")]
    assert parser.feed("ld <") == [ContentDelta("ld ")]
    assert parser.feed("b>") == [ContentDelta("<"), ContentDelta("b>")]


def test_turn_end_is_signalled_and_later_input_ignored() -> None:
    parser = StreamParser()
    events = parser.feed("Done.<|im_end|>more")
    assert events[-1] == TurnEnded("<|im_end|>")
    assert parser.done
    assert parser.feed("ignored") == []
    assert parser.finish().content == "Done."


def test_finish_is_idempotent_and_feed_after_finish_is_ignored() -> None:
    parser = StreamParser()
    parser.feed("abc")
    first = parser.finish()
    assert parser.feed("def") == []
    assert parser.finish() is first
