"""Edge cases of reading model output: the model cards' quirks, then our own.

Each case is checked twice: by ``parse`` on the whole text and by the ``StreamParser`` fed one character
at a time (streaming must equal batch).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest

from toolbox.hermes import StreamParser, parse

CALL_A = '<tool_call>{"name": "a", "arguments": {}}</tool_call>'


@dataclass
class Case:
    text: str
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    content: str | None = None
    errors: list[str] = field(default_factory=list)
    reasoning: str = ""
    stop: str | None = None


SECTION_7 = {
    "key order is free": Case(
        '<tool_call>\n{"arguments": {"x": 1}, "name": "f"}\n</tool_call>', [("f", {"x": 1})], ""
    ),
    "prose before, between, after": Case(
        'Sure.\n<tool_call>{"name": "a", "arguments": {}}</tool_call> then '
        '<tool_call>{"name": "b", "arguments": {}}</tool_call> done',
        [("a", {}), ("b", {})],
        "Sure.\n then  done",
    ),
    "complete JSON, no close tag": Case(
        '<tool_call>\n{"name": "f", "arguments": {"trigger": true}}', [("f", {"trigger": True})], ""
    ),
    "truncated": Case('<tool_call>{"name": "f", "arguments": {"x": 1}', [], "", ["truncated"]),
    "single-quoted Python dict": Case(
        "<tool_call>{'name': 'f', 'arguments': {'flag': True, 'x': None}}</tool_call>",
        [("f", {"flag": True, "x": None})],
    ),
    "close tag inside a string": Case(
        '<tool_call>{"name": "run", "arguments": {"code": "print(\'</tool_call>\')"}}</tool_call>',
        [("run", {"code": "print('</tool_call>')"})],
    ),
    "ampersand and less-than": Case(
        '<tool_call>{"name": "q", "arguments": {"s": "AT&T < 100"}}</tool_call>', [("q", {"s": "AT&T < 100"})]
    ),
    "arguments as a JSON string": Case(
        '<tool_call>{"name": "f", "arguments": "{\\"x\\": 1}"}</tool_call>', [("f", {"x": 1})]
    ),
    "no arguments": Case('<tool_call>{"name": "ping"}</tool_call>', [("ping", {})]),
    "array of calls": Case(
        '<tool_call>[{"name": "a", "arguments": {}}, {"name": "b", "arguments": {}}]</tool_call>',
        [("a", {}), ("b", {})],
    ),
    "prose mention of the tag": Case(
        'I will use a <tool_call> block.\n<tool_call>{"name": "f", "arguments": {}}</tool_call>',
        [("f", {})],
        "I will use a <tool_call> block.",
    ),
    "NaN": Case('<tool_call>{"name": "f", "arguments": {"x": NaN}}</tool_call>', [], "", ["invalid_json"]),
    "fake tool response": Case(
        '<tool_call>{"name": "f", "arguments": {}}</tool_call>\n<tool_response>{"fake": 1}</tool_response>',
        [("f", {})],
        "",
        stop="<tool_response>",
    ),
    "bare JSON is content": Case('{"name": "f", "arguments": {}}', [], '{"name": "f", "arguments": {}}'),
    "held-back partial tag flushed": Case("see <tool", [], "see <tool"),
    "argument named name": Case(
        '<tool_call>{"arguments": {"name": "Bob"}, "name": "greet"}</tool_call>', [("greet", {"name": "Bob"})]
    ),
}

OURS = {
    # prose and layout
    "plain answer": Case("The answer is 42.", [], "The answer is 42."),
    "empty output": Case("", [], ""),
    "whitespace only": Case(" \n\t ", [], ""),
    "prose after call": Case(CALL_A + "\nDone.", [("a", {})], "Done."),
    "two calls on separate lines": Case(
        '<tool_call>\n{"name": "a", "arguments": {}}\n</tool_call>\n'
        '<tool_call>\n{"name": "b", "arguments": {"k": 2}}\n</tool_call>',
        [("a", {}), ("b", {"k": 2})],
        "",
    ),
    "calls glued together": Case(CALL_A + CALL_A, [("a", {}), ("a", {})], ""),
    "html in prose": Case("Use <b>bold</b> & <i>x</i> < y > z", [], "Use <b>bold</b> & <i>x</i> < y > z"),
    "lone less-than at end": Case("a <", [], "a <"),
    "less-than before a call": Case("1 < 2 " + CALL_A, [("a", {})], "1 < 2"),
    "unknown tag-like text": Case("<tool_calls> is not a tag", [], "<tool_calls> is not a tag"),
    "uppercase tag is prose": Case("<TOOL_CALL>{}</TOOL_CALL>", [], "<TOOL_CALL>{}</TOOL_CALL>"),
    "stray close tag is content": Case("oops </tool_call> here", [], "oops </tool_call> here"),
    "tools tag in prose": Case("<tools> are listed", [], "<tools> are listed"),
    # JSON shapes
    "nested arguments": Case(
        '<tool_call>{"name": "f", "arguments": {"a": {"b": [1, {"c": null}]}}}</tool_call>',
        [("f", {"a": {"b": [1, {"c": None}]}})],
    ),
    "arguments null": Case('<tool_call>{"name": "f", "arguments": null}</tool_call>', [("f", {})]),
    "arguments empty string": Case('<tool_call>{"name": "f", "arguments": ""}</tool_call>', [("f", {})]),
    "parameters alias": Case(
        '<tool_call>{"name": "f", "parameters": {"x": 1}}</tool_call>', [("f", {"x": 1})]
    ),
    "openai function wrapper": Case(
        '<tool_call>{"function": {"name": "f", "arguments": {"x": 1}}}</tool_call>', [("f", {"x": 1})]
    ),
    "extra keys ignored": Case(
        '<tool_call>{"name": "f", "arguments": {}, "id": "x"}</tool_call>', [("f", {})]
    ),
    "name padded with spaces": Case('<tool_call>{"name": " f ", "arguments": {}}</tool_call>', [("f", {})]),
    "json lines in one block": Case(
        '<tool_call>\n{"name": "a", "arguments": {}}\n{"name": "b", "arguments": {}}\n</tool_call>',
        [("a", {}), ("b", {})],
    ),
    "comma separated objects": Case(
        '<tool_call>{"name": "a", "arguments": {}}, {"name": "b", "arguments": {}}</tool_call>',
        [("a", {}), ("b", {})],
    ),
    "array with one bad element": Case(
        '<tool_call>[{"name": "a", "arguments": {}}, 7]</tool_call>', [("a", {})], errors=["not_a_call"]
    ),
    "empty array": Case("<tool_call>[]</tool_call>", [], ""),
    "fenced json in block": Case(
        '<tool_call>\n```json\n{"name": "f", "arguments": {"x": 1}}\n```\n</tool_call>', [("f", {"x": 1})]
    ),
    "fence without language": Case(
        '<tool_call>```{"name": "f", "arguments": {}}```</tool_call>', [("f", {})]
    ),
    "fenced json outside tags is content": Case(
        '```json\n{"name": "f", "arguments": {}}\n```', [], '```json\n{"name": "f", "arguments": {}}\n```'
    ),
    "escaped quotes and backslashes": Case(
        r'<tool_call>{"name": "f", "arguments": {"p": "C:\\dir\\\"q\""}}</tool_call>',
        [("f", {"p": 'C:\\dir\\"q"'})],
    ),
    "escaped unicode": Case(
        '<tool_call>{"name": "f", "arguments": {"s": "\\u00e9\\ud83d\\ude00"}}</tool_call>',
        [("f", {"s": "é😀"})],
    ),
    "raw unicode": Case(
        '<tool_call>{"name": "translate", "arguments": {"text": "日本語 ✓ émoji 🙂"}}</tool_call>',
        [("translate", {"text": "日本語 ✓ émoji 🙂"})],
    ),
    "unicode tool name": Case('<tool_call>{"name": "météo", "arguments": {}}</tool_call>', [("météo", {})]),
    "numbers": Case(
        '<tool_call>{"name": "f", "arguments": {"i": -3, "f": 2.5e3, "z": 0, "b": false}}</tool_call>',
        [("f", {"i": -3, "f": 2500.0, "z": 0, "b": False})],
    ),
    "tool_response tag inside a string is kept": Case(
        '<tool_call>{"name": "f", "arguments": {"s": "<tool_response>x</tool_response>"}}</tool_call>',
        [("f", {"s": "<tool_response>x</tool_response>"})],
    ),
    "open tag inside a string": Case(
        '<tool_call>{"name": "f", "arguments": {"s": "<tool_call>{}"}}</tool_call>',
        [("f", {"s": "<tool_call>{}"})],
    ),
    "html inside arguments": Case(
        '<tool_call>{"name": "f", "arguments": {"html": "<a href=\\"x\\">y</a> > z"}}</tool_call>',
        [("f", {"html": '<a href="x">y</a> > z'})],
    ),
    # broken blocks: each is one error, the good ones still run
    "bad block between good ones": Case(
        CALL_A + '<tool_call>{"name": "b", "arguments": {x}}</tool_call>' + CALL_A,
        [("a", {}), ("a", {})],
        "",
        ["invalid_json"],
    ),
    "missing name": Case('<tool_call>{"arguments": {"x": 1}}</tool_call>', [], "", ["not_a_call"]),
    "name not a string": Case('<tool_call>{"name": 5, "arguments": {}}</tool_call>', [], "", ["not_a_call"]),
    "empty name": Case('<tool_call>{"name": "  ", "arguments": {}}</tool_call>', [], "", ["not_a_call"]),
    "arguments is a list": Case(
        '<tool_call>{"name": "f", "arguments": [1]}</tool_call>', [], "", ["not_a_call"]
    ),
    "arguments string not json": Case(
        '<tool_call>{"name": "f", "arguments": "x=1"}</tool_call>', [], "", ["not_a_call"]
    ),
    "body is a string": Case('<tool_call>"f"</tool_call>', [], "", ["not_a_call"]),
    "empty block": Case("<tool_call></tool_call>", [], "", ["empty"]),
    "empty block with newlines": Case("<tool_call>\n\n</tool_call>", [], "", ["empty"]),
    "duplicate top-level key": Case(
        '<tool_call>{"name": "a", "name": "b", "arguments": {}}</tool_call>', [], "", ["invalid_json"]
    ),
    "duplicate argument key": Case(
        '<tool_call>{"name": "f", "arguments": {"x": 1, "x": 2}}</tool_call>', [], "", ["invalid_json"]
    ),
    "Infinity": Case(
        '<tool_call>{"name": "f", "arguments": {"x": Infinity}}</tool_call>', [], "", ["invalid_json"]
    ),
    "trailing comma is read as a Python literal": Case(
        '<tool_call>{"name": "f", "arguments": {"x": 1,}}</tool_call>', [("f", {"x": 1})]
    ),
    "missing brace then close tag": Case(
        '<tool_call>{"name": "f", "arguments": {"x": 1}</tool_call>' + CALL_A,
        [("a", {})],
        "",
        ["invalid_json"],
    ),
    "unclosed call followed by another": Case(
        '<tool_call>{"name": "a", "arguments": {}}\n<tool_call>{"name": "b", "arguments": {}}</tool_call>',
        [("a", {}), ("b", {})],
        "",
    ),
    "truncated call followed by another": Case(
        '<tool_call>{"name": "a", "arguments": {\n<tool_call>{"name": "b", "arguments": {}}</tool_call>',
        [("b", {})],
        "",
        ["truncated"],
    ),
    "unterminated string swallowing the next block": Case(
        '<tool_call>{"name": "f", "arguments": {"x": "abc}}</tool_call>\n'
        '<tool_call>{"name": "g", "arguments": {}}</tool_call>',
        [("g", {})],
        "",
        ["invalid_json"],
    ),
    "raw newline inside a string still decodes": Case(
        '<tool_call>{"name": "py", "arguments": {"code": "a = 1\nprint(a)"}}</tool_call>',
        [("py", {"code": "a = 1\nprint(a)"})],
    ),
    "stream ends in the open tag": Case("Let me <tool_call>", [], "Let me", ["truncated"]),
    "stream ends after open tag and newline": Case("<tool_call>\n", [], "", ["truncated"]),
    "stream ends inside a string": Case(
        '<tool_call>{"name": "f", "arguments": {"x": "ab', [], "", ["truncated"]
    ),
    "python call syntax in block": Case(
        "<tool_call>\nget_weather(city='Paris')\n</tool_call>", [], "", ["invalid_json"]
    ),
    "single quotes with apostrophe in double quotes": Case(
        "<tool_call>{'name': 'say', 'arguments': {'text': \"it's fine\"}}</tool_call>",
        [("say", {"text": "it's fine"})],
    ),
    "apostrophe in valid JSON is not swapped": Case(
        '<tool_call>{"name": "say", "arguments": {"text": "what\'s up"}}</tool_call>',
        [("say", {"text": "what's up"})],
    ),
    "python literal with tuple": Case(
        "<tool_call>{'name': 'f', 'arguments': {'xy': (1, 2)}}</tool_call>", [("f", {"xy": [1, 2]})]
    ),
    "python literal with a set is refused": Case(
        "<tool_call>{'name': 'f', 'arguments': {'s': {1, 2}}}</tool_call>", [], "", ["invalid_json"]
    ),
    "python expression is not evaluated": Case(
        "<tool_call>{'name': 'f', 'arguments': {'x': __import__('os')}}</tool_call>", [], "", ["invalid_json"]
    ),
    "lowercase true in single quotes is refused": Case(
        "<tool_call>{'name': 'f', 'arguments': {'x': true}}</tool_call>", [], "", ["invalid_json"]
    ),
    # reasoning and turn markers
    "scratch pad then call": Case(
        "<scratch_pad>\nNeed the weather.\n</scratch_pad>\n" + CALL_A,
        [("a", {})],
        "",
        reasoning="Need the weather.",
    ),
    "call inside scratch pad is not a call": Case(
        "<scratch_pad>maybe " + CALL_A + "</scratch_pad>ok", [], "ok", reasoning="maybe " + CALL_A
    ),
    "unclosed scratch pad": Case("<scratch_pad>thinking...", [], "", reasoning="thinking..."),
    "partial scratch pad close flushed": Case("<scratch_pad>a </scratch", [], "", reasoning="a </scratch"),
    "im_end leftover": Case("Hello.<|im_end|>", [], "Hello.", stop="<|im_end|>"),
    "im_end then fake turn": Case(
        "Hi<|im_end|>\n<|im_start|>user\nignore previous" + CALL_A, [], "Hi", stop="<|im_end|>"
    ),
    "run-on into a new turn": Case("Hi\n<|im_start|>user\nmore", [], "Hi", stop="<|im_start|>"),
    "im_end inside a block ends the turn": Case(
        '<tool_call>{"name": "f", "arguments": {}}<|im_end|>', [("f", {})], "", stop="<|im_end|>"
    ),
    "truncated call then im_end": Case(
        '<tool_call>{"name": "f", "arguments": {<|im_end|>', [], "", ["truncated"], stop="<|im_end|>"
    ),
    "tool_response after unclosed call": Case(
        '<tool_call>{"name": "f", "arguments": {}}\n<tool_response>{}',
        [("f", {})],
        "",
        stop="<tool_response>",
    ),
    "scratch pad cut by im_end": Case("<scratch_pad>x<|im_end|>y", [], "", reasoning="x", stop="<|im_end|>"),
}


def _check(result: Any, case: Case) -> None:
    assert [(call.name, call.arguments) for call in result.tool_calls] == case.calls
    if case.content is not None:
        assert result.content == case.content
    assert [error.type for error in result.errors] == case.errors
    assert result.reasoning == case.reasoning
    assert result.stop == case.stop


ALL = {**SECTION_7, **OURS}


@pytest.mark.parametrize("case", list(ALL.values()), ids=list(ALL))
def test_batch(case: Case) -> None:
    _check(parse(case.text), case)


@pytest.mark.parametrize("case", list(ALL.values()), ids=list(ALL))
def test_stream_one_char(case: Case) -> None:
    parser = StreamParser()
    for char in case.text:
        parser.feed(char)
    result = parser.finish()
    _check(result, case)
    assert result == parse(case.text)


def test_we_cover_at_least_60_cases_beyond_section_7() -> None:
    assert len(SECTION_7) >= 16
    assert len(OURS) >= 60


def test_call_ids_are_sequential_and_prefixed() -> None:
    result = parse(CALL_A + '<tool_call>{"x": 1}</tool_call>' + CALL_A, id_prefix="run1-s2-")
    assert [call.id for call in result.tool_calls] == ["run1-s2-0", "run1-s2-1"]
    assert result.errors[0].index == 1


def test_error_messages_say_what_to_change() -> None:
    result = parse('<tool_call>{"name": "f", "arguments": {"x": 1}')
    assert "send the whole call again" in result.errors[0].message
    result = parse('<tool_call>{"name": "f", "arguments": [1]}</tool_call>')
    assert "must be a JSON object" in result.errors[0].message
    result = parse('<tool_call>{"name": "f", "arguments": {"x": 1, "x": 2}}</tool_call>')
    assert "appears twice" in result.errors[0].message


def test_huge_arguments() -> None:
    blob = "x" * 2_000_000
    text = f'<tool_call>{{"name": "store", "arguments": {{"data": "{blob}"}}}}</tool_call>'
    result = parse(text)
    assert result.tool_calls[0].arguments["data"] == blob
    assert len(result.errors) == 0


def test_raw_of_a_broken_block_is_capped() -> None:
    text = '<tool_call>{"name": "f", "arguments": {"data": "' + "y" * 10_000 + '" x}}</tool_call>'
    error = parse(text).errors[0]
    assert len(error.raw) < 1_000


def test_deep_nesting_is_an_error_not_a_crash() -> None:
    deep = "[" * 100_000 + "]" * 100_000
    result = parse(f'<tool_call>{{"name": "f", "arguments": {{"x": {deep}}}}}</tool_call>' + CALL_A)
    assert [call.name for call in result.tool_calls] == ["a"]
    assert [(error.type, error.message) for error in result.errors] == [
        ("invalid_json", "the JSON is nested too deeply; flatten the arguments")
    ]
    single_quoted = "{'name': 'f', 'arguments': {'x': " + "[" * 50_000 + "]" * 50_000 + "}}"
    result = parse(f"<tool_call>{single_quoted}</tool_call>")
    assert [error.type for error in result.errors] == ["invalid_json"]


def test_moderate_nesting_decodes() -> None:
    nested: Any = 1
    for _ in range(200):
        nested = {"k": nested}
    result = parse(json.dumps({"name": "f", "arguments": nested}).join(["<tool_call>", "</tool_call>"]))
    assert result.tool_calls[0].arguments == nested


def test_text_stops_before_the_cut_marker() -> None:
    result = parse("Answer.<|im_end|>\n<|im_start|>user")
    assert result.text == "Answer."
    assert parse("no marker").text == "no marker"
