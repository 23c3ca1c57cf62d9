"""``AsyncClient``: the runs API over httpx, for asyncio."""

from __future__ import annotations

import asyncio
import builtins
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import httpx

from orchestrator.client import _core
from orchestrator.client._errors import APIConnectionError, InternalServerError
from orchestrator.client._types import FINAL, Event, Message, Run, RunPage, Tool


class AsyncClient:
    """As ``Client``, with every method awaited and ``events`` an async iterator: the runs API at
    ``base_url`` (default ``$CADUCEUS_URL``, else http://127.0.0.1:8000) with ``api_key`` (default
    ``$CADUCEUS_API_KEY``); a dropped event stream is reopened with ``Last-Event-ID`` up to
    ``reconnects`` times in a row."""

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        timeout_s: float = 30.0,
        reconnects: int = 5,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base_url = _core.base_url(base_url)
        self._http = httpx.AsyncClient(
            base_url=self.base_url,
            headers=_core.headers(api_key),
            timeout=httpx.Timeout(timeout_s, connect=5.0),
            transport=transport,
        )
        self._reconnects = reconnects

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self._http.aclose()

    async def submit(
        self,
        input: str | Sequence[Mapping[str, str]],
        *,
        tools: Sequence[str] = (),
        idempotency_key: str | None = None,
        **options: Any,
    ) -> Run:
        """Submit a run: ``input`` is the user's text or a conversation (``{"role", "content"}``) ending
        in a user turn; ``options`` are the API's (``thread_id``, ``model``, ``system``, ``json_schema``,
        ``limits``, ``temperature``, ``seed``, ``constrained``, ``tool_choice``, ``answer_instruction``)."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        body = _core.run_body(input, tools, options)
        return Run.of(await self._send("POST", "/v1/runs", json=body, headers=headers))

    async def get(self, run_id: str) -> Run:
        return Run.of(await self._send("GET", f"/v1/runs/{_id(run_id)}"))

    async def list(self, *, limit: int = 20, after: str | None = None) -> RunPage:
        """A page of your runs, newest first (``after``: the last id of the page before)."""
        params: dict[str, Any] = {"limit": limit} | ({"after": after} if after else {})
        return _core.page(await self._send("GET", "/v1/runs", params=params))

    async def cancel(self, run_id: str) -> Run:
        return Run.of(await self._send("POST", f"/v1/runs/{_id(run_id)}/cancel"))

    async def tools(self) -> builtins.list[Tool]:
        return _core.tools(await self._send("GET", "/v1/tools"))

    async def messages(self, thread_id: str) -> builtins.list[Message]:
        found = (await self._send("GET", f"/v1/threads/{_id(thread_id)}/messages"))["data"]
        return [Message(m["role"], m["content"]) for m in found]

    async def wait(self, run_id: str, *, timeout_s: float | None = None) -> Run:
        """The run once it ended (following its events); ``APITimeoutError`` after ``timeout_s``."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        async for _ in self.events(run_id, deadline=deadline):
            pass
        return await self.get(run_id)

    async def events(
        self, run_id: str, *, after: str | None = None, deadline: float | None = None
    ) -> AsyncIterator[Event]:
        """The run's events after ``after`` (from its first by default), as they come, to its final one;
        ``deadline`` (``time.monotonic()``): ``APITimeoutError`` once it passes."""
        last, failures = after, 0
        while True:
            try:
                async for event in self._stream(run_id, last, deadline):
                    last, failures = event.id, 0
                    yield event
                    if event.kind in FINAL:
                        return
                if (await self.get(run_id)).done:
                    return  # the stream ended cleanly after the run did: its final event expired
            except (httpx.TransportError, InternalServerError):
                pass
            failures += 1
            _core.in_time(deadline, run_id)
            if failures > self._reconnects:
                raise APIConnectionError(f"lost the event stream of run {run_id} from {self.base_url}")
            await asyncio.sleep(_core.pause_s(failures))

    async def _stream(self, run_id: str, last: str | None, deadline: float | None) -> AsyncIterator[Event]:
        headers = {"Last-Event-ID": last} if last else {}
        path = f"/v1/runs/{_id(run_id)}/events"
        async with self._http.stream("GET", path, headers=headers, timeout=_core.STREAM_TIMEOUT) as response:
            if response.status_code != 200:
                await response.aread()
                _core.check(response)
            frames = _core.Frames()
            async for line in response.aiter_lines():
                _core.in_time(deadline, run_id)
                frame = frames.line(line)
                if frame is not None:
                    yield _core.event_of(frame)

    async def _send(self, method: str, path: str, **options: Any) -> Any:
        with self._guard():
            response = await self._http.request(method, path, **options)
        return _core.decoded(response)

    @contextmanager
    def _guard(self) -> Iterator[None]:
        try:
            yield
        except httpx.TransportError as exc:
            raise _core.unreachable(exc, self.base_url) from None


def _id(ident: str) -> str:
    # An id is one path segment, whatever it holds: a slash in it must not reach another route.
    return quote(ident, safe="")
