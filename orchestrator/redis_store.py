"""Run memory in Redis: the only module that imports ``redis``.

Key layout (every key of a tenant starts with ``cad:t:{tenant}:``, so tenants never share a key; ids are
restricted to ``[A-Za-z0-9_.-]`` so no id can reach into another's keys)::

    cad:t:{tenant}:thread:{thread}        LIST    the thread's turns, each its exact rendered bytes
                                                  (appended, never rewritten; replay never re-renders)
    cad:t:{tenant}:run:{run}              HASH    spec (JSON), status, step, window_start, token counts,
                                                  json_retries, deadline, trace (W3C carrier), outcome
    cad:t:{tenant}:run:{run}:steps        LIST    one small JSON record per acknowledged step
    cad:t:{tenant}:run:{run}:events       STREAM  tool_call / tool_result / step / compacted / resumed /
                                                  finished / failed events; Redis stream ids are
                                                  monotonic: resume from the last seen
    cad:t:{tenant}:run:{run}:ledger       HASH    "{step}:{digest}:{occurrence}" -> {"state": "started", ...}
                                                  or the ToolResult; "{step}@{index}" -> the entry the
                                                  step's call at that index was (``CallSlot``)
    cad:t:{tenant}:run:{run}:repeats      HASH    call signature -> times made (repeated-call limit)
    cad:t:{tenant}:run:{run}:lease        STRING  the owning worker's id, with a TTL renewed by heartbeats
    cad:t:{tenant}:run:{run}:cancel       STRING  present once cancellation is requested
    cad:t:{tenant}:thread:{thread}:run    STRING  the thread's latest run: one run at a time per thread
    cad:t:{tenant}:idem:{sha256(key)}     STRING  an Idempotency-Key's {"fingerprint", "run"} (24 h TTL)
    cad:t:{tenant}:runs                   ZSET    the tenant's runs by submission time (newest last): the
                                                  runs submitted in the last ``ttl_s``, at most
                                                  ``RUNS_INDEX_MAX`` of them (trimmed, and its TTL renewed,
                                                  by each submission)
    cad:queue                             STREAM  run queue (consumer group "orchestrators"): tenant, run

A step costs O(1) writes whatever the history length: its new turns, one step record, one event per step
and per call, a few counters, TTL refreshes. Every key of a run and its thread expires ``ttl_s`` after its
last write; a run stays in its tenant's index for ``ttl_s`` after its submission.

Every write a worker makes for a run (``commit``, ``finish``, ``fail``, ``begin_call``, ``end_call``,
``emit``, and the queue's ``done`` and heartbeat) is a Lua script that first checks that this worker still
holds the run's lease (a fencing check, atomic with the write): a worker that lost its lease can never
write over the worker that took the run over, mark its run failed or remove its queue entry. ``commit``
also checks the step number, so a step is acknowledged once.

The tool-call ledger is keyed by what was called, not only where: a step sampled again after a take-over
replays a ledgered result only to the identical call (same name and canonical arguments); a different call
runs as a new entry, and the call it replaced at that position is reported (a ``call_superseded`` event).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hashlib
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypeAlias, TypeVar

from pydantic import TypeAdapter, ValidationError
from redis.asyncio import BlockingConnectionPool, Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import (
    NoScriptError,
    ReadOnlyError,
    RedisError,
    ResponseError,
    TryAgainError,
)
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT

from orchestrator import redis_scripts as lua
from orchestrator.errors import (
    UNREADABLE_RUN,
    LeaseLostError,
    RunNotFoundError,
    StoreError,
    StoreUnavailableError,
    UnreadableRunError,
)
from orchestrator.ports import CallSlot, Checkpoint, Interrupted, Outcome, RunSpec, StepCommit
from orchestrator.runs import user_turn
from toolbox.protocol import ToolCall, ToolResult, from_json, to_json

log = logging.getLogger(__name__)

T = TypeVar("T")
QUEUE = "cad:queue"
GROUP = "orchestrators"
DEFAULT_TTL_S = 7 * 24 * 3600
EVENTS_MAXLEN = 10_000
_ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")
_SPEC: TypeAdapter[RunSpec] = TypeAdapter(RunSpec)
_STARTED = b'{"state":"started"'  # how a ledger entry of a call that never finished begins
IDEMPOTENCY_TTL_S = 24 * 3600
RUNS_INDEX_MAX = 10_000  # the most runs a tenant's index keeps (the newest)
# A command's timeout on the service's clients. Longer than any blocking read they make (the worker's
# take: 100 ms; an event watcher's read: 1 s), which would otherwise time out while waiting as asked.
SOCKET_TIMEOUT_S = 5.0
_PREVIEW = 200  # characters of a tool's result that its event carries
# What Redis raises when it is unreachable or refuses to serve: the REST API answers 503 for these (it
# names them from here, because this is the one module that imports redis).
UNAVAILABLE: tuple[type[Exception], ...] = (RedisError, OSError, StoreError)
# What passes if one waits: Redis unreachable, restarting, loading its data, stalled past the client's
# timeout, or a replica not yet promoted. A worker retries these with backoff (``orchestrator.worker``).
_REDIS_TRANSIENT: tuple[type[Exception], ...] = (
    RedisConnectionError,  # BusyLoadingError (Redis loading its data) is one
    RedisTimeoutError,
    ReadOnlyError,
    TryAgainError,
    OSError,
)
TRANSIENT: tuple[type[Exception], ...] = (*_REDIS_TRANSIENT, StoreUnavailableError)


def _store_error(exc: BaseException) -> StoreError:
    kind = StoreUnavailableError if isinstance(exc, _REDIS_TRANSIENT) else StoreError
    return kind(f"redis: {type(exc).__name__}: {exc}")


def _check_id(kind: str, value: str) -> str:
    if not _ID.fullmatch(value):
        raise StoreError(f"{kind} id {value!r} must be 1-128 of [A-Za-z0-9_.-]")
    return value


def encode_spec(spec: RunSpec) -> bytes:
    """The spec as it is stored, once it is proven to read back: ``UnreadableRunError`` if it would not
    (pydantic's JSON reader refuses nesting deeper than 200 levels, which a Python dict can hold)."""
    data = _SPEC.dump_json(spec)
    try:
        _SPEC.validate_json(data)
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"] if exc.errors() else "invalid"
        raise UnreadableRunError(f"run {spec.run_id}: its spec would not read back ({problem})") from None
    return data


def _decode_spec(raw: bytes | str, run_id: str, status: str) -> RunSpec:
    try:
        return _SPEC.validate_json(raw)
    except ValidationError as exc:
        raise UnreadableRunError(f"run {run_id}: its stored spec cannot be read", status=status) from exc


@dataclass(frozen=True)
class Keys:
    run: str
    thread: str
    steps: str
    events: str
    repeats: str
    lease: str
    ledger: str
    cancel: str

    @classmethod
    @functools.lru_cache(maxsize=4096)  # ids are validated and keys built once per run, not per write
    def of(cls, tenant: str, run_id: str, thread_id: str = "") -> Keys:
        base = f"cad:t:{_check_id('tenant', tenant)}:"
        run = f"{base}run:{_check_id('run', run_id)}"
        thread = f"{base}thread:{_check_id('thread', thread_id)}" if thread_id else ""
        return cls(
            run,
            thread,
            f"{run}:steps",
            f"{run}:events",
            f"{run}:repeats",
            f"{run}:lease",
            f"{run}:ledger",
            f"{run}:cancel",
        )

    def for_commit(self) -> list[str]:
        return [self.run, self.thread, self.steps, self.events, self.repeats, self.lease, self.ledger]


@dataclass(frozen=True)
class Event:
    id: str
    kind: str
    data: dict[str, Any]


@dataclass(frozen=True)
class Submitted:
    """What a submission did: ``created`` the run (``record``: its record's fields, as written, but the
    spec), found its idempotency key bound already (``replay``: the bound ``run_id`` and the request's
    ``fingerprint``), found ``no_thread`` to continue, or the thread ``busy`` with run ``run_id``."""

    kind: Literal["created", "replay", "no_thread", "busy"]
    run_id: str
    record: dict[str, str] = dataclasses.field(default_factory=dict)
    fingerprint: str = ""


@dataclass(frozen=True)
class Claim:
    """A queue entry this worker took: the run to work on, and the entry to acknowledge when done."""

    entry: str
    tenant: str
    run_id: str


def _text(value: bytes | str | None) -> str:
    return value.decode() if isinstance(value, bytes) else (value or "")


_Pending: TypeAlias = tuple[AsyncScript, list[str], list[EncodableT], "asyncio.Future[Any]"]


class _Batcher:
    """Group commit: the scripts that concurrent runs call in the same event-loop tick go to Redis in one
    pipeline. Each script is still atomic on its own and each caller still waits for its own reply, so
    nothing is acknowledged before Redis has applied it; many runs just share the round trip."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._pending: list[_Pending] = []

    async def run(self, script: AsyncScript, keys: list[str], args: list[EncodableT]) -> Any:
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if not self._pending:
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append((script, keys, args, future))
        return await future

    def _flush(self) -> None:
        batch, self._pending = self._pending, []
        task = asyncio.ensure_future(self._send(batch))
        _IN_FLIGHT.add(task)
        task.add_done_callback(_IN_FLIGHT.discard)

    async def _send(self, batch: list[_Pending]) -> None:
        try:
            replies = await self._execute(batch)
            missing = [n for n, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
            if missing:
                await self._retry(batch, missing, replies)
        except BaseException as exc:  # the connection failed: every caller in the batch hears of it
            for *_, future in batch:
                if not future.done():
                    future.set_exception(_store_error(exc))
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for (*_, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue  # its caller was cancelled; the write itself went through
            if isinstance(reply, Exception):
                future.set_exception(_store_error(reply))
            else:
                future.set_result(reply)

    async def _retry(self, batch: list[_Pending], missing: list[int], replies: list[Any]) -> None:
        """First use, or the server lost its script cache (a restart): load the scripts, then rerun the
        calls that got NOSCRIPT (such a call did not run)."""
        for script in {id(batch[n][0]): batch[n][0] for n in missing}.values():
            await self._redis.script_load(script.script)
        for n, reply in zip(missing, await self._execute([batch[n] for n in missing]), strict=True):
            replies[n] = reply

    async def _execute(self, batch: list[_Pending]) -> list[Any]:
        # EVALSHA directly: a pipeline given Script objects would first ask SCRIPT EXISTS, a round trip more.
        async with self._redis.pipeline(transaction=False) as pipe:
            for script, keys, args, _ in batch:
                pipe.evalsha(script.sha, len(keys), *keys, *args)
            replies: list[Any] = await pipe.execute(raise_on_error=False)
            return replies


# Flush tasks are kept referenced until done, so that the event loop cannot drop one half-way.
_IN_FLIGHT: set[asyncio.Task[None]] = set()


def connect(url: str, *, password: str | None = None, max_connections: int = 64) -> Redis:
    """A client for a service process: at most ``max_connections`` to Redis, and a request that finds
    them all busy waits (up to 30 s) for one instead of failing: a burst of requests queues, it does not
    turn into 503s (redis-py's default pool raises "Too many connections" past its limit).

    Every command times out after ``SOCKET_TIMEOUT_S``: a stalled Redis then raises a timeout, which the
    worker retries and the API answers 503, instead of a wait with no end."""
    pool = BlockingConnectionPool.from_url(
        url,
        password=password,
        max_connections=max_connections,
        timeout=30,
        socket_timeout=SOCKET_TIMEOUT_S,
        socket_connect_timeout=SOCKET_TIMEOUT_S,
    )
    return Redis.from_pool(pool)  # the client owns the pool: closing it closes the connections


class RedisStore:
    """The ``RunStore`` on Redis, plus what submitters, readers and workers need around it.

    ``worker`` is this process's worker id: writes that move a run forward are fenced by its lease.
    Leave it empty only where no queue is used (one process owns every run it runs).
    """

    def __init__(self, redis: Redis, *, worker: str = "", ttl_s: int = DEFAULT_TTL_S) -> None:
        self.redis = redis
        self.worker = worker
        self._ttl = ttl_s
        self._batch = _Batcher(redis)
        self._commit = redis.register_script(lua.COMMIT)
        self._finish = redis.register_script(lua.FINISH)
        self._release = redis.register_script(lua.RELEASE)
        self._begin = redis.register_script(lua.BEGIN_CALL)
        self._end = redis.register_script(lua.END_CALL)
        self._emit = redis.register_script(lua.EMIT)
        self._fail = redis.register_script(lua.FAIL)
        self._done = redis.register_script(lua.DONE)
        self._heartbeat = redis.register_script(lua.HEARTBEAT)
        self._cancel = redis.register_script(lua.CANCEL)
        self._submit = redis.register_script(lua.SUBMIT)
        self._start_script = redis.register_script(lua.START)
        self._list = redis.register_script(lua.LIST_RUNS)

    # -- the RunStore port -----------------------------------------------------------------------

    async def commit(self, spec: RunSpec, step: StepCommit) -> None:
        keys = Keys.of(spec.tenant, spec.run_id, spec.thread_id)
        pairs = [str(part) for key, count in step.repeats.items() for part in (key, count)]
        args: list[EncodableT] = [
            self.worker,
            step.step,
            step.window_start,
            step.prompt_tokens,
            step.completion_tokens,
            step.json_retries,
            json.dumps(step.record, separators=(",", ":")),
            self._ttl,
            EVENTS_MAXLEN,
            len(step.turns),
            *(_ending(step.outcome) if step.outcome is not None else ("", "")),
            *step.turns,
            *pairs,
        ]
        done = await self._batch.run(self._commit, keys.for_commit(), args)
        if done == 0:
            raise LeaseLostError(f"run {spec.run_id}: lease lost before step {step.step} was committed")
        if done == -1:
            raise StoreError(f"run {spec.run_id}: step {step.step} is not the next step to commit")

    async def begin_call(
        self, spec: RunSpec, slot: CallSlot, call: ToolCall, delta: str = ""
    ) -> ToolResult | Interrupted | None:
        keys = Keys.of(spec.tenant, spec.run_id)
        data = {"step": slot.step, "index": slot.index, "call_id": call.id, "name": call.name}
        started = {"state": "started", "name": call.name, "index": slot.index}
        args: list[EncodableT] = [
            self.worker,
            slot.entry,
            slot.position,
            _compact(started),
            self._ttl,
            _compact(data | {"arguments": call.arguments}),
            EVENTS_MAXLEN,
            _compact({"step": slot.step, "text": delta}) if delta else "",
        ]
        reply = await self._batch.run(self._begin, [keys.ledger, keys.events, keys.lease], args)
        if reply[0] == b"lost":
            raise LeaseLostError(f"run {spec.run_id}: lease lost before call {slot.entry} began")
        if reply[0] == b"new":
            return None
        if reply[1].startswith(_STARTED):
            return Interrupted(call)
        return _replayed(spec, slot, call, reply[1])

    async def end_call(self, spec: RunSpec, slot: CallSlot, result: ToolResult) -> None:
        keys = Keys.of(spec.tenant, spec.run_id)
        data = {
            "step": slot.step,
            "index": slot.index,
            "call_id": result.call_id,
            "name": result.name,
            "ok": result.ok,
        }
        data |= _result_preview(result)
        args: list[EncodableT] = [self.worker, slot.entry, to_json(result), json.dumps(data), EVENTS_MAXLEN]
        if not await self._batch.run(self._end, [keys.ledger, keys.events, keys.lease], args):
            raise LeaseLostError(f"run {spec.run_id}: lease lost before call {slot.entry} ended")

    async def emit(self, spec: RunSpec, kind: str, data: dict[str, Any]) -> None:
        keys = Keys.of(spec.tenant, spec.run_id)
        args: list[EncodableT] = [self.worker, kind, _compact(data), EVENTS_MAXLEN]
        if not await self._batch.run(self._emit, [keys.events, keys.lease], args):
            raise LeaseLostError(f"run {spec.run_id}: lease lost before its {kind} event")

    async def finish(self, spec: RunSpec, outcome: Outcome) -> None:
        """Record the run's end (a no-op when its last step's commit recorded it already)."""
        keys = Keys.of(spec.tenant, spec.run_id)
        fields, data = _ending(outcome)
        args: list[EncodableT] = [self.worker, fields, data, EVENTS_MAXLEN, self._ttl]
        if not await self._batch.run(self._finish, [keys.run, keys.events, keys.lease], args):
            raise LeaseLostError(f"run {spec.run_id}: lease lost before it finished")

    async def fail(self, tenant: str, run_id: str, error: str) -> None:
        """Record that the run failed through no fault of the model's (fenced by the lease like every
        write of a worker: a worker that lost the run cannot mark it failed)."""
        keys = Keys.of(tenant, run_id)
        data = _compact({"error": error})
        args: list[EncodableT] = [self.worker, error, repr(time.time()), data, EVENTS_MAXLEN, self._ttl]
        if not await self._batch.run(self._fail, [keys.run, keys.events, keys.lease], args):
            raise LeaseLostError(f"run {run_id}: lease lost before it was marked failed")

    # -- submitting, reading, cancelling -----------------------------------------------------------

    async def submit(
        self,
        spec: RunSpec,
        ckpt: Checkpoint,
        text: str,
        *,
        enqueue: bool = True,
        earlier: Sequence[str] = (),
        extra: Mapping[str, str] | None = None,
        claim: bool = False,
        existing_thread: bool = False,
        idempotency: tuple[str, str] | None = None,
    ) -> Submitted:
        """Append the user's turn to the thread, write the run record, and queue the run: one script, one
        round trip, all or nothing.

        ``earlier`` are rendered turns that go before the user's (a conversation given whole, as the
        chat-completions endpoint receives it); ``extra`` are more record fields (the API's metadata).
        The record's ``created_at`` is now, which also places the run in its tenant's index.
        ``claim``: the run claims its thread, unless another run of it is still queued or running (two
        runs appending to one thread at once would interleave their turns); the claim lasts as long as
        the record. ``existing_thread``: the thread must exist already. ``idempotency``: (key,
        fingerprint of the request): a key bound already is answered with its binding (nothing is
        written), else it is bound to this run, with the run.
        """
        keys, now = Keys.of(spec.tenant, spec.run_id, spec.thread_id), time.time()
        record: dict[str, str | bytes] = dict((extra or {}).items())
        record |= {
            "spec": encode_spec(spec),  # refuses a spec that would not read back, before any write
            "thread": spec.thread_id,  # so that a worker reads the run and its thread in one script
            "created_at": repr(now),
            "status": "queued",
            "step": "0",
            "window_start": str(ckpt.window_start),
            "prompt_tokens": "0",
            "completion_tokens": "0",
            "json_retries": "0",
            "deadline": repr(ckpt.deadline),
            "trace": json.dumps(ckpt.trace),
        }
        binding = ""
        idem_key = keys.run  # a key the script never touches when there is no binding
        if idempotency is not None:
            idem_key = _idempotency_key(spec.tenant, idempotency[0])
            binding = json.dumps({"fingerprint": idempotency[1], "run": spec.run_id})
        turns = [*earlier, user_turn(text)]
        args: list[EncodableT] = [
            spec.run_id,
            spec.tenant,
            self._ttl,
            repr(now),
            "1" if existing_thread else "0",
            binding,
            IDEMPOTENCY_TTL_S,
            Keys.of(spec.tenant, spec.run_id).run.removesuffix(spec.run_id),
            repr(now - self._ttl),
            RUNS_INDEX_MAX,
            "1" if enqueue else "0",
            "1" if claim else "0",
            len(turns),
            *turns,
            *(part for pair in record.items() for part in pair),
        ]
        claim_key = _thread_run_key(spec.tenant, spec.thread_id)
        script_keys = [keys.thread, keys.run, claim_key, _runs_key(spec.tenant), QUEUE, idem_key]
        reply = await self._batch.run(self._submit, script_keys, args)
        kind = _text(reply[0])
        if kind == "ok":
            return Submitted("created", spec.run_id, {k: _text(v) for k, v in record.items() if k != "spec"})
        if kind == "idem":
            held = json.loads(reply[1])
            return Submitted("replay", str(held["run"]), fingerprint=str(held["fingerprint"]))
        if kind == "busy":
            return Submitted("busy", _text(reply[1]))
        return Submitted("no_thread", spec.run_id)

    async def load(self, tenant: str, run_id: str) -> tuple[RunSpec, Checkpoint, str]:
        """The run's spec, its last checkpoint, and its status (one round trip)."""
        loaded = await self._start(tenant, run_id, "", 0)
        assert loaded is not None  # without a worker id, no lease is asked for
        return loaded

    async def _start(
        self, tenant: str, run_id: str, worker: str, lease_ms: int
    ) -> tuple[RunSpec, Checkpoint, str] | None:
        """Takes the run's lease for ``worker`` (``""``: none) and loads the run, in one script; ``None``
        when another worker holds the lease."""
        keys = Keys.of(tenant, run_id)
        prefix = Keys.of(tenant, run_id, "x").thread.removesuffix("x")
        reply = await self._batch.run(
            self._start_script, [keys.lease, keys.run, keys.repeats], [worker, lease_ms, prefix]
        )
        if not reply[0]:
            return None
        flat, turns, repeats, named = reply[1], reply[2], reply[3], reply[4]
        record = {_text(flat[i]): flat[i + 1] for i in range(0, len(flat), 2)}
        if "spec" not in record:
            raise RunNotFoundError(f"no run {run_id!r} for tenant {tenant!r}")
        spec = _decode_spec(record["spec"], run_id, _text(record.get("status")))
        window = int(record["window_start"])
        if not named:  # a record written before records named their thread: read it now
            turns = await self.redis.lrange(Keys.of(tenant, run_id, spec.thread_id).thread, window, -1)
        ckpt = Checkpoint(
            deadline=float(record["deadline"]),
            step=int(record["step"]),
            turns=[_text(turn) for turn in turns],
            window_start=window,
            prompt_tokens=int(record["prompt_tokens"]),
            completion_tokens=int(record["completion_tokens"]),
            json_retries=int(record["json_retries"]),
            repeats={_text(repeats[i]): int(repeats[i + 1]) for i in range(0, len(repeats), 2)},
            trace=json.loads(record["trace"]),
        )
        return spec, ckpt, _text(record["status"])

    async def status(self, tenant: str, run_id: str) -> dict[str, str]:
        record = await self.redis.hgetall(Keys.of(tenant, run_id).run)
        return {_text(k): _text(v) for k, v in record.items() if _text(k) != "spec"}

    async def events(
        self, tenant: str, run_id: str, after: str = "0-0", *, block_ms: int | None = None
    ) -> list[Event]:
        """Events after the id ``after`` (a client resumes from the last id it saw)."""
        key = Keys.of(tenant, run_id).events
        found: Any = await self.redis.xread({key: after}, count=1000, block=block_ms)
        return [event for _, events in events_of(found) for event in events]

    async def cancel(self, tenant: str, run_id: str) -> None:
        await self.redis.set(Keys.of(tenant, run_id).cancel, b"1", ex=self._ttl)

    async def thread(self, tenant: str, thread_id: str) -> list[str]:
        key = Keys.of(tenant, "x", thread_id).thread
        return [_text(turn) for turn in await self.redis.lrange(key, 0, -1)]

    async def record(self, tenant: str, run_id: str) -> tuple[RunSpec, dict[str, str]] | None:
        """The run's spec and its record's other fields (plus ``leased``: whether a worker holds it), or
        ``None`` when the tenant has no such run."""
        found = await self._records(tenant, [run_id])
        return found[0] if found else None

    async def runs(
        self, tenant: str, *, limit: int, after: str | None = None
    ) -> tuple[list[tuple[RunSpec, dict[str, str]]], bool]:
        """The tenant's runs, newest first: up to ``limit`` of them (as ``record`` gives each), starting
        after the run ``after`` when given, and whether more follow. Raises ``RunNotFoundError`` when
        ``after`` is not in the tenant's index."""
        cursor = _check_id("run", after) if after else ""
        ids = await self._list(keys=[_runs_key(tenant)], args=[cursor, limit + 1])
        if ids is None:
            raise RunNotFoundError(f"no run {after!r} for tenant {tenant!r}")
        page = [_text(run_id) for run_id in ids or ()]
        return await self._records(tenant, page[:limit]), len(page) > limit

    async def _records(self, tenant: str, run_ids: Sequence[str]) -> list[tuple[RunSpec, dict[str, str]]]:
        """The runs' specs and records, in order, leaving out those that do not exist (or expired)."""
        async with self.redis.pipeline(transaction=False) as pipe:
            for run_id in run_ids:
                keys = Keys.of(tenant, run_id)
                pipe.hgetall(keys.run)
                pipe.exists(keys.lease)
            replies = await pipe.execute()
        found = []
        for run_id, record, leased in zip(run_ids, replies[::2], replies[1::2], strict=True):
            fields = {_text(k): v for k, v in record.items()}
            if "spec" not in fields:
                continue
            raw = fields.pop("spec")
            text = {k: _text(v) for k, v in fields.items()}
            # A worker holds the run before its first step is committed: "leased" tells a taken run apart.
            text["leased"] = "1" if leased else ""
            try:
                spec = _decode_spec(raw, run_id, text.get("status", ""))
            except UnreadableRunError:
                log.warning("run %s of tenant %s: its stored spec cannot be read", run_id, tenant)
                spec, text = _unreadable(tenant, run_id, raw), text | _UNREADABLE_FIELDS
            found.append((spec, text))
        return found

    async def request_cancel(self, tenant: str, run_id: str) -> str | None:
        """Ask for the run to stop; returns its status after, or ``None`` when there is no such run.

        A queued run that no worker holds is finished here (stop reason ``cancelled``), atomically with
        the check, so a worker that takes it later finds it finished; a held run hears of the request
        through its worker's heartbeat."""
        keys = Keys.of(tenant, run_id)
        fields = {"status": "finished", "stop_reason": "cancelled", "output": "", "value": "null"}
        data = json.dumps({"stop_reason": "cancelled", "steps": 0})
        args: list[EncodableT] = [json.dumps(fields), data, EVENTS_MAXLEN, self._ttl]
        found = await self._cancel(keys=[keys.run, keys.cancel, keys.lease, keys.events], args=args)
        return None if found is None else _text(found)

    async def ping(self) -> bool:
        return bool(await self.redis.ping())


def events_of(found: Any) -> list[tuple[str, list[Event]]]:
    """An XREAD reply as (stream key, its events); a blocking read that timed out answers nil."""
    return [
        (
            _text(key),
            [
                Event(_text(entry), _text(fields[b"kind"]), json.loads(fields[b"data"]))
                for entry, fields in entries
            ],
        )
        for key, entries in found or ()
    ]


_UNREADABLE_FIELDS = {"status": "failed", "error": UNREADABLE_RUN}


def _unreadable(tenant: str, run_id: str, raw: bytes | str) -> RunSpec:
    """What a reader is shown of a run whose spec cannot be read: its ids (the thread's when Python's
    JSON reader, which goes deeper than pydantic's, still finds it), to be listed as failed."""
    try:
        thread = json.loads(raw).get("thread_id", "")
    except (ValueError, RecursionError, AttributeError):
        thread = ""
    thread = thread if isinstance(thread, str) and _ID.fullmatch(thread) else ""
    return RunSpec(run_id=run_id, tenant=tenant, thread_id=thread, prefix="")


def _thread_run_key(tenant: str, thread_id: str) -> str:
    return Keys.of(tenant, "x", thread_id).thread + ":run"


def _runs_key(tenant: str) -> str:
    return f"cad:t:{_check_id('tenant', tenant)}:runs"


def _result_preview(result: ToolResult) -> dict[str, Any]:
    """What a ``tool_result`` event says of the result: its error, or the start of its content as JSON."""
    if result.error is not None:
        return {"error": {"type": result.error.type, "message": _clip(result.error.message)}}
    return {"content": _clip(json.dumps(result.content, ensure_ascii=False, default=str))}


def _clip(text: str) -> str:
    return text if len(text) <= _PREVIEW else text[: _PREVIEW - 1] + "…"


def _idempotency_key(tenant: str, key: str) -> str:
    # Hashed: a client's key may hold any characters, and its length is bounded here.
    return f"cad:t:{_check_id('tenant', tenant)}:idem:{hashlib.sha256(key.encode()).hexdigest()[:40]}"


def _ending(outcome: Outcome) -> tuple[str, str]:
    """A finished run's record fields (JSON) and its ``finished`` event's data."""
    fields = {
        "status": "finished",
        "finished_at": repr(time.time()),
        "stop_reason": outcome.stop_reason,
        "output": outcome.output,
        "value": json.dumps(outcome.value),
    }
    return json.dumps(fields), json.dumps({"stop_reason": outcome.stop_reason, "steps": outcome.steps})


def _compact(data: dict[str, Any]) -> str:
    return json.dumps(data, separators=(",", ":"))


def _replayed(spec: RunSpec, slot: CallSlot, call: ToolCall, entry: bytes) -> ToolResult:
    """The ledgered result of the same call, now answering this call (its id: the call may stand at
    another index than when it ran)."""
    result = from_json(entry)
    if not isinstance(result, ToolResult) or result.name != call.name:
        raise StoreError(f"run {spec.run_id}: ledger entry {slot.entry} is not a result of {call.name!r}")
    return dataclasses.replace(result, call_id=call.id)


class RunQueue:
    """The run queue: a stream with one consumer group; a run is held by a lease renewed by heartbeats.

    A worker takes new entries with ``take``; an entry whose worker stopped heartbeating (its idle time in
    the group passed the lease time) is taken over with ``claim_stale``. Either way the worker must then
    ``acquire`` the run's lease, which succeeds only when no live worker holds it.
    """

    def __init__(self, store: RedisStore, *, lease_ms: int = 5000) -> None:
        self._store = store
        self._redis = store.redis
        self.lease_ms = lease_ms

    async def ensure_group(self) -> None:
        try:
            await self._redis.xgroup_create(QUEUE, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def take(self, count: int, block_ms: int) -> list[Claim]:
        found: Any = await self._grouped(
            lambda: self._redis.xreadgroup(
                GROUP, self._store.worker, {QUEUE: ">"}, count=count, block=block_ms
            )
        )
        return [_claim(entry, fields) for _, entries in found or () for entry, fields in entries]

    async def claim_stale(self, count: int) -> list[Claim]:
        reply: Any = await self._grouped(
            lambda: self._redis.xautoclaim(
                QUEUE, GROUP, self._store.worker, self.lease_ms, "0-0", count=count
            )
        )
        return [_claim(entry, fields) for entry, fields in reply[1] if fields]

    async def _grouped(self, command: Callable[[], Awaitable[T]]) -> T:
        """Run a command on the consumer group; when Redis has lost the group (it restarted without
        persistence) make it again, from the stream's start, and run the command once more: runs queued
        after the restart are taken, not left waiting for a group that no longer exists."""
        try:
            return await command()
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
        log.warning("the run queue's consumer group is gone (Redis restarted empty?): making it again")
        await self.ensure_group()
        return await command()

    async def acquire(self, claim: Claim) -> bool:
        key = Keys.of(claim.tenant, claim.run_id).lease
        return bool(await self._redis.set(key, self._store.worker, nx=True, px=self.lease_ms))

    async def start(self, claim: Claim) -> tuple[RunSpec, Checkpoint, str] | None:
        """Takes the run's lease and loads it (``RedisStore.load``), in one round trip; ``None`` when a
        live worker holds the run. Raises as ``load`` does once the lease is taken."""
        return await self._store._start(claim.tenant, claim.run_id, self._store.worker, self.lease_ms)

    async def heartbeat(self, claims: list[Claim]) -> tuple[list[bool], list[bool]]:
        """Renew each lease still held (and reset its entry's idle time); returns (still held, cancel
        requested). The scripts go to Redis together: one round trip for all."""
        replies = await asyncio.gather(*(self._beat(claim) for claim in claims))
        return [bool(held) for held, _ in replies], [bool(cancel) for _, cancel in replies]

    async def _beat(self, claim: Claim) -> tuple[int, int]:
        keys = Keys.of(claim.tenant, claim.run_id)
        args: list[EncodableT] = [self._store.worker, self.lease_ms, GROUP, claim.entry]
        held, cancel = await self._store._batch.run(
            self._store._heartbeat, [keys.lease, QUEUE, keys.cancel], args
        )
        return int(held), int(cancel)

    async def depth(self) -> int:
        """Runs queued or running: finished runs are deleted from the stream, so its length is the depth."""
        return int(await self._redis.xlen(QUEUE))

    async def done(self, claim: Claim) -> bool:
        """The run is finished (or was already): remove it from the queue and release its lease, if this
        worker still holds the lease (atomically with the check). Returns whether it did."""
        keys = [QUEUE, Keys.of(claim.tenant, claim.run_id).lease]
        return bool(
            await self._store._batch.run(self._store._done, keys, [self._store.worker, GROUP, claim.entry])
        )

    async def release(self, claim: Claim) -> None:
        """Give the run back without finishing it (shutting down): another worker may take it at once."""
        await self._store._release(
            keys=[Keys.of(claim.tenant, claim.run_id).lease], args=[self._store.worker]
        )


def _claim(entry: bytes | str, fields: dict[bytes, bytes]) -> Claim:
    return Claim(_text(entry), _text(fields[b"tenant"]), _text(fields[b"run"]))
