"""``/v1/responses``: the agent in OpenAI's Responses shape. A response is a run (its id is the run's, and
``GET /v1/runs/{id}`` shows it too); a ``previous_response_id`` chain is the run's thread, continued by
one run at a time and only from its latest (a chain does not fork); all of it lives in the store.

A new response is one write (its submission); a response that continues another reads that one first
(its thread, what it awaits), then writes: two round trips. ``store: false`` deletes the response once
it is answered (not streamed, not in the background). A response that is neither streamed nor in the
background is waited for up to ``Api.wait_s`` and shown as it stands then.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import uuid
from typing import Any

from orchestrator.api.chat_prompt import bad
from orchestrator.api.errors import ApiError, not_found
from orchestrator.api.response_input import conversation, items_of
from orchestrator.api.response_items import items_of_turns
from orchestrator.api.response_models import InputItems, ResponseRequest
from orchestrator.api.response_tools import output_schema, refuse_unsupported, toolset
from orchestrator.api.service import Api, check_id, check_text
from orchestrator.api.sse import run_events
from orchestrator.errors import UnreadableRunError
from orchestrator.ports import RunSpec, Sampling
from orchestrator.records import RunRecord, run_status
from orchestrator.runs import first_checkpoint, new_run
from orchestrator.store_ports import StoredRun

PREFIX = "resp_"
_STATUS = {"requires_action": "completed"}  # a response whose calls await the client has completed


def tag_of(response_id: str) -> str:
    """The short part of a response's id that its items' ids and call ids carry."""
    return response_id.removeprefix(PREFIX)[:16]


def is_response(spec: RunSpec) -> bool:
    return spec.run_id.startswith(PREFIX) and spec.request.get("object") == "response"


async def create(api: Api, tenant: str, body: ResponseRequest, idempotency_key: str | None) -> StoredRun:
    """Submit the response's run; returns its spec and record as written."""
    check_text(body, 400)
    refuse_unsupported(body)
    model = body.model or api.models[0]
    if model not in api.models:
        raise bad("model", f"no model {model!r} (see GET /v1/models)")
    previous = await _previous(api, tenant, body.previous_response_id)
    run_id = f"{PREFIX}{uuid.uuid4().hex}"
    spec, turns = _spec(api, tenant, body, run_id, model=model, previous=previous)
    return await _submitted(api, spec, turns, body, previous=previous, idempotency_key=idempotency_key)


def _spec(
    api: Api, tenant: str, body: ResponseRequest, run_id: str, *, model: str, previous: StoredRun | None
) -> tuple[RunSpec, tuple[str, ...]]:
    tools = toolset(body, api.tools)
    schema = output_schema(body)
    items = items_of(body.input, tag_of(run_id))
    awaited = previous[1].awaiting if previous is not None else ()
    talk = conversation(items, awaited, tag_of(previous[0].run_id) if previous is not None else "")
    system = "\n\n".join(part for part in (body.instructions, *talk.system) if part) or None
    limits = dataclasses.replace(
        api.limits,
        max_tokens=body.max_output_tokens or api.limits.max_tokens,
        max_tool_calls=body.max_tool_calls,
    )
    default = Sampling()
    sampling = Sampling(
        temperature=default.temperature if body.temperature is None else body.temperature,
        top_p=default.top_p if body.top_p is None else body.top_p,
    )
    thread = previous[0].thread_id if previous is not None else f"thread_{uuid.uuid4().hex}"
    spec = new_run(
        tenant=tenant,
        thread_id=thread,
        tools=tools.tools,
        client_tools=tools.client,
        system=system,
        json_schema=schema,
        limits=limits,
        sampling=sampling,
        run_id=run_id,
        constrained=model in api.constrained or bool(tools.choice),
        tool_choice=tools.choice,
        model=model,
        request=_echo(body, [dict(item) for item in talk.items]),
    )
    return spec, talk.turns


def _echo(body: ResponseRequest, items: list[dict[str, Any]]) -> dict[str, Any]:
    """What the response shows of its request (and ``input_items`` lists)."""
    shown = body.model_dump(mode="json", exclude={"input", "stream", "stream_options", "include"})
    return {"object": "response", **shown, "input": items}


async def _previous(api: Api, tenant: str, response_id: str | None) -> StoredRun | None:
    if response_id is None:
        return None
    found = await api.store.record(tenant, response_id)
    if found is None or not is_response(found[0]):
        raise ApiError(
            404, "response_not_found", f"no response {response_id!r}", param="previous_response_id"
        )
    if run_status(found[1]) in ("queued", "in_progress"):
        message = f"response {response_id} is still in progress; wait for it (or cancel it)"
        raise ApiError(409, "response_in_progress", message, param="previous_response_id")
    return found


