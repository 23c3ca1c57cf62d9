"""A chat engine that replays exact Hermes model outputs: the one stand-in for a GPU model.

The script is a list of outputs (used in order) or a function of the prompt (which makes the engine
stateless, so a run resumed in another process gets the same answers). Output is cut into token-sized
pieces and streamed, honouring stop strings and ``max_tokens`` like a real server. An optional latency
model (time to first token plus time per token) lets load tests imitate a large model.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass

from orchestrator.errors import ScriptError
from orchestrator.ports import Chunk, CompletionRequest

# Roughly how a Hermes tokenizer cuts text: the ChatML and Hermes tags are single special tokens; then a
# leading space with a word, up to three digits, a run of whitespace, or up to three punctuation marks.
_SPECIAL = r"<\|im_(?:start|end)\|>|</?(?:tool_call|tool_response|tools|scratch_pad|schema)>"
_TOKEN = re.compile(_SPECIAL + r"| ?[A-Za-z]+| ?[0-9]{1,3}|\s+|[^\sA-Za-z0-9]{1,3}", re.DOTALL)

Script = Sequence[str] | Callable[[str], str]


@dataclass(frozen=True)
class Latency:
    """Seconds to the first token and per token after it (a 70B on 8 GPUs: about 0.15 and 0.02)."""

    first_token_s: float = 0.0
    per_token_s: float = 0.0


def tokenize(text: str) -> list[str]:
    """The scripted engine's token pieces; they concatenate back to ``text``."""
    return _TOKEN.findall(text)


class ScriptedEngine:
    """Replays ``script``; records every request so tests can check the prompts byte for byte."""

    def __init__(
        self, script: Script, *, model: str = "scripted-hermes", latency: Latency | None = None
    ) -> None:
        self._script = script
        self._model = model
        self._latency = latency or Latency()
        self._next = 0
        self.requests: list[CompletionRequest] = []

    @property
    def model(self) -> str:
        return self._model

    def assert_complete(self) -> None:
        """Raise unless every scripted output was used (list scripts only)."""
        if not callable(self._script) and self._next != len(self._script):
            raise ScriptError(
                f"{len(self._script) - self._next} of {len(self._script)} scripted outputs unused"
            )

    def _output(self, prompt: str) -> str:
        if callable(self._script):
            return self._script(prompt)
        if self._next >= len(self._script):
            raise ScriptError(
                f"the script has only {len(self._script)} outputs; a request asked for one more"
            )
        self._next += 1
        return self._script[self._next - 1]

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[Chunk, None]:
        self.requests.append(request)
        text, finish = _cut(self._output(request.prompt), request.stop)
        pieces = tokenize(text)
        if len(pieces) > request.max_tokens:
            pieces, finish = pieces[: request.max_tokens], "length"
        if self._latency.first_token_s:
            await asyncio.sleep(self._latency.first_token_s)
        for piece in pieces:
            yield Chunk(text=piece)
            # A zero-latency engine still yields to the event loop, as a network stream would.
            if self._latency.per_token_s:
                await asyncio.sleep(self._latency.per_token_s)
        prompt_tokens = len(request.prompt) // 4 + 1  # cheap: the prompt can be long
        yield Chunk(finish_reason=finish, prompt_tokens=prompt_tokens, completion_tokens=len(pieces))


def _cut(text: str, stop: Sequence[str]) -> tuple[str, str]:
    """The output up to the first stop string, and the finish reason, as a server reports them."""
    at = min((i for i in (text.find(s) for s in stop if s) if i >= 0), default=-1)
    return (text, "stop") if at < 0 else (text[:at], "stop")
