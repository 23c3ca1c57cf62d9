"""One contract, two stores: each case runs against the Redis store (a real redis-server) and the in-memory
one, so that what the API's tests learn on ``MemoryStore`` holds on Redis, and the two cannot drift."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import pytest
from redis.asyncio import Redis

from orchestrator.engines import ScriptedEngine
from orchestrator.errors import RunNotFoundError, UnreadableRunError
from orchestrator.loop import Agent
from orchestrator.memory import FunctionExecutor, MemoryStore
from orchestrator.ports import Checkpoint, RunSpec, RunStore
from orchestrator.records import FINAL_KINDS, StoredStatus, event_order, is_over, run_status
from orchestrator.redis import RedisStore
from orchestrator.runs import first_checkpoint, new_run
from orchestrator.store_ports import ApiStore
from toolbox.protocol import ToolSpec

T = TypeVar("T")
ECHO = ToolSpec(
    "echo", "Echo.", {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"]}
)


class Store(ApiStore, RunStore, Protocol):
    async def load(self, tenant: str, run_id: str) -> tuple[RunSpec, Checkpoint, StoredStatus]: ...

    async def fail(self, tenant: str, run_id: str, error: str) -> None: ...


On = Callable[[Callable[[Store], Awaitable[T]]], T]


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.integration)])
def on_store(request: pytest.FixtureRequest) -> On[Any]:
    """Runs a test's body against a fresh store of the kind the parameter names."""

    def run(body: Callable[[Store], Awaitable[T]]) -> T:
        if request.param == "memory":
            return asyncio.run(body(MemoryStore()))
        url = request.getfixturevalue("redis_url")

        async def main() -> T:
            client = Redis.from_url(url)
            try:
                return await body(RedisStore(client))
            finally:
                await client.aclose()

        return asyncio.run(main())

    return run


def spec_of(run_id: str, thread: str = "th", tenant: str = "acme", **options: Any) -> RunSpec:
    return new_run(tenant=tenant, thread_id=thread, run_id=run_id, tools=[ECHO], **options)


async def submit(store: Store, run_id: str, thread: str = "th", tenant: str = "acme", **options: Any) -> Any:
    spec = spec_of(run_id, thread, tenant)
    return await store.submit(spec, first_checkpoint(spec, []), f"hi from {run_id}", **options)


def call(text: str) -> str:
    return f'<tool_call>\n{{"name": "echo", "arguments": {{"text": "{text}"}}}}\n</tool_call>'


def test_a_submission_writes_a_queued_run_and_its_thread(on_store: On[None]) -> None:
    async def body(store: Store) -> None:
        done = await submit(store, "r1", earlier=["<|im_start|>user\nbefore<|im_end|>\n"])
        assert (done.kind, done.run_id, done.record.status, done.record.thread) == (
            "created",
            "r1",
            "queued",
            "th",
        )
        found = await store.record("acme", "r1")
        assert found is not None and found[0] == spec_of("r1") and found[1] == done.record
        assert run_status(found[1]) == "queued" and not is_over(found[1].status)
        assert 0 < found[1].created_at <= time.time() and found[1].step == 0
        assert await store.thread("acme", "th") == [
            "<|im_start|>user\nbefore<|im_end|>\n",
            "<|im_start|>user\nhi from r1<|im_end|>\n",
        ]
        spec, ckpt, status = await store.load("acme", "r1")
        assert (spec.run_id, ckpt.step, ckpt.window_start, status) == ("r1", 0, 0, "queued")
        assert await store.events("acme", "r1") == [] and await store.ping()

    on_store(body)


def test_an_idempotency_key_replays_its_run_and_writes_nothing_more(on_store: On[None]) -> None:
    async def body(store: Store) -> None:
        assert (await submit(store, "r1", idempotency=("key", "f1"))).kind == "created"
        replay = await submit(store, "r2", thread="other", idempotency=("key", "f2"))
        assert (replay.kind, replay.run_id, replay.fingerprint) == ("replay", "r1", "f1")
        assert await store.record("acme", "r2") is None and await store.thread("acme", "other") == []
        # Keys are the tenant's own: another tenant's same key is another run.
        assert (await submit(store, "r3", tenant="globex", idempotency=("key", "f1"))).kind == "created"

    on_store(body)


