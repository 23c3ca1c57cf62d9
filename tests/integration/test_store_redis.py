"""The Redis run store, queue and worker against a real redis-server."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncGenerator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import pytest
from redis.asyncio import Redis

from orchestrator.calls import digest
from orchestrator.engines import Latency, ScriptedEngine
from orchestrator.errors import LeaseLostError, RunNotFoundError
from orchestrator.loop import Agent
from orchestrator.memory import FunctionExecutor
from orchestrator.ports import CallSlot, Chunk, CompletionRequest, Limits, Outcome, RunSpec, StepCommit
from orchestrator.records import RunRecord
from orchestrator.redis import QUEUE, RedisStore, RunQueue, submissions
from orchestrator.runs import first_checkpoint, new_run
from orchestrator.worker import Worker
from toolbox.protocol import ToolCall, ToolResult, ToolSpec
from workers.errors import SandboxError
from workers.executor import Executor
from workers.registry import builtin_registry
from workers.sandbox import PooledSandbox
from workers.sandbox.scratch import ScratchSettings

pytestmark = pytest.mark.integration
T = TypeVar("T")
INCR = ToolSpec(
    "incr", "Count.", {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
)


def call(name: str, **arguments: Any) -> str:
    return f"<tool_call>\n{json.dumps({'name': name, 'arguments': arguments})}\n</tool_call>"


def counting_script(steps: int) -> Callable[[str], str]:
    """Stateless: the answer depends only on how many tool turns the prompt already holds."""

    def script(prompt: str) -> str:
        done = prompt.count("<|im_start|>tool\n")
        return call("incr", n=done) + call("incr", n=100 + done) if done < steps else f"finished after {done}"

    return script


def with_redis(url: str, body: Callable[[Redis], Awaitable[T]]) -> T:
    async def main() -> T:
        client = Redis.from_url(url)
        try:
            return await body(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


async def record_of(store: RedisStore, tenant: str, run_id: str) -> RunRecord:
    found = await store.record(tenant, run_id)
    assert found is not None, run_id
    return found[1]


async def submit(store: RedisStore, text: str = "count", **options: Any) -> RunSpec:
    spec = new_run(
        tenant=options.pop("tenant", "acme"), thread_id=options.pop("thread", "th-1"), tools=[INCR], **options
    )
    history = await store.thread(spec.tenant, spec.thread_id)
    await store.submit(spec, first_checkpoint(spec, history), text)
    return spec


def test_a_run_persists_exact_turns_steps_events_and_ledger(redis_url: str) -> None:
    async def body(client: Redis) -> None:
        store = RedisStore(client, ttl_s=3600)
        spec = await submit(store)
        _, ckpt, status = await store.load(spec.tenant, spec.run_id)
        engine = ScriptedEngine(counting_script(2))
        outcome = await Agent(engine, FunctionExecutor({"incr": lambda n: n}), store).run(spec, ckpt)
        assert (outcome.stop_reason, outcome.steps, status) == ("answer", 3, "queued")
        turns = await store.thread(spec.tenant, spec.thread_id)
        assert len(turns) == 1 + 2 + 2 + 1
        # The stored bytes are exactly what the model saw: the last prompt is prefix + all but the answer.
        assert engine.requests[-1].prompt == spec.prefix + "".join(turns[:-1]) + "<|im_start|>assistant\n"
        events = await store.events(spec.tenant, spec.run_id)
        assert [e.kind for e in events].count("tool_result") == 4 and events[-1].kind == "finished"
        assert events == sorted(events, key=lambda e: tuple(map(int, e.id.split("-"))))
        later = await store.events(spec.tenant, spec.run_id, after=events[3].id)
        assert later == events[4:]
        record = await record_of(store, spec.tenant, spec.run_id)
        assert (record.status, record.stop_reason, record.step) == ("finished", "answer", 3)
        keys = sorted(k.decode() for k in await client.keys("*"))
        assert all(k.startswith("cad:t:acme:") for k in keys if k != QUEUE)
        ttls = [await client.ttl(k) for k in keys if k != QUEUE]
        assert ttls and all(0 < ttl <= 3600 for ttl in ttls), dict(zip(keys, ttls, strict=False))
        ledger = [field.decode() for field in await client.hkeys(f"cad:t:acme:run:{spec.run_id}:ledger")]
        assert len([field for field in ledger if "@" not in field]) == 4  # one entry per call
        assert sorted(field for field in ledger if "@" in field) == ["0@0", "0@1", "1@0", "1@1"]

    with_redis(redis_url, body)


def test_tenants_never_share_keys(redis_url: str) -> None:
    async def body(client: Redis) -> None:
        store = RedisStore(client)
        one = await submit(store, "from a", tenant="a", run_id="r1")
        two = await submit(store, "from b", tenant="b", run_id="r1")
        assert await store.thread("a", one.thread_id) != await store.thread("b", two.thread_id)
        assert (await store.load("a", "r1"))[0].tenant == "a"
        with pytest.raises(Exception, match="must be 1-128"):
            await store.load("a:run:r1", "x")

    with_redis(redis_url, body)


class Crash(BaseException):
    """Stands in for the process dying in the middle of a tool call."""


def test_resume_replays_completed_calls_and_never_reruns_an_interrupted_one(redis_url: str) -> None:
    effects: dict[int, int] = {}

    def incr(n: int) -> int:
        effects[n] = effects.get(n, 0) + 1
        if n == 101:
            raise Crash
        return n

    async def body(client: Redis) -> None:
        store = RedisStore(client)
        spec = await submit(store)
        _, ckpt, _ = await store.load(spec.tenant, spec.run_id)
        executor = FunctionExecutor({"incr": incr})
        with pytest.raises(Crash):
            await Agent(ScriptedEngine(counting_script(3)), executor, store).run(spec, ckpt)
        _, resumed, _ = await store.load(spec.tenant, spec.run_id)
        assert resumed.step == 1 and len(resumed.turns) == 3
        engine = ScriptedEngine(counting_script(3))
        outcome = await Agent(engine, executor, store).run(spec, resumed)
        assert (outcome.stop_reason, outcome.steps) == ("answer", 4)
        assert effects == {0: 1, 100: 1, 1: 1, 101: 1, 2: 1, 102: 1}
        assert '"crashed"' in engine.requests[1].prompt.split("<|im_start|>tool")[-1]

    with_redis(redis_url, body)


def test_a_worker_that_lost_its_lease_cannot_commit(redis_url: str) -> None:
    async def body(client: Redis) -> None:
        store = RedisStore(client, worker="w1")
        spec = await submit(store)
        await client.set(f"cad:t:acme:run:{spec.run_id}:lease", "w2")
        commit = StepCommit(0, ("<|im_start|>assistant\nhi<|im_end|>\n",), 0, 1, 1, 0, {}, {"step": 0})
        with pytest.raises(LeaseLostError):
            await store.commit(spec, commit)
        assert len(await store.thread(spec.tenant, spec.thread_id)) == 1

    with_redis(redis_url, body)


def test_workers_take_runs_from_the_queue_and_cancellation_reaches_them(redis_url: str) -> None:
    async def body(client: Redis) -> None:
        store = RedisStore(client, worker="w1")
        queue = RunQueue(store.link, lease_ms=1000)
        runs = [await submit(store, thread=f"th-{n}") for n in range(5)]
        slow = new_run(tenant="acme", thread_id="slow", tools=[INCR], limits=Limits(max_steps=1000))
        await store.submit(slow, first_checkpoint(slow, []), "slow")
        script = counting_script(2)
        engine = ScriptedEngine(
            lambda p: script(p) if "slow" not in p else call("incr", n=p.count("tool\n")),
            latency=Latency(per_token_s=0.001),
        )
        worker = Worker(store, queue, Agent(engine, FunctionExecutor({"incr": lambda n: n}), store))
        stop = asyncio.Event()
        serving = asyncio.create_task(worker.serve(stop))
        while worker.finished < len(runs):
            await asyncio.sleep(0.05)
        await store.cancel("acme", slow.run_id)
        while worker.finished < len(runs) + 1:
            await asyncio.sleep(0.05)
        stop.set()
        await serving
        for spec in runs:
            assert (await record_of(store, "acme", spec.run_id)).stop_reason == "answer"
        assert (await record_of(store, "acme", slow.run_id)).stop_reason == "cancelled"
        assert await client.xlen(QUEUE) == 0

    with_redis(redis_url, body)


def test_a_run_whose_engine_fails_is_marked_failed_and_leaves_the_queue(redis_url: str) -> None:
    async def body(client: Redis) -> None:
        store = RedisStore(client, worker="w1")
        queue = RunQueue(store.link, lease_ms=1000)
        spec = await submit(store)
        engine = ScriptedEngine([])  # an empty script: the first model call raises ScriptError
        worker = Worker(store, queue, Agent(engine, FunctionExecutor({}), store))
        stop = asyncio.Event()
        serving = asyncio.create_task(worker.serve(stop))
        while (await record_of(store, "acme", spec.run_id)).status != "failed":
            await asyncio.sleep(0.05)
        stop.set()
        await serving
        record = await record_of(store, "acme", spec.run_id)
        assert record.error is not None and record.error.startswith(
            "internal_error: "
        )  # ScriptError's text stays in the log
        assert [e.kind for e in await store.events("acme", spec.run_id)] == ["failed"]
        assert await client.ttl(f"cad:t:acme:run:{spec.run_id}:events") > 0
        assert await client.xlen(QUEUE) == 0

    with_redis(redis_url, body)


def test_bytes_written_per_step_do_not_grow_with_the_history(redis_url: str) -> None:
    """A step appends its own turns and small records; it never rewrites what the thread already holds."""

    async def per_step(store: RedisStore, history: int) -> float:
        spec = new_run(tenant="acme", thread_id=f"h{history}", tools=[INCR], run_id=f"h{history}")
        past = [
            f"<|im_start|>user\nearlier turn {n:04d} with some words in it<|im_end|>\n"
            for n in range(history)
        ]
        if past:
            await store.redis.rpush(f"cad:t:acme:thread:{spec.thread_id}", *past)
        await store.submit(spec, first_checkpoint(spec, []), "count")
        _, ckpt, _ = await store.load(spec.tenant, spec.run_id)
        agent = Agent(ScriptedEngine(counting_script(5)), FunctionExecutor({"incr": lambda n: n}), store)
        before = (await store.redis.info("stats"))["total_net_input_bytes"]
        outcome = await agent.run(spec, ckpt)
        after = (await store.redis.info("stats"))["total_net_input_bytes"]
        return float(after - before) / outcome.steps

    async def body(client: Redis) -> None:
        store = RedisStore(client)
        await per_step(store, 0)  # the first run also loads the Lua scripts into the server
        short, long = await per_step(store, 1), await per_step(store, 300)
        # Only counters grow a digit or two (token counts); the history itself is never sent again.
        assert abs(long - short) < 0.05 * short, (short, long)

    with_redis(redis_url, body)


def test_a_tenants_runs_are_indexed_newest_first_trimmed_and_expiring(
    redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(submissions, "RUNS_INDEX_MAX", 3)

    async def body(client: Redis) -> None:
        store = RedisStore(client, ttl_s=3600)
        for n in range(5):
            await submit(store, tenant="acme", thread=f"th-{n}", run_id=f"r{n}")
        await submit(store, tenant="other", run_id="o1")
        page, more = await store.runs("acme", limit=2)
        assert ([spec.run_id for spec, _ in page], more) == (["r4", "r3"], True)
        page, more = await store.runs("acme", limit=2, after="r3")
        assert ([spec.run_id for spec, _ in page], more) == (["r2"], False)  # r0, r1: trimmed
        assert page[0][1].created_at > 0
        with pytest.raises(RunNotFoundError):
            await store.runs("acme", limit=2, after="o1")  # another tenant's run is no cursor here
        assert [spec.run_id for spec, _ in (await store.runs("other", limit=10))[0]] == ["o1"]
        assert 0 < await client.ttl("cad:t:acme:runs") <= 3600
        await client.delete("cad:t:acme:run:r3")  # an expired run is left out of its page
        assert [spec.run_id for spec, _ in (await store.runs("acme", limit=5))[0]] == ["r4", "r2"]

    with_redis(redis_url, body)


def test_runs_submitted_longer_ago_than_the_ttl_leave_the_index(redis_url: str) -> None:
    async def body(client: Redis) -> None:
        store = RedisStore(client, ttl_s=1)
        await submit(store, run_id="old", thread="th-old")
        await asyncio.sleep(1.1)
        await submit(store, run_id="new", thread="th-new")
        assert await client.zrange("cad:t:acme:runs", 0, -1) == [b"new"]

    with_redis(redis_url, body)


def test_tool_events_tell_each_call_with_its_arguments_and_result(redis_url: str) -> None:
    async def body(client: Redis) -> None:
        store = RedisStore(client)
        spec = await submit(store)
        _, ckpt, _ = await store.load(spec.tenant, spec.run_id)
        executor = FunctionExecutor({"incr": lambda n: {"n": n} if n < 100 else 1 / 0})
        await Agent(ScriptedEngine(counting_script(1)), executor, store).run(spec, ckpt)
        events = await store.events(spec.tenant, spec.run_id)
        # Calls run concurrently: their start events come in whichever order Redis took them.
        calls = sorted((e.data for e in events if e.kind == "tool_call"), key=lambda c: c["arguments"]["n"])
        results = {e.data["call_id"]: e.data for e in events if e.kind == "tool_result"}
        assert [(c["name"], c["arguments"]) for c in calls] == [("incr", {"n": 0}), ("incr", {"n": 100})]
        first, second = (results[c["call_id"]] for c in calls)
        assert (first["ok"], first["content"]) == (True, '{"n": 0}')
        assert (second["ok"], second["error"]["type"]) == (False, "tool_error")
        assert "ZeroDivisionError" in second["error"]["message"]
        kinds = [e.kind for e in events]
        assert kinds.index("tool_call") < kinds.index("tool_result") < kinds.index("step")

    with_redis(redis_url, body)


SEND_EMAIL = ToolSpec(
    "send_email", "Send an email.", {"type": "object", "properties": {"to": {"type": "string"}}}
)
CHARGE_CARD = ToolSpec(
    "charge_card", "Charge a card.", {"type": "object", "properties": {"cents": {"type": "integer"}}}
)


class DiesBeforeCommit(RedisStore):
    """Its worker dies once the step's calls are done, before the step is committed."""

    async def commit(self, spec: RunSpec, step: StepCommit) -> None:
        raise Crash


