"""What the routes do, without HTTP: turn a validated request into a run in the store, and a run record
back into the API's view of it. The API only enqueues runs and reads state; workers execute them."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from pydantic import BaseModel

from orchestrator.api.errors import ApiError, not_found
from orchestrator.api.hub import EventHub
from orchestrator.api.models import Message, Run, RunList, RunRequest, ThreadMessage, Usage
from orchestrator.api.schemas import check_schema
from orchestrator.errors import RunNotFoundError, UnreadableRunError
from orchestrator.ports import Limits, RunSpec, Sampling
from orchestrator.records import RunRecord, run_status
from orchestrator.runs import first_checkpoint, new_run
from orchestrator.store_ports import ApiStore, Submitted
from orchestrator.tracing import trace_id
from toolbox.hermes import neutralize, turn
from toolbox.protocol import ToolSpec

_TURN = re.compile(r"<\|im_start\|>([a-z]+)\n(.*?)<\|im_end\|>", re.DOTALL)


@dataclass(frozen=True)
class Api:
    """Everything the routes share: the store, the tools runs may use, the model names accepted."""

    store: ApiStore
    hub: EventHub  # every run event stream this process serves is read through it
    tools: Mapping[str, ToolSpec]
    models: Sequence[str]
    limits: Limits
    constrained: frozenset[str] = frozenset()  # the models whose runs are constrained unless asked not to
    wait_s: float = 300.0  # how long a response that is neither streamed nor in the background is waited for


@dataclass(frozen=True)
class _Conversation:
    text: str
    earlier: tuple[str, ...]
    system: str | None


MAX_MESSAGES = 500


def _conversation(request: RunRequest) -> _Conversation:
    if isinstance(request.input, str):
        return _Conversation(request.input, (), request.system)
    if len(request.input) > MAX_MESSAGES:
        raise ApiError(422, "validation_error", f"input: at most {MAX_MESSAGES} messages (the limit)")
    return split_messages(request.input, request.system)


def split_messages(messages: Sequence[Message], system: str | None = None) -> _Conversation:
    """System messages join the system prompt; the last message is the new user turn; the rest are
    earlier turns of the conversation, rendered (and neutralized, as untrusted) here."""
    systems = [system] if system else []
    systems += [m.content for m in messages if m.role == "system"]
    talk = [m for m in messages if m.role != "system"]
    if not talk or talk[-1].role != "user":
        raise ApiError(422, "validation_error", "input: the last message must be a user message")
    earlier = tuple(turn(m.role, neutralize(m.content)) for m in talk[:-1])
    return _Conversation(talk[-1].content, earlier, "\n\n".join(systems) or None)


def _tools(api: Api, names: Sequence[str]) -> list[ToolSpec]:
    unknown = [name for name in names if name not in api.tools]
    if unknown:
        raise ApiError(422, "validation_error", f"tools: unknown tool {unknown[0]!r} (see GET /v1/tools)")
    return [api.tools[name] for name in dict.fromkeys(names)]


def _model(api: Api, name: str | None) -> str:
    if name is None:
        return api.models[0]
    if name not in api.models:
        raise ApiError(422, "validation_error", f"model: unknown model {name!r}")
    return name


def _limits(api: Api, request: RunRequest) -> Limits:
    given = {k: v for k, v in request.limits.model_dump().items() if v is not None}
    return dataclasses.replace(api.limits, **given)


def fingerprint(request: RunRequest) -> str:
    return hashlib.sha256(json.dumps(request.model_dump(), sort_keys=True).encode()).hexdigest()


def check_text(request: BaseModel, status: int = 422) -> None:
    # JSON may carry lone UTF-16 surrogates ("\ud800"), which no UTF-8 store or prompt can hold.
    try:
        json.dumps(request.model_dump(), ensure_ascii=False).encode()
    except UnicodeEncodeError:
        raise ApiError(
            status,
            "validation_error" if status == 422 else "invalid_request",
            "body: holds a lone UTF-16 surrogate (\\ud800-\\udfff), which is not text",
        ) from None


async def submit(api: Api, tenant: str, request: RunRequest, idempotency_key: str | None) -> Run:
    """Create and enqueue the run, or return the run an earlier request with the same key created."""
    check_text(request)
    model, tools = _model(api, request.model), _tools(api, request.tools)
    check_schema(request.json_schema, "json_schema")
    talk = _conversation(request)
    run_id = f"run_{uuid.uuid4().hex}"
    spec = _spec(api, tenant, request, talk, run_id, model=model, tools=tools)  # before anything is written
    if idempotency_key is not None and (not idempotency_key or len(idempotency_key) > 255):
        raise ApiError(400, "invalid_idempotency_key", "Idempotency-Key must be 1-255 characters")
    done = await _submitted(api, spec, talk, request, idempotency_key)
    if done.kind == "created":
        return run_view(spec, done.record)
    if done.kind == "no_thread":
        raise not_found("thread", spec.thread_id)
    if done.kind == "busy":
        message = f"thread {spec.thread_id} has a run in progress ({done.run_id}); wait for it"
        raise ApiError(409, "thread_busy", message)
    if done.fingerprint != fingerprint(request):
        raise ApiError(409, "idempotency_conflict", "this Idempotency-Key was used with a different body")
    return await view(api, tenant, done.run_id)


def _spec(
    api: Api,
    tenant: str,
    request: RunRequest,
    talk: _Conversation,
    run_id: str,
    *,
    model: str,
    tools: Sequence[ToolSpec],
) -> RunSpec:
    constrained = model in api.constrained if request.constrained is None else request.constrained
    try:
        return new_run(
            tenant=tenant,
            thread_id=request.thread_id or f"thread_{uuid.uuid4().hex}",
            tools=tools,
            system=talk.system,
            json_schema=request.json_schema,
            limits=_limits(api, request),
            run_id=run_id,
            constrained=constrained,
            tool_choice=request.tool_choice,
            model=model,
            sampling=_sampling(request),
            answer_instruction=request.answer_instruction or "",
        )
    except ValueError as exc:  # a tool_choice naming no offered tool
        raise ApiError(422, "validation_error", f"tool_choice: {exc}") from None


async def _submitted(
    api: Api, spec: RunSpec, talk: _Conversation, request: RunRequest, idempotency_key: str | None
) -> Submitted:
    """The submission, in one write: the idempotency key, the thread's existence and claim, the record
    (the store stamps its creation time, which orders the tenant's runs) and the queue entry. The store
    renders and checks the spec: one that would not read back fails every reader of it, so it is refused
    before the idempotency key binds and anything is written."""
    try:
        return await api.store.submit(
            spec,
            first_checkpoint(spec, []),
            talk.text,
            earlier=talk.earlier,
            claim=True,
            existing_thread=request.thread_id is not None,
            idempotency=None if idempotency_key is None else (idempotency_key, fingerprint(request)),
        )
    except UnreadableRunError:
        raise ApiError(
            422,
            "validation_error",
            "this run could not be stored so that it reads back; simplify json_schema",
        ) from None


def _sampling(request: RunRequest) -> Sampling:
    default = Sampling()
    temperature = default.temperature if request.temperature is None else request.temperature
    return Sampling(temperature=temperature, top_p=default.top_p, seed=request.seed)


def run_view(spec: RunSpec, record: RunRecord) -> Run:
    prompt, completion = record.prompt_tokens, record.completion_tokens
    return Run(
        id=spec.run_id,
        status=run_status(record),
        thread_id=spec.thread_id,
        model=record.model,
        created_at=record.created_at,
        finished_at=record.finished_at,
        stop_reason=record.stop_reason,
        output=record.output,
        value=record.value,
        error=record.error,
        steps=record.step,
        usage=Usage(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion),
        trace_id=trace_id(record.trace),
    )


async def view(api: Api, tenant: str, run_id: str) -> Run:
    found = await api.store.record(tenant, check_id("run", run_id))
    if found is None:
        raise not_found("run", run_id)
    return run_view(*found)


async def runs(api: Api, tenant: str, limit: int, after: str | None) -> RunList:
    """A page of the tenant's runs, newest first, after the run ``after`` (the last one of the page
    before) when given."""
    try:
        found, more = await api.store.runs(tenant, limit=limit, after=after)
    except RunNotFoundError:
        raise ApiError(400, "invalid_cursor", f"after: no run {after!r} to list after") from None
    return RunList(data=[run_view(*one) for one in found], has_more=more)


async def cancel(api: Api, tenant: str, run_id: str) -> Run:
    if await api.store.request_cancel(tenant, check_id("run", run_id)) is None:
        raise not_found("run", run_id)
    return await view(api, tenant, run_id)


async def messages(api: Api, tenant: str, thread_id: str) -> list[ThreadMessage]:
    turns = await api.store.thread(tenant, check_id("thread", thread_id))
    if not turns:
        raise not_found("thread", thread_id)
    return [ThreadMessage(role=m[1], content=m[2]) for t in turns for m in _TURN.finditer(t)]


_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")


def check_id(kind: str, value: str) -> str:
    # An id the store could never have issued names nothing: 404, as for any other unknown id.
    if not _ID.fullmatch(value):
        raise not_found(kind, value)
    return value