def test_a_thread_must_exist_to_continue_and_takes_one_run_at_a_time(on_store: On[None]) -> None:
    async def body(store: Store) -> None:
        missing = await submit(store, "r1", thread="t1", claim=True, existing_thread=True)
        assert missing.kind == "no_thread" and await store.record("acme", "r1") is None
        assert await store.thread("acme", "t1") == []
        assert (await submit(store, "r1", thread="t1", claim=True)).kind == "created"
        busy = await submit(store, "r2", thread="t1", claim=True, existing_thread=True)
        assert (busy.kind, busy.run_id) == ("busy", "r1")
        assert await store.record("acme", "r2") is None and len(await store.thread("acme", "t1")) == 1
        assert await store.request_cancel("acme", "r1") == "finished"  # over: the thread is free
        assert (await submit(store, "r2", thread="t1", claim=True, existing_thread=True)).kind == "created"
        assert len(await store.thread("acme", "t1")) == 2

    on_store(body)


def test_another_tenants_ids_are_not_found(on_store: On[None]) -> None:
    async def body(store: Store) -> None:
        await submit(store, "r1", thread="t1")
        assert await store.record("globex", "r1") is None
        assert await store.thread("globex", "t1") == []
        assert await store.events("globex", "r1") == []
        assert await store.request_cancel("globex", "r1") is None
        assert await store.runs("globex", limit=10) == ([], False)
        with pytest.raises(RunNotFoundError):
            await store.runs("globex", limit=10, after="r1")
        found = await store.record("acme", "r1")
        assert found is not None and found[1].status == "queued"  # untouched by the other tenant

    on_store(body)


def test_runs_are_listed_newest_first_and_paged_after_a_cursor(on_store: On[None]) -> None:
    async def body(store: Store) -> None:
        for n in range(5):
            await submit(store, f"r{n}", thread=f"t{n}")
        page, more = await store.runs("acme", limit=2)
        assert ([spec.run_id for spec, _ in page], more) == (["r4", "r3"], True)
        page, more = await store.runs("acme", limit=2, after="r3")
        assert ([spec.run_id for spec, _ in page], more) == (["r2", "r1"], True)
        page, more = await store.runs("acme", limit=2, after="r1")
        assert ([spec.run_id for spec, _ in page], more) == (["r0"], False)
        assert (await store.runs("acme", limit=1, after="r0")) == ([], False)
        with pytest.raises(RunNotFoundError):
            await store.runs("acme", limit=2, after="r_never")

    on_store(body)


def test_a_run_ends_with_its_record_and_events_resumable_after_any_id(on_store: On[None]) -> None:
    async def body(store: Store) -> None:
        await submit(store, "r1")
        spec, ckpt, _ = await store.load("acme", "r1")
        engine = ScriptedEngine([call("once"), "done"])
        outcome = await Agent(engine, FunctionExecutor({"echo": lambda text: text}), store).run(spec, ckpt)
        assert (outcome.stop_reason, outcome.steps) == ("answer", 2)
        found = await store.record("acme", "r1")
        assert found is not None
        record = found[1]
        assert (record.status, record.stop_reason, record.output, record.step) == (
            "finished",
            "answer",
            "done",
            2,
        )
        assert run_status(record) == "completed" and is_over(record.status) and record.finished_at
        assert record.prompt_tokens == outcome.prompt_tokens and record.completion_tokens > 0
        events = await store.events("acme", "r1")
        kinds = [event.kind for event in events if event.kind != "delta"]
        assert kinds == ["tool_call", "tool_result", "step", "step", "finished"]
        assert events[-1].kind in FINAL_KINDS and events[-1].data == {"stop_reason": "answer", "steps": 2}
        call_event, result_event = (event.data for event in events if event.kind.startswith("tool_"))
        assert (
            call_event["arguments"] == {"text": "once"} and call_event["call_id"] == result_event["call_id"]
        )
        assert (result_event["ok"], result_event["content"]) == (True, '"once"')
        assert [event_order(e.id) for e in events] == sorted({event_order(e.id) for e in events})
        for n, event in enumerate(events):
            assert await store.events("acme", "r1", after=event.id) == events[n + 1 :]
        _, resumed, status = await store.load("acme", "r1")
        assert (resumed.step, status, len(resumed.turns)) == (2, "finished", 4)

    on_store(body)