def test_a_different_call_after_a_take_over_runs_and_is_never_handed_the_old_result(redis_url: str) -> None:
    async def body(client: Redis) -> None:
        spec = new_run(tenant="acme", thread_id="pay", tools=[SEND_EMAIL, CHARGE_CARD])
        await RedisStore(client).submit(spec, first_checkpoint(spec, []), "pay and tell")
        lease = f"cad:t:acme:run:{spec.run_id}:lease"
        tools = {"send_email": lambda to: f"sent to {to}", "charge_card": lambda cents: f"charged {cents}"}
        await client.set(lease, "w1")
        first = DiesBeforeCommit(client, worker="w1")
        _, ckpt, _ = await first.load(spec.tenant, spec.run_id)
        with pytest.raises(Crash):
            await Agent(ScriptedEngine([call("send_email", to="bob")]), FunctionExecutor(tools), first).run(
                spec, ckpt
            )
        await client.set(lease, "w2")  # taken over; the step is sampled again and comes out different
        second = RedisStore(client, worker="w2")
        _, ckpt, _ = await second.load(spec.tenant, spec.run_id)
        executor = FunctionExecutor(tools)
        engine = ScriptedEngine([call("charge_card", cents=500), "done"])
        assert (await Agent(engine, executor, second).run(spec, ckpt)).stop_reason == "answer"
        assert [(made.name, made.arguments) for made in executor.calls] == [("charge_card", {"cents": 500})]
        tool_turn = engine.requests[1].prompt.split("<|im_start|>tool")[-1]
        assert "charged 500" in tool_turn and "sent to" not in tool_turn
        superseded = [
            e.data for e in await second.events(spec.tenant, spec.run_id) if e.kind == "call_superseded"
        ]
        assert [
            (s["index"], s["name"], s["superseded"]["name"], s["superseded"]["state"]) for s in superseded
        ] == [(0, "charge_card", "send_email", "done")]

    with_redis(redis_url, body)


