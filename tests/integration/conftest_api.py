"""A real Caduceus API for tests: uvicorn on a free loopback port, serving ``create_app`` over a real
redis-server, beside a real orchestrator worker (the scripted engine, in-process tools), both in one event
loop on a background thread. Tests talk to it with httpx over TCP. (The tests of HTTP behaviour alone run on
the in-memory store instead: ``tests/unit/api_memory.py``.)"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import uvicorn

from orchestrator.api import create_app
from orchestrator.engines import ScriptedEngine
from orchestrator.loop import Agent
from orchestrator.memory import FunctionExecutor
from orchestrator.redis import RedisStore, RunQueue, connect
from orchestrator.worker import Worker
from tests.api_support import ECHO, KEYS, PAUSE, A, frames, script


async def _pause(s: float, n: int = 0) -> str:
    await asyncio.sleep(s)
    return "paused"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class Service:
    def __init__(self, redis_url: str, *, worker: bool, **options: Any) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self._redis_url, self._worker, self._options = redis_url, worker, options
        self._server: uvicorn.Server | None = None
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._error: BaseException | None = None

    async def _main(self) -> None:
        self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
        api_redis, worker_redis = connect(self._redis_url), connect(self._redis_url)
        options = {"engine": ScriptedEngine(script), "tools": [ECHO, PAUSE], **self._options}
        app = create_app(RedisStore(api_redis), keys=KEYS, **options)
        port = int(self.url.rsplit(":", 1)[1])
        config = uvicorn.Config(
            app, host="127.0.0.1", port=port, log_level="warning", lifespan="off", ws="none"
        )
        self._server = uvicorn.Server(config)
        tasks = [self._server.serve()]
        if self._worker:
            store = RedisStore(worker_redis, worker="w1")
            agent = Agent(
                ScriptedEngine(script), FunctionExecutor({"echo": lambda text: text, "pause": _pause}), store
            )
            tasks.append(Worker(store, RunQueue(store.link, lease_ms=1000), agent).serve(self._stop))
        try:
            await asyncio.gather(*tasks)
        finally:
            await api_redis.aclose()
            await worker_redis.aclose()

    def _thread(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:
            self._error = exc

    @contextmanager
    def running(self) -> Iterator[Service]:
        thread = threading.Thread(target=self._thread, daemon=True)
        thread.start()
        while self._server is None or not self._server.started:
            if not thread.is_alive():
                raise RuntimeError(f"the API did not start: {self._error!r}")
            time.sleep(0.02)
        try:
            yield self
        finally:
            self._server.should_exit = True
            if self._loop is not None and self._stop is not None:
                self._loop.call_soon_threadsafe(self._stop.set)
            thread.join(timeout=20)
        if self._error is not None:
            raise self._error


def wait_for(
    client: httpx.Client, run_id: str, *statuses: str, headers: dict[str, str] = A
) -> dict[str, Any]:
    for _ in range(600):
        run: dict[str, Any] = client.get(f"/v1/runs/{run_id}", headers=headers).json()
        if run["status"] in statuses:
            return run
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} never reached {statuses}: {run}")


def sse(response: httpx.Response) -> Iterator[dict[str, str]]:
    """The frames of an SSE response, each as its fields."""
    return frames(response.iter_lines())


@contextmanager
def api_client(redis_url: str, *, worker: bool, **options: Any) -> Iterator[httpx.Client]:
    """An httpx client of a running API (and worker, if asked), stopped on exit."""
    with (
        Service(redis_url, worker=worker, **options).running() as service,
        httpx.Client(base_url=service.url) as http,
    ):
        yield http
