"""Reading runs from Redis, and cancelling them: what the API asks (``store_ports.RunReads``, ``Control``,
``EventFeed``). Every Redis failure here raises as a ``StoreError`` (``client.translated``).

Event readers (``RedisEventReader``) wait on many runs' streams in one blocking XREAD, on a connection of
their own taken from the client's pool, so that a few hundred watchers hold one connection, not one each.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from redis.asyncio import Redis
from redis.typing import EncodableT

from orchestrator.errors import UNREADABLE_RUN, RunNotFoundError, UnreadableRunError
from orchestrator.ports import Outcome, RunSpec
from orchestrator.records import (
    Event,
    RunRecord,
    StoredStatus,
    decode_spec,
    event_kind,
    finished_data,
    stored_status,
)
from orchestrator.redis import record as fields
from orchestrator.redis.client import Link, translated
from orchestrator.redis.keys import ID, Keys, check_id, runs_key, thread_key, thread_prefix
from orchestrator.redis.runs import EVENTS_MAXLEN
from orchestrator.store_ports import RunRef, StoredRun

log = logging.getLogger(__name__)


class RedisReads:
    def __init__(self, link: Link) -> None:
        self.link = link
        self._redis = link.redis

    @translated
    async def record(self, tenant: str, run_id: str) -> StoredRun | None:
        """The run's spec and record (``leased``: whether a worker holds it), or ``None`` when the tenant
        has no such run."""
        found = await self._records(tenant, [run_id])
        return found[0] if found else None

    @translated
    async def runs(
        self, tenant: str, *, limit: int, after: str | None = None
    ) -> tuple[list[StoredRun], bool]:
        cursor = check_id("run", after) if after else ""
        ids = await self.link.scripts.list_runs(keys=[runs_key(tenant)], args=[cursor, limit + 1])
        if ids is None:
            raise RunNotFoundError(f"no run {after!r} for tenant {tenant!r}")
        page = [fields.text(run_id) for run_id in ids or ()]
        return await self._records(tenant, page[:limit]), len(page) > limit

    async def _records(self, tenant: str, run_ids: Sequence[str]) -> list[StoredRun]:
        """The runs' specs and records, in order, leaving out those that do not exist (or expired)."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for run_id in run_ids:
                keys = Keys.of(tenant, run_id)
                pipe.hgetall(keys.run)
                pipe.exists(keys.lease)
            replies = await pipe.execute()
        found = []
        for run_id, hashed, leased in zip(run_ids, replies[::2], replies[1::2], strict=True):
            stored = {fields.text(k): v for k, v in hashed.items()}
            if fields.SPEC in stored:
                found.append(_stored(tenant, run_id, stored, leased=bool(leased)))
        return found

    @translated
    async def thread(self, tenant: str, thread_id: str) -> list[str]:
        return [fields.text(turn) for turn in await self._redis.lrange(thread_key(tenant, thread_id), 0, -1)]

    @translated
    async def run_turns(self, tenant: str, run_id: str) -> tuple[StoredRun, list[str]] | None:
        """The run's spec and record and the turns it committed, in one script."""
        keys = Keys.of(tenant, run_id)
        hashed, leased, turns = await self.link.scripts.run_turns(
            keys=[keys.run, keys.lease], args=[thread_prefix(tenant)]
        )
        stored = {fields.text(hashed[i]): hashed[i + 1] for i in range(0, len(hashed), 2)}
        if fields.SPEC not in stored:
            return None
        return _stored(tenant, run_id, stored, leased=bool(leased)), [fields.text(turn) for turn in turns]

    @translated
    async def events(
        self, tenant: str, run_id: str, after: str = "0-0", *, block_ms: int | None = None
    ) -> list[Event]:
        """Events after the id ``after`` (a client resumes from the last id it saw)."""
        key = Keys.of(tenant, run_id).events
        found: Any = await self._redis.xread({key: after}, count=1000, block=block_ms)
        return [event for _, events in events_of(found) for event in events]

    @translated
    async def cancel(self, tenant: str, run_id: str) -> None:
        """Ask for the run to stop, whatever it is (its worker hears of it; ``request_cancel`` does more)."""
        await self._redis.set(Keys.of(tenant, run_id).cancel, b"1", ex=self.link.ttl_s)

    @translated
    async def request_cancel(self, tenant: str, run_id: str) -> StoredStatus | None:
        """Ask for the run to stop; returns its status after, or ``None`` when there is no such run.

        A queued run that no worker holds is finished here (stop reason ``cancelled``), atomically with
        the check, so a worker that takes it later finds it finished; a held run hears of the request
        through its worker's heartbeat."""
        keys = Keys.of(tenant, run_id)
        data = json.dumps(finished_data(Outcome(run_id, "cancelled")))
        args: list[EncodableT] = [json.dumps(fields.cancelled()), data, EVENTS_MAXLEN, self.link.ttl_s]
        script_keys = [keys.run, keys.cancel, keys.lease, keys.events]
        found = await self.link.scripts.cancel(keys=script_keys, args=args)
        return None if found is None else stored_status(fields.text(found))

    @translated
    async def delete(self, tenant: str, run_id: str) -> Literal["deleted", "busy"] | None:
        keys = Keys.of(tenant, run_id)
        script_keys = [keys.run, keys.steps, keys.events, keys.ledger, keys.repeats, keys.cancel, keys.lease]
        found = await self.link.scripts.delete(keys=[*script_keys, runs_key(tenant)], args=[run_id])
        if found is None:
            return None
        return "busy" if fields.text(found) == "busy" else "deleted"

    @translated
    async def ping(self) -> bool:
        return bool(await self._redis.ping())

    def reader(self) -> RedisEventReader:
        return RedisEventReader(self._redis)