def test_a_worker_that_lost_its_lease_writes_nothing_for_the_run(redis_url: str) -> None:
    async def body(client: Redis) -> None:
        stale = RedisStore(client, worker="w1")
        queue = RunQueue(stale.link)
        await queue.ensure_group()
        spec = await submit(stale)
        [claim] = await queue.take(1, block_ms=100)
        assert await queue.acquire(claim)
        await client.set(f"cad:t:acme:run:{spec.run_id}:lease", "w2")  # another worker took the run over
        made = ToolCall("call_0_0", "incr", {"n": 1})
        slot = CallSlot(0, 0, digest(made))
        writes = [
            stale.fail(spec.tenant, spec.run_id, "boom"),
            stale.emit(spec, "delta", {"step": 0, "text": "hi"}),
            stale.begin_call(spec, slot, made),
            stale.end_call(spec, slot, ToolResult(made.id, made.name, content=2)),
        ]
        for write in writes:
            with pytest.raises(LeaseLostError):
                await write
        assert not await queue.done(claim)
        assert (await record_of(stale, spec.tenant, spec.run_id)).status == "queued"
        assert await stale.events(spec.tenant, spec.run_id) == []
        assert not await client.exists(f"cad:t:acme:run:{spec.run_id}:ledger")
        assert (
            await client.xlen(QUEUE) == 1 and await client.get(f"cad:t:acme:run:{spec.run_id}:lease") == b"w2"
        )

    with_redis(redis_url, body)


