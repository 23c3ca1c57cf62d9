"""``POST /v1/chat/completions``: an agent behind the OpenAI chat-completions shape, so existing clients can
use it as a model. Each request submits a run (with every configured tool) and waits for its result.

Streaming sends the role first and the whole answer as one content chunk when the run ends: workers
report steps, not tokens, so there is nothing finer to stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

from orchestrator.api.errors import ApiError
from orchestrator.api.models import (
    ChatChoice,
    ChatChoiceMessage,
    ChatCompletion,
    ChatRequest,
    Message,
    Run,
    RunRequest,
)
from orchestrator.api.service import Api, submit, view
from orchestrator.api.sse import frame, run_events


def _as_run(request: ChatRequest) -> RunRequest:
    messages = [Message(role=m.role, content=m.content) for m in request.messages]
    return RunRequest(input=messages, model=request.model)


async def start(api: Api, tenant: str, request: ChatRequest) -> Run:
    run = _as_run(request)
    run.tools = list(api.tools)
    return await submit(api, tenant, run, None)


async def wait(api: Api, tenant: str, run_id: str, timeout_s: float) -> Run:
    """The run once it ended; a 504 if it has not within ``timeout_s`` (it goes on running)."""
    try:
        async with asyncio.timeout(timeout_s):
            async with contextlib.aclosing(run_events(api.hub, tenant, run_id, "0-0")) as events:
                async for _ in events:
                    pass
    except TimeoutError:
        raise ApiError(504, "run_timeout", f"run {run_id} did not finish within {timeout_s:g} s") from None
    return await view(api, tenant, run_id)


def _finish_reason(run: Run) -> str:
    if run.status == "failed":
        raise ApiError(502, "run_failed", f"run {run.id} failed")
    return "stop" if run.status == "completed" else "length"


def completion(run: Run) -> ChatCompletion:
    return ChatCompletion(
        id=f"chatcmpl-{run.id}",
        created=int(run.created_at),
        model=run.model,
        choices=[
            ChatChoice(message=ChatChoiceMessage(content=run.output or ""), finish_reason=_finish_reason(run))
        ],
        usage=run.usage,
    )


def _chunk(run: Run, delta: dict[str, str], finish: str | None = None) -> str:
    body = {
        "id": f"chatcmpl-{run.id}",
        "object": "chat.completion.chunk",
        "created": int(run.created_at) or int(time.time()),
        "model": run.model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return frame(body)


async def stream(api: Api, tenant: str, run: Run, timeout_s: float) -> AsyncIterator[str]:
    yield _chunk(run, {"role": "assistant"})
    try:
        done = await wait(api, tenant, run.id, timeout_s)
        reason = _finish_reason(done)
    except ApiError as exc:  # the status line is sent already: the error travels in the stream
        yield frame({"error": {"type": "api_error", "code": exc.code, "message": exc.message}})
        return
    yield _chunk(done, {"content": done.output or ""})
    yield _chunk(done, {}, reason)
    yield frame("[DONE]")
