"""The REST API as a plain FastAPI application over the run store's ports (``orchestrator.store_ports``).

``create_app`` builds it; a Ray Serve ingress (in ``deploy``) or uvicorn serves it. Routes authenticate
(API key -> tenant), rate-limit per key, and delegate to ``service`` in a line or two. Every run and
thread is scoped to its tenant: another tenant's ids are simply not found (404, never 403).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Query, Request, Response
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles

from orchestrator.api import chat, chat_prompt, errors, responses, service
from orchestrator.api.auth import RateLimiter, authenticate
from orchestrator.api.chat_models import ChatCompletion, ChatRequest
from orchestrator.api.hub import EventHub
from orchestrator.api.limits import BodyLimit
from orchestrator.api.models import (
    ErrorEnvelope,
    Health,
    ModelInfo,
    ModelList,
    Run,
    RunList,
    RunRequest,
    ThreadMessages,
    Tool,
    ToolList,
)
from orchestrator.api.response_models import DeletedResponse, InputItems, ResponseRequest
from orchestrator.api.response_stream import response_events
from orchestrator.api.service import Api
from orchestrator.api.sse import check_event_id, sse_events
from orchestrator.api.traced import Traced
from orchestrator.ports import ChatEngine, Limits
from orchestrator.store_ports import ApiStore, Control
from toolbox.protocol import ToolSpec

_bearer = HTTPBearer(auto_error=False, description="An API key: 'Authorization: Bearer <key>'")
_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorEnvelope} for code in (400, 401, 404, 409, 413, 422, 429, 503)
}
_ID = r"^[A-Za-z0-9_.-]{1,128}$"
_SSE = {"content": {"text/event-stream": {}}, "description": "Server-Sent Events"}


async def _tenant(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> str:
    """The caller's tenant, from its API key; each key's requests are rate-limited."""
    header = f"{credentials.scheme} {credentials.credentials}" if credentials else None
    key, tenant = authenticate(request.app.state.keys, header)
    request.app.state.limiter.take(key)
    return tenant


Tenant = Annotated[str, Depends(_tenant)]


def create_app(
    store: ApiStore,
    *,
    keys: Mapping[str, str],
    tools: Iterable[ToolSpec] = (),
    models: Sequence[str] = ("hermes-3-3b",),
    limits: Limits | None = None,
    rate_per_s: float = 20.0,
    burst: int = 40,
    max_body_bytes: int = 1 << 20,
    constrained_models: Iterable[str] = (),
    engine: ChatEngine | None = None,
    response_wait_s: float = 300.0,
) -> FastAPI:
    """The API. ``keys`` maps API keys to tenants; ``tools`` are what runs may name; ``models`` the
    model names accepted (the first is the default); ``limits`` the defaults a request may override;
    ``constrained_models`` those whose runs decode under a grammar unless a request says otherwise.
    ``store`` is the run store (Redis in the service, ``MemoryStore`` in tests). ``engine`` is the models
    themselves, for chat completions (``orchestrator.engines.ModelRouter`` over the model deployments in
    the service; without one, chat completions answer 503). ``response_wait_s``: how long a response
    that is neither streamed nor in the background is waited for."""
    if not models:
        raise ValueError("create_app needs at least one model name")
    api = Api(
        store,
        EventHub(store),
        {spec.name: spec for spec in tools},
        tuple(models),
        limits or Limits(),
        frozenset(constrained_models),
        response_wait_s,
    )
    app = FastAPI(title="Caduceus", version="0.1.0", responses=_ERRORS)
    app.state.keys, app.state.limiter = dict(keys), RateLimiter(rate_per_s, burst)
    errors.install(app)
    app.add_middleware(BodyLimit, max_bytes=max_body_bytes)
    app.add_middleware(Traced)  # outermost: a refused body is a request too
    _health_routes(app, store)
    _run_routes(app, api)
    _chat_routes(app, api, engine)
    _response_routes(app, api)
    # The run inspector: static files that call the routes above with the caller's own API key.
    app.mount("/ui", StaticFiles(directory=Path(__file__).parent / "ui", html=True), name="ui")
    return app


def _health_routes(app: FastAPI, store: Control) -> None:
    @app.get("/healthz")
    async def healthz() -> Health:
        return Health()

    @app.get("/readyz")
    async def readyz() -> Health:
        await store.ping()  # a store that fails raises a StoreError, and its handler answers 503
        return Health()


def _run_routes(app: FastAPI, api: Api) -> None:
    @app.post("/v1/runs", status_code=202)
    async def create_run(
        body: RunRequest,
        tenant: Tenant,
        response: Response,
        idempotency_key: Annotated[str | None, Header()] = None,
    ) -> Run:
        run = await service.submit(api, tenant, body, idempotency_key)
        response.headers["Location"] = f"/v1/runs/{run.id}"
        return run

    @app.get("/v1/runs")
    async def list_runs(
        tenant: Tenant,
        limit: Annotated[int, Query(ge=1, le=100, description="How many runs, at most")] = 20,
        after: Annotated[
            str | None, Query(pattern=_ID, description="List the runs older than this one")
        ] = None,
    ) -> RunList:
        """The caller's runs, newest first. Page on with ``after`` set to the last id of the page before,
        while ``has_more``. Runs are listed for the store's TTL (7 days by default) after submission."""
        return await service.runs(api, tenant, limit, after)

    @app.get("/v1/runs/{run_id}")
    async def get_run(run_id: str, tenant: Tenant) -> Run:
        return await service.view(api, tenant, run_id)

    @app.post("/v1/runs/{run_id}/cancel")
    async def cancel_run(run_id: str, tenant: Tenant) -> Run:
        return await service.cancel(api, tenant, run_id)

    @app.get("/v1/runs/{run_id}/events", response_class=StreamingResponse, responses={200: _SSE})
    async def run_events(
        run_id: str, tenant: Tenant, last_event_id: Annotated[str | None, Header()] = None
    ) -> StreamingResponse:
        after = check_event_id(last_event_id)
        await service.view(api, tenant, run_id)  # 404 before the stream starts
        return StreamingResponse(sse_events(api.hub, tenant, run_id, after), media_type="text/event-stream")

    @app.get("/v1/threads/{thread_id}/messages")
    async def thread_messages(thread_id: str, tenant: Tenant) -> ThreadMessages:
        found = await service.messages(api, tenant, thread_id)
        return ThreadMessages(thread_id=thread_id, data=found)

    @app.get("/v1/tools")
    async def list_tools(tenant: Tenant) -> ToolList:
        return ToolList(
            data=[
                Tool(name=t.name, description=t.description, parameters=t.parameters)
                for t in api.tools.values()
            ]
        )