class TakenOverThenFailing:
    """An engine whose run is taken over by another worker (its lease now names ``w2``), after which the
    engine fails: the run's first worker must neither mark the live run failed nor drop its queue entry."""

    model = "stale"

    def __init__(self, redis: Redis, lease: str) -> None:
        self._redis, self._lease = redis, lease

    async def stream(self, request: CompletionRequest) -> AsyncGenerator[Chunk, None]:
        await self._redis.set(self._lease, "w2")
        raise RuntimeError("the engine failed")
        yield Chunk()  # an async generator, as the port asks


def test_a_stale_worker_cannot_mark_a_live_run_failed_or_drop_its_queue_entry(redis_url: str) -> None:
    async def body(client: Redis) -> None:
        store = RedisStore(client, worker="w1")
        spec = await submit(store)
        lease = f"cad:t:acme:run:{spec.run_id}:lease"
        agent = Agent(TakenOverThenFailing(client, lease), FunctionExecutor({}), store)
        worker = Worker(store, RunQueue(store.link, lease_ms=1000), agent)
        stop = asyncio.Event()
        serving = asyncio.create_task(worker.serve(stop))
        while await client.get(lease) != b"w2" or worker.running:
            await asyncio.sleep(0.02)
        stop.set()
        await serving
        assert (await record_of(store, "acme", spec.run_id)).status == "queued"
        assert [e.kind for e in await store.events("acme", spec.run_id)] == []
        assert await client.xlen(QUEUE) == 1 and await client.get(lease) == b"w2"

    with_redis(redis_url, body)