def _stored(tenant: str, run_id: str, stored: dict[str, Any], *, leased: bool) -> StoredRun:
    """A run's spec and record as read; a run that cannot be read is shown failed (``UNREADABLE_RUN``)."""
    raw = stored.pop(fields.SPEC)
    try:
        record = fields.decode(stored, run_id, leased=leased)
    except UnreadableRunError:
        log.warning("run %s of tenant %s: its stored record cannot be read", run_id, tenant)
        return _unreadable(tenant, run_id, raw), RunRecord(leased=leased).unreadable(UNREADABLE_RUN)
    try:
        return decode_spec(raw, run_id, record.status), record
    except UnreadableRunError:
        log.warning("run %s of tenant %s: its stored spec cannot be read", run_id, tenant)
        return _unreadable(tenant, run_id, raw), record.unreadable(UNREADABLE_RUN)


def _unreadable(tenant: str, run_id: str, raw: bytes | str) -> RunSpec:
    """What a reader is shown of a run whose spec cannot be read: its ids (the thread's when Python's
    JSON reader, which goes deeper than pydantic's, still finds it), to be listed as failed."""
    try:
        thread = json.loads(raw).get("thread_id", "")
    except (ValueError, RecursionError, AttributeError):
        thread = ""
    thread = thread if isinstance(thread, str) and ID.fullmatch(thread) else ""
    return RunSpec(run_id=run_id, tenant=tenant, thread_id=thread, prefix="")


def events_of(found: Any) -> list[tuple[str, list[Event]]]:
    """An XREAD reply as (stream key, its events); a blocking read that timed out answers nil."""
    return [
        (
            fields.text(key),
            [
                Event(fields.text(entry), event_kind(fields.text(data[b"kind"])), json.loads(data[b"data"]))
                for entry, data in entries
            ],
        )
        for key, entries in found or ()
    ]


class RedisEventReader:
    """``store_ports.EventReader`` on one connection of its own (taken from the client's pool for as long
    as the reader lives): ``read`` waits on every stream given in one XREAD; ``interrupt`` unblocks it."""

    def __init__(self, redis: Redis) -> None:
        self._redis = redis
        self._client = redis.client()
        self._id: int | None = None

    @translated
    async def read(
        self, positions: Mapping[RunRef, str], *, block_ms: int | None = None
    ) -> dict[RunRef, list[Event]]:
        streams: dict[Any, Any] = {
            Keys.of(tenant, run).events: after for (tenant, run), after in positions.items()
        }
        runs = {Keys.of(tenant, run).events: (tenant, run) for tenant, run in positions}
        try:
            if self._id is None:
                self._id = int(await self._client.client_id())
            found: Any = await self._client.xread(streams, count=1000, block=block_ms)
        except BaseException:
            self._id = None  # a connection made again has another id
            raise
        return {runs[key]: events for key, events in events_of(found) if key in runs}

    @translated
    async def statuses(self, runs: Sequence[RunRef]) -> list[StoredStatus | None]:
        """Each run's status (``None`` where its record is gone), in one round trip."""
        async with self._redis.pipeline(transaction=False) as pipe:
            for tenant, run in runs:
                pipe.hget(Keys.of(tenant, run).run, fields.STATUS)
            replies = await pipe.execute()
        return [None if reply is None else stored_status(fields.text(reply)) for reply in replies]

    @translated
    async def interrupt(self) -> None:
        if self._id is not None:
            await self._redis.client_unblock(self._id)

    async def aclose(self) -> None:
        await self._client.aclose()  # gives the connection back to the pool
