"""Server-Sent Events: a run's event stream from Redis, resumable by event id.

Each SSE ``id:`` is the Redis stream id of the event, so a client that reconnects with ``Last-Event-ID``
gets exactly the events after it. The stream ends after the run's final event (``finished`` or
``failed``); while nothing happens, a comment line now and then keeps proxies from closing it.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

from orchestrator.api.errors import ApiError
from orchestrator.redis_store import Event, RedisStore

FINAL = frozenset({"finished", "failed"})
_STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
_BLOCK_MS = 1000
_KEEPALIVE_EVERY = 15  # idle reads (about seconds) between comment lines that keep proxies from closing


def check_event_id(value: str | None) -> str:
    """The id to resume after: the client's ``Last-Event-ID``, or the start of the stream."""
    if value is None or value == "":
        return "0-0"
    if not _STREAM_ID.fullmatch(value):
        raise ApiError(400, "invalid_last_event_id", "Last-Event-ID must be an event id from this stream")
    return value


def frame(data: Any, *, event: str | None = None, ident: str | None = None) -> str:
    head = (f"id: {ident}\n" if ident else "") + (f"event: {event}\n" if event else "")
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"{head}data: {text}\n\n"


async def run_events(store: RedisStore, tenant: str, run_id: str, after: str) -> AsyncIterator[Event | None]:
    """The run's events after ``after``, as they come, up to and including its final event; ``None``
    after each read that found nothing (about a second), so that a caller can send keep-alives."""
    while True:
        found = await store.events(tenant, run_id, after, block_ms=_BLOCK_MS)
        if not found:
            if not await _over(store, tenant, run_id):
                yield None
                continue
            # The run ended: its final event was written with its status, so one more read finds it,
            # unless the client already saw it (it resumed after it) or it expired: then the stream ends.
            found = await store.events(tenant, run_id, after)
            if not found:
                return
        for event in found:
            yield event
            after = event.id
            if event.kind in FINAL:
                return


async def _over(store: RedisStore, tenant: str, run_id: str) -> bool:
    found = await store.record(tenant, run_id)
    return found is None or found[1].get("status") in ("finished", "failed")


async def sse_events(store: RedisStore, tenant: str, run_id: str, after: str) -> AsyncIterator[str]:
    idle = 0
    async for event in run_events(store, tenant, run_id, after):
        if event is not None:
            yield frame({"kind": event.kind, **event.data}, event=event.kind, ident=event.id)
        else:
            idle += 1
            if idle % _KEEPALIVE_EVERY == 0:
                yield ": keep-alive\n\n"