class DiesBeforeFinish(RedisStore):
    """Its worker dies the moment the run's last step is committed, before anything else happens."""

    async def commit(self, spec: RunSpec, step: StepCommit) -> None:
        await super().commit(spec, step)
        if step.outcome is not None:
            raise Crash

    async def finish(self, spec: RunSpec, outcome: Outcome) -> None:
        raise AssertionError("a run whose last step carried its end needs no finish")


def test_a_run_whose_last_step_is_committed_is_finished_and_never_sampled_again(redis_url: str) -> None:
    """The answer's step and the run's end are written together: were they two writes, a crash between
    them would leave a running run whose thread ends with its answer, and a worker that took it over
    would ask the model again and append a second answer (the fault campaign found it)."""

    async def body(client: Redis) -> None:
        store = DiesBeforeFinish(client)
        spec = await submit(store)
        _, ckpt, _ = await store.load(spec.tenant, spec.run_id)
        with pytest.raises(Crash):
            await Agent(
                ScriptedEngine(counting_script(1)), FunctionExecutor({"incr": lambda n: n}), store
            ).run(spec, ckpt)
        status = await record_of(store, spec.tenant, spec.run_id)
        assert (status.status, status.stop_reason, status.step) == ("finished", "answer", 2)
        events = [event.kind for event in await store.events(spec.tenant, spec.run_id)]
        assert events.count("finished") == 1 and events[-1] == "finished"
        await RedisStore(client).finish(spec, Outcome(spec.run_id, "answer", steps=2))  # the late call
        assert [event.kind for event in await store.events(spec.tenant, spec.run_id)] == events

    with_redis(redis_url, body)