def test_cancelling_a_queued_run_finishes_it_cancelled(on_store: On[None]) -> None:
    async def body(store: Store) -> None:
        assert await store.request_cancel("acme", "r_never") is None
        await submit(store, "r1")
        assert await store.request_cancel("acme", "r1") == "finished"
        found = await store.record("acme", "r1")
        assert found is not None
        assert (found[1].status, found[1].stop_reason, found[1].output) == ("finished", "cancelled", "")
        assert run_status(found[1]) == "cancelled"
        assert [(e.kind, e.data) for e in await store.events("acme", "r1")] == [
            ("finished", {"stop_reason": "cancelled", "steps": 0})
        ]
        assert await store.request_cancel("acme", "r1") == "finished"  # once: no second event
        assert len(await store.events("acme", "r1")) == 1

    on_store(body)


def test_a_run_that_fails_reads_failed(on_store: On[None]) -> None:
    async def body(store: Store) -> None:
        await submit(store, "r1")
        await store.fail("acme", "r1", "engine_error: try again")
        found = await store.record("acme", "r1")
        assert found is not None and run_status(found[1]) == "failed" and is_over(found[1].status)
        assert found[1].error == "engine_error: try again" and found[1].finished_at
        assert [(e.kind, e.data) for e in await store.events("acme", "r1")] == [
            ("failed", {"error": "engine_error: try again"})
        ]

    on_store(body)


def test_a_spec_that_would_not_read_back_is_refused_before_any_write(on_store: On[None]) -> None:
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(120):
        schema = {"type": "object", "properties": {"a": schema}}

    async def body(store: Store) -> None:
        spec = RunSpec("r_deep", "acme", "t_deep", "", json_schema=schema)
        with pytest.raises(UnreadableRunError, match="would not read back"):
            await store.submit(spec, Checkpoint(deadline=time.time() + 60), "hi", idempotency=("k", "f"))
        assert await store.record("acme", "r_deep") is None and await store.thread("acme", "t_deep") == []
        assert (await submit(store, "r_ok", idempotency=("k", "f"))).kind == "created"  # the key is free

    on_store(body)


def test_blocking_reads_wait_for_the_next_event_and_end_when_interrupted(on_store: On[None]) -> None:
    async def body(store: Store) -> None:
        await submit(store, "r1")
        await submit(store, "r2", thread="t2")
        spec = spec_of("r2", "t2")
        reader = store.reader()
        try:
            assert await reader.read({("acme", "r1"): "0-0", ("acme", "r2"): "0-0"}) == {}
            later = asyncio.ensure_future(emit(store, spec, after_s=0.1))
            started = time.monotonic()
            found = await reader.read({("acme", "r1"): "0-0", ("acme", "r2"): "0-0"}, block_ms=5000)
            assert list(found) == [("acme", "r2")] and [e.kind for e in found[("acme", "r2")]] == [
                "compacted"
            ]
            assert time.monotonic() - started < 4
            await later
            quiet = await reader.read({("acme", "r1"): "0-0"}, block_ms=100)
            assert quiet == {}
            waiting = asyncio.ensure_future(reader.read({("acme", "r1"): "0-0"}, block_ms=20_000))
            await asyncio.sleep(0.2)
            await reader.interrupt()
            async with asyncio.timeout(5):
                assert await waiting == {}
            assert await reader.statuses([("acme", "r1"), ("acme", "r_never")]) == ["queued", None]
            next_one = asyncio.ensure_future(store.events("acme", "r1", block_ms=5000))
            await asyncio.sleep(0.1)
            await store.emit(spec_of("r1"), "resumed", {"worker": "w", "step": 0})
            async with asyncio.timeout(5):
                assert [e.kind for e in await next_one] == ["resumed"]
        finally:
            await reader.aclose()

    on_store(body)


