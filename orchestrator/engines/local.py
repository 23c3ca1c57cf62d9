"""The ``ChatEngine`` port on a model in this process (``orchestrator.local_model.LocalModel``).

``LocalModel.generate`` is a blocking generator that decodes one token per step, so it runs in a worker
thread and hands each piece to the event loop through a queue. When the consumer stops reading (a break,
``aclose()``, a cancelled task), a flag tells the thread to stop at its next token, and the stream waits
for the thread before it returns: the model is free again, and no CPU is spent on text nobody reads.

A request's ``constraint`` (an xgrammar structural tag) is applied when ``constrain`` is on, which is the
default: a small model writes valid tool calls only when the grammar holds it to them. ``top_p`` is not
supported by the local model and is ignored; temperature 0 decodes greedily.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator, Callable, Iterator

from orchestrator.errors import EngineError
from orchestrator.local_model import Generated, GenerateOptions, LocalModel
from orchestrator.ports import Chunk, CompletionRequest

#: The worker thread hands over a piece, the exception that ended generation, or ``None`` at the end.
_Put = Callable[[Generated | BaseException | None], None]


class LocalEngine:
    """Streams completions from ``model``; one generation at a time (the model's own lock)."""

    def __init__(self, model: LocalModel, *, constrain: bool = True, name: str | None = None) -> None:
        self._model = model
        self._constrain = constrain
        self._name = name or model.name

    @property
    def model(self) -> str:
        return self._name

    def options(self, request: CompletionRequest) -> GenerateOptions:
        constraint = request.constraint if self._constrain else None
        return GenerateOptions(
            max_tokens=request.max_tokens,
            stop=request.stop,
            constraint=constraint,
            temperature=request.sampling.temperature,
            seed=request.sampling.seed,
        )

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[Chunk, None]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Generated | BaseException | None] = asyncio.Queue()
        stop = threading.Event()

        def put(item: Generated | BaseException | None) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        pieces = self._model.generate(request.prompt, self.options(request))
        worker = loop.run_in_executor(None, _produce, pieces, stop, put)
        try:
            while (item := await queue.get()) is not None:
                if isinstance(item, BaseException):
                    raise EngineError(f"{self._name}: {type(item).__name__}: {item}") from item
                yield _chunk(item)
        finally:
            stop.set()
            # The thread stops at its next token; wait for it, so the model's lock is free on return.
            await asyncio.shield(worker)


def _produce(pieces: Iterator[Generated], stop: threading.Event, put: _Put) -> None:
    """The worker thread: pull pieces until the end, an error, or the consumer's stop flag."""
    try:
        for piece in pieces:
            if stop.is_set():
                break
            put(piece)
    except Exception as exc:  # handed to the consumer, which raises it as an EngineError
        put(exc)
    finally:
        close = getattr(pieces, "close", None)
        if close is not None:
            close()  # releases the model's lock at once
        put(None)


def _chunk(piece: Generated) -> Chunk:
    if piece.finish_reason is None:
        return Chunk(text=piece.text)
    return Chunk(
        text=piece.text,
        finish_reason=piece.finish_reason,
        prompt_tokens=piece.prompt_tokens,
        completion_tokens=piece.completion_tokens,
    )
