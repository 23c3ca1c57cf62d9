"""The package's Python client (``caduceus``: ``Client`` and ``AsyncClient``) against a running service
(``conftest_api``: uvicorn, a real redis-server, a real worker with the scripted engine): submit, follow
the events (a dropped stream resumes after its last event), wait, cancel, list, and its error tree."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from orchestrator import client as caduceus
from tests.integration.conftest_api import Service, free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def url(redis_server: str) -> Iterator[str]:
    with Service(redis_server, worker=True).running() as service:
        yield service.url


class Dropping(httpx.BaseTransport):
    """A real connection that the client loses: each of the first ``drops`` event streams is cut after
    ``after`` lines (as a proxy that times out would cut it)."""

    def __init__(self, drops: int, after: int) -> None:
        self._inner, self.drops, self._after = httpx.HTTPTransport(), drops, after
        self.opened: list[str | None] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self._inner.handle_request(request)
        if not request.url.path.endswith("/events"):
            return response
        self.opened.append(request.headers.get("Last-Event-ID"))
        if self.drops <= 0:
            return response
        self.drops -= 1
        return httpx.Response(
            response.status_code, headers=response.headers, stream=_Cut(response, self._after)
        )


class _Cut(httpx.SyncByteStream):
    def __init__(self, response: httpx.Response, lines: int) -> None:
        self._response, self._lines = response, lines

    def __iter__(self) -> Iterator[bytes]:
        sent = 0
        for chunk in self._response.stream:  # type: ignore[union-attr]
            for line in chunk.splitlines(keepends=True):
                yield line
                sent += 1
                if sent >= self._lines:
                    self._response.close()
                    raise httpx.ReadError("the connection was cut")

    def close(self) -> None:
        self._response.close()


def test_submit_follow_wait_list_and_read_a_run(url: str) -> None:
    with caduceus.Client(url, "key-a") as client:
        run = client.submit("tool hi", tools=["echo"], temperature=0)
        assert run.status in ("queued", "in_progress") and run.id.startswith("run_")
        kinds = [event.kind for event in client.events(run.id) if event.kind != "delta"]
        assert kinds == ["tool_call", "tool_result", "step", "step", "finished"]
        done = client.wait(run.id)
        assert (done.status, done.output, done.steps, done.done) == ("completed", "echo: tool hi", 2, True)
        assert done.usage.total_tokens == done.usage.prompt_tokens + done.usage.completion_tokens > 0
        assert run.id in [listed.id for listed in client.list(limit=100).data]
        assert [m.role for m in client.messages(done.thread_id)] == ["user", "assistant", "tool", "assistant"]
        assert {tool.name for tool in client.tools()} == {"echo", "pause"}
        again = client.submit("and on", thread_id=done.thread_id)
        assert client.wait(again.id).output == "echo: and on"


def test_a_dropped_event_stream_resumes_after_its_last_event(url: str) -> None:
    with caduceus.Client(url, "key-a") as client:
        run = client.submit("tool dropped", tools=["echo"])
        clean = [event.id for event in client.events(run.id)]
    transport = Dropping(drops=2, after=7)
    with caduceus.Client(url, "key-a", transport=transport) as client:
        resumed = [event.id for event in client.events(run.id)]
    assert resumed == clean  # nothing missed, nothing twice
    assert len(transport.opened) == 3 and transport.opened[0] is None
    assert all(last in clean for last in transport.opened[1:])  # each reopened after the last event seen


def test_errors_are_the_clients_own_tree(url: str) -> None:
    with caduceus.Client(url, "key-a") as client:
        with pytest.raises(caduceus.NotFoundError) as missing:
            client.get("run_nope")
        assert (missing.value.status, missing.value.code) == (404, "run_not_found")
        with pytest.raises(caduceus.BadRequestError, match="unknown tool 'nope'"):
            client.submit("hi", tools=["nope"])
        mine = client.submit("mine")
    with caduceus.Client(url, "key-b") as other, pytest.raises(caduceus.NotFoundError):
        other.get(mine.id)
    with caduceus.Client(url, "wrong") as stranger, pytest.raises(caduceus.AuthenticationError):
        stranger.list()
    nobody = caduceus.Client(f"http://127.0.0.1:{free_port()}", "key-a")
    with nobody, pytest.raises(caduceus.APIConnectionError, match="not reachable"):
        nobody.list()
    assert issubclass(caduceus.APITimeoutError, caduceus.APIConnectionError)
    assert all(
        issubclass(kind, caduceus.CaduceusError) for kind in (caduceus.APIError, caduceus.APIConnectionError)
    )


def test_the_async_client_follows_waits_and_cancels(url: str) -> None:
    async def main() -> tuple[Any, ...]:
        async with caduceus.AsyncClient(url, "key-a") as client:
            run = await client.submit("tool async", tools=["echo"])
            kinds = [event.kind async for event in client.events(run.id)]
            done = await client.wait(run.id)
            slow = await client.submit("slow one", tools=["pause"])
            with pytest.raises(caduceus.APITimeoutError):
                await client.wait(slow.id, timeout_s=0.3)
            await client.cancel(slow.id)
            stopped = await client.wait(slow.id, timeout_s=30)
            page = await client.list(limit=2)
            return kinds, done, stopped, page

    kinds, done, stopped, page = asyncio.run(main())
    assert kinds[-1] == "finished" and "tool_result" in kinds
    assert (done.status, done.output) == ("completed", "echo: tool async")
    assert (stopped.status, stopped.stop_reason) == ("cancelled", "cancelled")
    assert len(page.data) == 2 and page.has_more
