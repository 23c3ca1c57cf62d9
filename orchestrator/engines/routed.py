"""Several models behind one ``ChatEngine``: each request goes to the engine of the model its run asked for.

The service serves every configured model from the same orchestrator workers; a run names its model once,
at submission (``RunSpec.model``), and every turn of it carries that name (``CompletionRequest.model``).
An empty name means the first (default) model. A name no engine serves is our fault, not the model's:
``EngineError``, which fails the run with a message that lists the served names.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Mapping

from orchestrator.errors import EngineError
from orchestrator.ports import ChatEngine, Chunk, CompletionRequest


class ModelRouter:
    """Dispatches on ``request.model``; the first engine of ``engines`` is the default."""

    def __init__(self, engines: Mapping[str, ChatEngine]) -> None:
        if not engines:
            raise ValueError("ModelRouter needs at least one engine")
        self._engines = dict(engines)
        self._default = next(iter(self._engines))

    @property
    def model(self) -> str:
        return self._default

    @property
    def models(self) -> tuple[str, ...]:
        return tuple(self._engines)

    def engine(self, name: str) -> ChatEngine:
        try:
            return self._engines[name or self._default]
        except KeyError:
            served = ", ".join(self._engines)
            raise EngineError(f"no engine serves model {name!r} (served: {served})") from None

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[Chunk, None]:
        async for chunk in self.engine(request.model).stream(request):
            yield chunk
