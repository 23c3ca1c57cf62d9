"""A worker against Redis failing under it: a redis-server of the test's own, stopped and restarted empty
(as without persistence: the queue's consumer group is gone), stalled past the client's timeout (CLIENT
PAUSE), and a loop that dies of a bug. The worker retries what passes, and says when it is unhealthy."""

from __future__ import annotations

import asyncio
import json
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis
from redis.asyncio import Redis

from deploy.local_redis import free_port, redis_server_binary
from orchestrator.engines import Latency, ScriptedEngine
from orchestrator.errors import UnhealthyError
from orchestrator.loop import Agent
from orchestrator.memory import FunctionExecutor
from orchestrator.redis import SOCKET_TIMEOUT_S, RedisStore, RunQueue, connect
from orchestrator.runs import first_checkpoint, new_run
from orchestrator.worker import Backoff, Worker
from toolbox.protocol import ToolSpec

pytestmark = pytest.mark.integration
INCR = ToolSpec(
    "incr", "Count.", {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
)
HOLD = ToolSpec("hold", "Wait until released.", {"type": "object", "properties": {}})
GUARD_S = 60  # a bound on each wait, so that a broken worker fails the test instead of hanging it


class RedisProcess:
    """A redis-server of this test's own on a fixed port, with persistence off: stopped and started again,
    it comes back empty, as a Redis without persistence does after a restart."""

    def __init__(self, workdir: str) -> None:
        self.port, self._workdir = free_port(), workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [redis_server_binary(), "--bind", "127.0.0.1", "--port", str(self.port)]
        command += ["--save", "", "--appendonly", "no", "--dir", self._workdir]
        self._process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        client = redis.Redis.from_url(self.url)
        try:
            for _ in range(200):
                try:
                    if client.ping():
                        return
                except redis.ConnectionError:
                    if self._process.poll() is not None:
                        raise RuntimeError(f"redis-server exited with {self._process.returncode}") from None
                    time.sleep(0.05)  # it is starting: nothing to wait on but its port
            raise RuntimeError("redis-server did not answer")
        finally:
            client.close()

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            self._process.wait(timeout=10)
            self._process = None


@pytest.fixture
def own_redis() -> Iterator[RedisProcess]:
    with tempfile.TemporaryDirectory(prefix="caduceus-redis-") as workdir:
        server = RedisProcess(workdir)
        server.start()
        try:
            yield server
        finally:
            server.stop()


def call(name: str, **arguments: Any) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def counting(steps: int) -> Callable[[str], str]:
    def script(prompt: str) -> str:
        done = prompt.count("<|im_start|>tool\n")
        return call("incr", n=done) if done < steps else f"finished after {done}"

    return script


async def submit(store: RedisStore, thread: str) -> str:
    spec = new_run(tenant="acme", thread_id=thread, tools=[INCR, HOLD])
    await store.submit(spec, first_checkpoint(spec, []), "count")
    return spec.run_id


async def until(condition: Callable[[], Awaitable[bool]]) -> None:
    async with asyncio.timeout(GUARD_S):
        while not await condition():
            await asyncio.sleep(0.02)


async def with_worker(
    url: str,
    body: Callable[[Worker, RedisStore], Awaitable[None]],
    *,
    script: Callable[[str], str] | None = None,
    tools: dict[str, Any] | None = None,
    **client: Any,
) -> None:
    """Run ``body`` beside a worker serving from ``url``; the worker's client has ``client`` options."""
    worker_redis, test_redis = Redis.from_url(url, **client), Redis.from_url(url)
    store = RedisStore(worker_redis, worker="w1")
    engine = ScriptedEngine(script or counting(1), latency=Latency(per_token_s=0.002))
    worker = Worker(
        store,
        RunQueue(store.link, lease_ms=2000),
        Agent(engine, FunctionExecutor(tools or {"incr": lambda n: n}), store),
        backoff=Backoff(first_s=0.01, max_s=0.2),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(worker.serve(stop))
    try:
        await body(worker, RedisStore(test_redis))
    finally:
        stop.set()
        await asyncio.gather(task, return_exceptions=True)
        await worker_redis.aclose()
        await test_redis.aclose()


def test_the_worker_rides_out_a_redis_restart_and_takes_runs_queued_after_it(own_redis: RedisProcess) -> None:
    """Redis stops, then comes back empty (no persistence): the queue's consumer group is gone. The worker's
    loops retry the connection errors, make the group again, and run what is queued afterwards."""

    async def body(worker: Worker, store: RedisStore) -> None:
        before = await submit(store, "before")
        await until(lambda: status_is(store, before, "answer"))
        own_redis.stop()
        await until(lambda: every_loop_faulted(worker))  # both loops met the outage (and live on)
        own_redis.start()
        async with fresh_store(own_redis.url) as client:  # a client connected after the restart
            after = await submit(client, "after")  # the stream is new: no group reads it yet
            await until(lambda: status_is(client, after, "answer"))
        worker.check_health()

    asyncio.run(with_worker(own_redis.url, body))


def test_a_redis_stall_longer_than_the_client_timeout_is_retried(own_redis: RedisProcess) -> None:
    """Redis stops answering writes (CLIENT PAUSE) for longer than the worker's socket timeout while a run is
    in progress (in a tool call): both loops time out and retry, and the run completes once Redis answers."""
    holding, released = asyncio.Event(), asyncio.Event()

    async def hold() -> str:
        holding.set()
        await released.wait()
        return "held"

    async def body(worker: Worker, store: RedisStore) -> None:
        run_id = await submit(store, "stalled")
        await holding.wait()
        await store.redis.execute_command("CLIENT", "PAUSE", str(GUARD_S * 1000), "WRITE")
        try:
            await until(lambda: every_loop_faulted(worker))  # scripts and stream reads are writes: paused
        finally:
            await store.redis.execute_command("CLIENT", "UNPAUSE")
        released.set()
        await until(lambda: status_is(store, run_id, "answer"))
        worker.check_health()

    def script(prompt: str) -> str:
        return "done" if "<tool_response>" in prompt else call("hold")

    tools = {"hold": hold}
    asyncio.run(with_worker(own_redis.url, body, script=script, tools=tools, socket_timeout=0.3))


class BrokenQueue(RunQueue):
    """A queue whose depth cannot be read: a bug, not an outage."""

    async def depth(self) -> int:
        raise RuntimeError("a bug in the heartbeat")


def test_a_dead_loop_makes_the_worker_unhealthy(redis_url: str) -> None:
    async def body() -> None:
        client = Redis.from_url(redis_url)
        store = RedisStore(client, worker="w1")
        worker = Worker(
            store,
            BrokenQueue(store.link, lease_ms=400),
            Agent(ScriptedEngine([]), FunctionExecutor({}), store),
        )
        stop = asyncio.Event()
        task = asyncio.create_task(worker.serve(stop))
        try:
            await until(lambda: unhealthy(worker))
            with pytest.raises(UnhealthyError, match="heartbeat loop is dead: RuntimeError"):
                worker.check_health()
        finally:
            stop.set()
            await task
            await client.aclose()

    asyncio.run(body())


async def status_is(store: RedisStore, run_id: str, stop_reason: str) -> bool:
    found = await store.record("acme", run_id)
    return found is not None and found[1].stop_reason == stop_reason


async def every_loop_faulted(worker: Worker) -> bool:
    return min(worker.faults.values()) >= 1


@asynccontextmanager
async def fresh_store(url: str) -> AsyncIterator[RedisStore]:
    client = Redis.from_url(url)
    try:
        yield RedisStore(client)
    finally:
        await client.aclose()


async def unhealthy(worker: Worker) -> bool:
    try:
        worker.check_health()
    except UnhealthyError:
        return True
    return False


def test_the_service_clients_timeout_is_set_and_outlasts_their_blocking_reads() -> None:
    """The worker's retries rely on a stalled command timing out: the timeout is ours, not redis-py's
    default of the day (none at all before redis-py 6)."""
    client = connect("redis://127.0.0.1:1")
    options = client.connection_pool.connection_kwargs
    assert options["socket_timeout"] == options["socket_connect_timeout"] == SOCKET_TIMEOUT_S
    assert SOCKET_TIMEOUT_S > 1.0  # an event watcher's blocking read (hub.py) must not time out
