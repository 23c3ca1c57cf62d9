"""The REST API over the in-memory store, for the tests of HTTP behaviour alone (validation, keys, limits,
404s, paging, SSE framing): ``create_app(MemoryStore())`` served in-process by Starlette's test client, no
Redis and no sockets. No worker runs here: runs stay queued unless a test runs one (``run_queued``). What the
store means is the Redis store's too: both pass ``tests/integration/test_store_contract.py``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

from fastapi.testclient import TestClient

from orchestrator.api import create_app
from orchestrator.engines import ScriptedEngine
from orchestrator.loop import Agent
from orchestrator.memory import FunctionExecutor, MemoryStore
from orchestrator.ports import Outcome, RunSpec
from tests.api_support import ECHO, KEYS, PAUSE, script

T = TypeVar("T")


@dataclass(frozen=True)
class MemoryApi:
    http: TestClient
    store: MemoryStore

    def call(self, function: Callable[..., Awaitable[T]], *args: Any) -> T:
        """``function(*args)`` awaited in the app's event loop (where the store's readers wait)."""
        portal = self.http.portal
        assert portal is not None, "the test client is entered"
        return portal.call(function, *args)

    def spec(self, tenant: str, run_id: str) -> RunSpec:
        found = self.call(self.store.record, tenant, run_id)
        assert found is not None, run_id
        return found[0]

    def run_queued(self, script: Any, tenant: str, run_id: str) -> Outcome:
        """Run a queued run to its end here, as a worker would: its model is ``ScriptedEngine(script)``,
        its tools echo and pause."""

        async def run() -> Outcome:
            spec, ckpt, _ = await self.store.load(tenant, run_id)
            tools = FunctionExecutor({"echo": lambda text: text, "pause": lambda s: "paused"})
            return await Agent(ScriptedEngine(script), tools, self.store).run(spec, ckpt)

        return self.call(run)


@contextmanager
def memory_api(**options: Any) -> Iterator[MemoryApi]:
    """The API (``create_app`` with ``options``) over a fresh ``MemoryStore``; keys and tools as
    ``tests.api_support`` has them."""
    store = MemoryStore()
    options = {"engine": ScriptedEngine(script), "tools": [ECHO, PAUSE], **options}
    app = create_app(store, keys=KEYS, **options)
    with TestClient(app, base_url="http://api") as http:
        yield MemoryApi(http, store)