def _chat_routes(app: FastAPI, api: Api, engine: ChatEngine | None) -> None:
    ok = {"model": ChatCompletion, "content": {"text/event-stream": {}}}

    @app.post("/v1/chat/completions", responses={200: ok})
    async def chat_completions(body: ChatRequest, tenant: Tenant) -> Response:
        """A Hermes model in OpenAI's chat-completions shape: the client runs its tools."""
        if engine is None:
            raise errors.ApiError(503, "no_engine", "this API serves no model for chat completions")
        if body.model not in api.models:
            raise chat_prompt.bad("model", f"no model {body.model!r} (see GET /v1/models)")
        prepared = chat_prompt.prepare(
            body, constrained=body.model in api.constrained, max_tokens=api.limits.max_tokens
        )
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        if body.stream:
            events = chat.stream(engine, prepared, completion_id)
            return StreamingResponse(events, media_type="text/event-stream")
        done = await chat.complete(engine, prepared, completion_id)
        return Response(done.model_dump_json(), media_type="application/json")

    @app.get("/v1/models")
    async def list_models(tenant: Tenant) -> ModelList:
        """The models requests may name (``model``); the first is the default of runs."""
        return ModelList(data=[ModelInfo(id=name) for name in api.models])


def _json(body: dict[str, Any]) -> Response:
    return Response(json.dumps(body, ensure_ascii=False), media_type="application/json")


def _response_routes(app: FastAPI, api: Api) -> None:
    sse: dict[int | str, dict[str, Any]] = {
        200: {"content": {"application/json": {}, "text/event-stream": {}}}
    }

    @app.post("/v1/responses", responses=sse)
    async def create_response(
        body: ResponseRequest, tenant: Tenant, idempotency_key: Annotated[str | None, Header()] = None
    ) -> Response:
        """The agent in OpenAI's Responses shape: a response is a run, a previous_response_id chain its
        thread; the service runs its own tools, the client its functions."""
        spec, record = await responses.create(api, tenant, body, idempotency_key)
        if body.stream:
            return StreamingResponse(
                response_events(api, tenant, spec, record), media_type="text/event-stream"
            )
        if body.background:
            return _json(responses.view(spec, record, []))
        done = await responses.wait(api, tenant, spec.run_id)
        if body.store is False:
            await api.store.delete(tenant, spec.run_id)
        return _json(done)

    @app.get("/v1/responses/{response_id}", responses=sse)
    async def get_response(
        response_id: str,
        tenant: Tenant,
        stream: bool = False,
        starting_after: Annotated[int, Query(ge=-1, description="Stream the events after this one")] = -1,
    ) -> Response:
        """The response; with ``stream``, its events (all of them, or those after ``starting_after``)."""
        if not stream:
            return _json(await responses.retrieve(api, tenant, response_id))
        (spec, record), _ = await responses.stored(api, tenant, response_id)
        events = response_events(api, tenant, spec, record, starting_after)
        return StreamingResponse(events, media_type="text/event-stream")

    @app.post("/v1/responses/{response_id}/cancel")
    async def cancel_response(response_id: str, tenant: Tenant) -> Response:
        return _json(await responses.cancel(api, tenant, response_id))

    @app.delete("/v1/responses/{response_id}")
    async def delete_response(response_id: str, tenant: Tenant) -> DeletedResponse:
        await responses.delete(api, tenant, response_id)
        return DeletedResponse(id=response_id)

    @app.get("/v1/responses/{response_id}/input_items")
    async def response_input_items(
        response_id: str,
        tenant: Tenant,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        order: Annotated[str, Query(pattern="^(asc|desc)$")] = "desc",
        after: Annotated[str | None, Query(max_length=200)] = None,
    ) -> InputItems:
        return await responses.input_items(api, tenant, response_id, limit=limit, order=order, after=after)
