"""Server-Sent Events: a run's event stream from the store, resumable by event id.

Each SSE ``id:`` is the store's id of the event (on Redis, its stream id), so a client that reconnects
with ``Last-Event-ID`` gets exactly the events after it. The stream ends after the run's final event
(``finished`` or ``failed``); it starts with a comment line once the run is watched, and while nothing
happens, a comment line now and then keeps proxies from closing it. Streams are read through the process's
``EventHub``: one reader (on Redis, one connection) for every watcher.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from orchestrator.api.errors import ApiError
from orchestrator.api.hub import Broken, EventHub, Over
from orchestrator.records import FINAL_KINDS, Event

_STREAM_ID = re.compile(r"[0-9]{1,20}-[0-9]{1,20}")
_IDLE_S = 1.0
_KEEPALIVE_EVERY = 15  # idle seconds between comment lines that keep proxies from closing


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


async def run_events(
    hub: EventHub, tenant: str, run_id: str, after: str
) -> AsyncGenerator[Event | None, None]:
    """The run's events after ``after``, as they come, up to and including its final event (or until the
    run is over and nothing is left to read); ``None`` once it is watched, then after each second without
    events, so that a caller can send keep-alives. The process's ``EventHub`` does the reading."""
    async with hub.watch(tenant, run_id, after) as watcher:
        yield None
        while True:
            try:
                item = await asyncio.wait_for(watcher.queue.get(), _IDLE_S)
            except TimeoutError:
                yield None
                continue
            if isinstance(item, Over):
                return
            if isinstance(item, Broken):
                raise item.error
            for event in item:
                yield event
                if event.kind in FINAL_KINDS:
                    return


async def sse_events(hub: EventHub, tenant: str, run_id: str, after: str) -> AsyncIterator[str]:
    """The SSE body: a comment line as soon as the run is watched, then its events, with a comment line
    after each ``_KEEPALIVE_EVERY`` quiet seconds."""
    idle = -1
    async with contextlib.aclosing(run_events(hub, tenant, run_id, after)) as events:
        async for event in events:
            if event is not None:
                yield frame({"kind": event.kind, **event.data}, event=event.kind, ident=event.id)
            else:
                idle += 1
                if idle % _KEEPALIVE_EVERY == 0:
                    yield ": keep-alive\n\n"
