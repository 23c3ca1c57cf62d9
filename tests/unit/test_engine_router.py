"""ModelRouter: each request goes to the engine of the model its run named; an unknown name fails clearly."""

from __future__ import annotations

import asyncio

import pytest

from orchestrator.engines import ModelRouter, ScriptedEngine
from orchestrator.errors import EngineError
from orchestrator.ports import CompletionRequest


async def _text(router: ModelRouter, model: str) -> str:
    pieces = [chunk.text async for chunk in router.stream(CompletionRequest("hi", model=model))]
    return "".join(pieces)


def test_requests_go_to_the_named_model_and_empty_means_the_first() -> None:
    router = ModelRouter(
        {"big": ScriptedEngine(lambda _: "from big"), "small": ScriptedEngine(lambda _: "from small")}
    )
    assert router.model == "big" and router.models == ("big", "small")
    assert asyncio.run(_text(router, "small")) == "from small"
    assert asyncio.run(_text(router, "big")) == "from big"
    assert asyncio.run(_text(router, "")) == "from big"


def test_an_unknown_model_is_an_engine_error_naming_the_served_ones() -> None:
    router = ModelRouter({"big": ScriptedEngine(lambda _: "x")})
    with pytest.raises(EngineError, match=r"'huge'.*served: big"):
        asyncio.run(_text(router, "huge"))
    with pytest.raises(ValueError, match="at least one engine"):
        ModelRouter({})