async def _submitted(
    api: Api,
    spec: RunSpec,
    turns: tuple[str, ...],
    body: ResponseRequest,
    *,
    previous: StoredRun | None,
    idempotency_key: str | None,
) -> StoredRun:
    fingerprint = hashlib.sha256(body.model_dump_json().encode()).hexdigest()
    try:
        done = await api.store.submit(
            spec,
            first_checkpoint(spec, []),
            None,
            earlier=turns,
            claim=True,
            existing_thread=previous is not None,
            follows=previous[0].run_id if previous is not None else None,
            idempotency=None if idempotency_key is None else (idempotency_key, fingerprint),
        )
    except UnreadableRunError:
        raise bad(
            "body", "this response could not be stored so that it reads back; simplify its schemas"
        ) from None
    if done.kind == "created":
        return spec, done.record
    if done.kind == "replay":
        if done.fingerprint != fingerprint:
            raise ApiError(409, "idempotency_conflict", "this Idempotency-Key was used with a different body")
        found = await api.store.record(spec.tenant, done.run_id)
        if found is None:
            raise not_found("response", done.run_id)
        return found
    if done.kind == "no_thread":
        raise ApiError(404, "response_not_found", "the previous response's conversation has expired")
    latest = f"; continue from {done.run_id}" if done.kind == "moved" and done.run_id else ""
    message = f"the conversation has moved on past {body.previous_response_id}{latest}"
    if done.kind == "busy":
        message = f"the conversation has a response in progress ({done.run_id}); wait for it"
    raise ApiError(409, "conversation_busy", message, param="previous_response_id")


async def stored(api: Api, tenant: str, response_id: str) -> tuple[StoredRun, list[str]]:
    """The response's run and the turns it committed; 404 unless it is the tenant's response."""
    found = await api.store.run_turns(tenant, check_id("response", response_id))
    if found is None or not is_response(found[0][0]):
        raise not_found("response", response_id)
    return found


async def retrieve(api: Api, tenant: str, response_id: str) -> dict[str, Any]:
    (spec, record), turns = await stored(api, tenant, response_id)
    return view(spec, record, turns)


def view(spec: RunSpec, record: RunRecord, turns: list[str] | None) -> dict[str, Any]:
    """The response as OpenAI shows one; ``turns`` ``None``: as it was created (queued, no output yet)."""
    asked = spec.request
    keys = ("instructions", "max_output_tokens", "max_tool_calls", "user", "previous_response_id")
    shown = {key: asked.get(key) for key in (*keys, "temperature", "top_p", "truncation")}
    shown |= {
        "id": spec.run_id,
        "object": "response",
        "created_at": int(record.created_at),
        "model": spec.model,
        "metadata": asked.get("metadata") or {},
        "tools": asked.get("tools") or [],
        "tool_choice": asked.get("tool_choice") or "auto",
        "text": asked.get("text") or {"format": {"type": "text"}},
        "parallel_tool_calls": True,
        "background": bool(asked.get("background")),
        "store": asked.get("store") is not False,
    }
    if turns is None:
        return shown | _progress("queued", [], completed_at=None, error=None, incomplete=None, usage=None)
    status = run_status(record)
    output = items_of_turns(turns, tag_of(spec.run_id), frozenset(spec.client_tools), record.awaiting)
    over = status not in ("queued", "in_progress")
    return shown | _progress(
        _STATUS.get(status, status),
        output,
        completed_at=int(record.finished_at) if record.finished_at and status != "failed" else None,
        error={"code": "server_error", "message": record.error} if status == "failed" else None,
        incomplete={"reason": record.stop_reason} if status == "incomplete" else None,
        usage=_usage(record.prompt_tokens, record.completion_tokens) if over else None,
    )


def _progress(
    status: str,
    output: list[dict[str, Any]],
    /,
    *,
    completed_at: int | None,
    error: dict[str, Any] | None,
    incomplete: dict[str, Any] | None,
    usage: dict[str, Any] | None,
) -> dict[str, Any]:
    return {
        "status": status,
        "output": output,
        "completed_at": completed_at,
        "error": error,
        "incomplete_details": incomplete,
        "usage": usage,
    }


def _usage(prompt: int, completion: int) -> dict[str, Any]:
    return {
        "input_tokens": prompt,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": completion,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": prompt + completion,
    }


async def wait(api: Api, tenant: str, response_id: str) -> dict[str, Any]:
    """The response once it is over, or as it stands after ``api.wait_s``."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(api.wait_s):
            async with contextlib.aclosing(run_events(api.hub, tenant, response_id, "0-0")) as events:
                async for _ in events:
                    pass
    return await retrieve(api, tenant, response_id)


async def cancel(api: Api, tenant: str, response_id: str) -> dict[str, Any]:
    await stored(api, tenant, response_id)
    await api.store.request_cancel(tenant, response_id)
    return await retrieve(api, tenant, response_id)


async def delete(api: Api, tenant: str, response_id: str) -> None:
    await stored(api, tenant, response_id)
    if await api.store.delete(tenant, response_id) == "busy":
        message = f"response {response_id} is in progress; cancel it first"
        raise ApiError(409, "response_in_progress", message)


async def input_items(
    api: Api, tenant: str, response_id: str, *, limit: int, order: str, after: str | None
) -> InputItems:
    (spec, _), _ = await stored(api, tenant, response_id)
    items: list[dict[str, Any]] = list(spec.request.get("input") or [])
    if order == "desc":
        items.reverse()
    if after is not None:
        ids = [item.get("id") for item in items]
        if after not in ids:
            raise bad("after", f"no input item {after!r} in this response")
        items = items[ids.index(after) + 1 :]
    page = items[:limit]
    first, last = (page[0]["id"], page[-1]["id"]) if page else (None, None)
    return InputItems(data=page, first_id=first, last_id=last, has_more=len(items) > limit)