def test_a_call_whose_executor_raises_ends_its_ledger_entry_before_the_run_fails(
    redis_url: str, tmp_path: Path
) -> None:
    """A call begun and never ended would be reported as interrupted forever (its effect unknown); one
    that the worker knows failed is ended with that error before the exception fails the run."""
    unusable = tmp_path / "a-file"
    unusable.write_text("scratch directories cannot be made under a file")

    async def body(client: Redis) -> None:
        store = RedisStore(client)
        registry = builtin_registry()
        spec = new_run(tenant="acme", thread_id="th-x", tools=registry.specs())
        await store.submit(spec, first_checkpoint(spec, []), "add")
        _, ckpt, _ = await store.load(spec.tenant, spec.run_id)
        engine = ScriptedEngine([call("calculator", expression="1 + 1"), "done"])
        settings = ScratchSettings(quota=False)
        async with Executor(
            registry, sandbox=PooledSandbox("process", warm=0), scratch_root=unusable, scratch=settings
        ) as executor:
            with pytest.raises(SandboxError, match="cannot prepare the scratch directory"):
                await Agent(engine, executor, store).run(spec, ckpt)
        ledger = await client.hgetall(f"cad:t:acme:run:{spec.run_id}:ledger")
        entries = [json.loads(v) for k, v in ledger.items() if b"@" not in k]
        assert len(entries) == 1 and entries[0]["kind"] == "tool_result"
        assert entries[0]["error"]["type"] == "crashed" and "SandboxError" in entries[0]["error"]["message"]

    with_redis(redis_url, body)


def test_a_record_written_before_records_named_their_thread_still_loads(redis_url: str) -> None:
    """Older records have no ``thread`` field: a worker reads the run's thread with one more command."""

    async def body(client: Redis) -> None:
        store = RedisStore(client)
        spec = await submit(store, thread="th-old")
        await client.hdel(f"cad:t:acme:run:{spec.run_id}", "thread")
        loaded, ckpt, status = await store.load(spec.tenant, spec.run_id)
        assert (loaded, status, ckpt.turns) == (spec, "queued", await store.thread("acme", "th-old"))
        assert len(ckpt.turns) == 1
        outcome = await Agent(ScriptedEngine(["done"]), FunctionExecutor({}), store).run(loaded, ckpt)
        assert outcome.stop_reason == "answer" and len(await store.thread("acme", "th-old")) == 2

    with_redis(redis_url, body)