async def emit(store: Store, spec: RunSpec, *, after_s: float) -> None:
    await asyncio.sleep(after_s)
    await store.emit(spec, "compacted", {"step": 0, "dropped": 1, "window_start": 1})


def test_event_data_is_json_the_api_can_pass_on(on_store: On[None]) -> None:
    async def body(store: Store) -> None:
        await submit(store, "r1")
        spec = spec_of("r1")
        await store.emit(spec, "delta", {"step": 0, "text": "héllo <|im_end|>"})
        [event] = await store.events("acme", "r1")
        assert event.data == {"step": 0, "text": "héllo <|im_end|>"}
        assert json.loads(json.dumps(event.data)) == event.data

    on_store(body)


def test_a_run_reads_back_with_the_turns_it_committed_and_its_awaited_calls(on_store: On[None]) -> None:
    weather = ToolSpec("weather", "Weather.", {"type": "object", "properties": {}})

    async def body(store: Store) -> None:
        await submit(store, "r0")
        await store.request_cancel("acme", "r0")  # frees the thread
        spec = new_run(
            tenant="acme", thread_id="th", run_id="r1", tools=[ECHO, weather], client_tools=["weather"]
        )
        done = await store.submit(spec, first_checkpoint(spec, []), "hi", claim=True)
        assert (done.kind, done.record.first_turn, done.record.turn_count) == ("created", 2, 0)
        loaded, ckpt, _ = await store.load("acme", "r1")
        assert loaded.client_tools == ("weather",)
        weather_call = '<tool_call>\n{"name": "weather", "arguments": {}}\n</tool_call>'
        engine = ScriptedEngine([call("x"), call("y") + weather_call])
        outcome = await Agent(engine, FunctionExecutor({"echo": lambda text: text}), store).run(loaded, ckpt)
        assert outcome.stop_reason == "tool_calls"
        found = await store.run_turns("acme", "r1")
        assert found is not None
        (_, record), turns = found
        assert (record.first_turn, record.turn_count, len(turns)) == (2, 3, 3)
        assert turns == (await store.thread("acme", "th"))[2:]
        roles = [t.split("\n", 1)[0].removeprefix("<|im_start|>") for t in turns]
        assert roles == ["assistant", "tool", "assistant"]
        assert record.awaiting == outcome.awaiting and len(record.awaiting) == 2
        assert run_status(record) == "requires_action"
        assert await store.run_turns("acme", "r_none") is None
        assert await store.run_turns("globex", "r1") is None

    on_store(body)


def test_a_run_may_follow_only_its_threads_latest_run_and_may_add_no_user_turn(on_store: On[None]) -> None:
    async def body(store: Store) -> None:
        await submit(store, "r1", claim=True)
        await store.request_cancel("acme", "r1")
        moved = await submit(store, "r2", claim=True, existing_thread=True, follows="r0")
        assert (moved.kind, moved.run_id) == ("moved", "r1")
        assert await store.record("acme", "r2") is None and len(await store.thread("acme", "th")) == 1
        spec = spec_of("r2")
        tool_turn = "<|im_start|>tool\n<tool_response>\n{}\n</tool_response>\n<|im_end|>\n"
        done = await store.submit(
            spec, first_checkpoint(spec, []), None, earlier=[tool_turn], claim=True, follows="r1"
        )
        assert (done.kind, done.record.first_turn) == ("created", 2)
        assert (await store.thread("acme", "th"))[1:] == [tool_turn]
        with pytest.raises(ValueError, match="at least one turn"):
            await store.submit(spec_of("r3"), first_checkpoint(spec, []), None)

    on_store(body)


def test_a_run_that_is_over_can_be_deleted_and_its_thread_stays(on_store: On[None]) -> None:
    async def body(store: Store) -> None:
        await submit(store, "r1")
        assert await store.delete("acme", "r1") == "busy"
        assert await store.delete("globex", "r1") is None
        await store.request_cancel("acme", "r1")
        assert await store.delete("acme", "r1") == "deleted"
        assert await store.record("acme", "r1") is None and await store.events("acme", "r1") == []
        assert (await store.runs("acme", limit=10))[0] == []
        assert await store.delete("acme", "r1") is None
        assert len(await store.thread("acme", "th")) == 1

    on_store(body)
