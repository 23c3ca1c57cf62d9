"""Token counting and the choice of turns to drop when the window would overflow."""

from __future__ import annotations

from orchestrator import context
from orchestrator.runs import user_turn
from toolbox.hermes import turn


def test_the_estimate_never_undercounts_a_byte_per_token_text() -> None:
    counter = context.EstimateCounter()
    assert counter.count("") == 0
    assert counter.count("abc") == 1
    assert counter.count("日本語") == 3  # 9 UTF-8 bytes: each character is likely a token of its own


def test_an_exact_counter_uses_the_tokenizer() -> None:
    assert context.EncoderCounter(lambda text: text.split()).count("one two three") == 3


def test_fit_drops_the_fewest_oldest_turns_and_never_starts_at_a_tool_turn() -> None:
    counter = context.EncoderCounter(lambda text: [0] * len(text))  # a token per character
    turns = [user_turn("a" * 100), turn("assistant", "b" * 100), turn("tool", "c" * 100), user_turn("d" * 10)]
    prefix = "P" * 10
    assert context.fit(counter, prefix, turns, 0, 10_000).drop == 0
    room = len(context.render(prefix, turns[3:], 3))
    fitted = context.fit(counter, prefix, turns, 0, room)
    assert fitted.drop == 3  # dropping 2 would leave the tool turn first
    assert fitted.tokens <= room
    assert context.fit(counter, prefix, turns, 0, 20).drop is None


def test_halve_keeps_the_newer_half() -> None:
    turns = [user_turn("a"), turn("assistant", "b"), turn("tool", "c"), user_turn("d")]
    assert context.halve(turns) == 3
    assert context.halve([user_turn("only")]) is None


def test_the_omission_note_is_rendered_from_the_count_alone() -> None:
    assert context.render("S", ["T"], 0) == "ST<|im_start|>assistant\n"
    assert context.render("S", ["T"], 4) == "S" + context.omitted_note(4) + "T<|im_start|>assistant\n"
