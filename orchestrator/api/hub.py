"""One reader of run event streams per API process, whatever the number of clients that watch runs.

Were each watcher to wait in a blocking read of its own, each would hold one of the process's pooled store
connections for as long as it watches, and a few hundred watchers starve every other request. Here one
task waits on every watched run's stream through one reader (the store's ``EventFeed``: on Redis, one
blocking XREAD on one connection), and hands each watcher
the events after the last one it was given. A run that has had nothing new for a while is looked at (one
pipelined status read for all such runs) at most once per wait: once its record says it is over, what is
left of its stream is read and its watchers are told that nothing more will come.

The reader runs while anything is watched and gives its connection back when nothing is. A watcher that
joins while the reader waits interrupts the wait, so that the next read covers it. Should the store fail,
every watcher hears of it (its stream ends; a client resumes with ``Last-Event-ID``) and the reader stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from orchestrator.errors import StoreError
from orchestrator.records import Event, event_order, is_over
from orchestrator.store_ports import EventFeed, EventReader, RunRef

log = logging.getLogger(__name__)

Run = RunRef


class Over:
    """Put in a watcher's queue when its run is over and every event of it was handed out."""


@dataclass(frozen=True)
class Broken:
    """Put in a watcher's queue when the reader failed; ``error`` says how."""

    error: StoreError


Item = list[Event] | Over | Broken
OVER = Over()


@dataclass(eq=False)
class Watcher:
    """One client's view of one run: what it was last given, and what it is given next."""

    after: str
    queue: asyncio.Queue[Item] = field(default_factory=asyncio.Queue)

    def give(self, events: list[Event]) -> None:
        fresh = [event for event in events if event_order(event.id) > event_order(self.after)]
        if fresh:
            self.after = fresh[-1].id
            self.queue.put_nowait(fresh)


@dataclass(eq=False)
class _Watched:
    watchers: list[Watcher] = field(default_factory=list)
    quiet_since: float = field(default_factory=time.monotonic)

    def position(self) -> str:
        return min((w.after for w in self.watchers), key=event_order)


class EventHub:
    """Watch runs' event streams through one reader per process (``watch``)."""

    def __init__(self, feed: EventFeed, *, block_ms: int = 1000) -> None:
        self._feed, self._block_ms = feed, block_ms
        self._runs: dict[Run, _Watched] = {}
        self._task: asyncio.Task[None] | None = None
        self._reader: EventReader | None = None
        self._waking: asyncio.Task[None] | None = None

    @property
    def watchers(self) -> int:
        return sum(len(watched.watchers) for watched in self._runs.values())

    @contextlib.asynccontextmanager
    async def watch(self, tenant: str, run_id: str, after: str) -> AsyncIterator[Watcher]:
        """A watcher of the run's events after ``after``, for as long as the block lasts."""
        watcher = Watcher(after)
        watched = self._runs.setdefault((tenant, run_id), _Watched())
        watched.watchers.append(watcher)
        self._read_soon()
        try:
            yield watcher
        finally:
            watched.watchers.remove(watcher)
            if not watched.watchers and self._runs.get((tenant, run_id)) is watched:
                del self._runs[(tenant, run_id)]

    def _read_soon(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._read(self._feed.reader()))
        elif self._waking is None and self._reader is not None:
            self._waking = asyncio.create_task(self._wake(self._reader))

    async def _wake(self, reader: EventReader) -> None:
        try:
            await reader.interrupt()
        except Exception:  # only a delay: the next read covers the new watcher anyway
            log.warning("could not interrupt the event reader", exc_info=True)
        finally:
            self._waking = None

    async def _read(self, reader: EventReader) -> None:
        self._reader = reader
        try:
            while self._runs:
                await self._round(reader)
        except Exception as exc:
            log.warning("the event reader failed; %d watchers were told", self.watchers, exc_info=True)
            self._fail(StoreError(f"reading events failed: {type(exc).__name__}"))
        finally:
            # Decided before the next await: a watcher that joins from here on starts a new reader.
            self._task = self._reader = None
            await reader.aclose()

    async def _round(self, reader: EventReader) -> None:
        positions = {run: watched.position() for run, watched in self._runs.items()}
        found = await reader.read(positions, block_ms=self._block_ms)
        now = time.monotonic()
        for run, events in found.items():
            self._give(run, events, now)
        quiet = [
            run
            for run, watched in self._runs.items()
            if run not in found and now - watched.quiet_since >= self._block_ms / 1000
        ]
        if quiet:
            await self._check(reader, quiet, now)

    async def _check(self, reader: EventReader, quiet: list[Run], now: float) -> None:
        statuses = await reader.statuses(quiet)
        over = [run for run, status in zip(quiet, statuses, strict=True) if is_over(status)]
        for run in quiet:
            if run in self._runs:
                self._runs[run].quiet_since = now
        if not over:
            return
        # The run's final event was written with its status: this read finds it (unless the watcher
        # is past it already, or it expired), and after it there is nothing more to wait for.
        positions = {run: self._runs[run].position() for run in over if run in self._runs}
        if not positions:
            return
        for run, events in (await reader.read(positions)).items():
            self._give(run, events, now)
        for run in positions:
            for watcher in self._runs.get(run, _Watched()).watchers:
                watcher.queue.put_nowait(OVER)

    def _give(self, run: Run, events: list[Event], now: float) -> None:
        watched = self._runs.get(run)
        if watched is None:
            return
        watched.quiet_since = now
        for watcher in watched.watchers:
            watcher.give(events)

    def _fail(self, error: StoreError) -> None:
        for watched in self._runs.values():
            for watcher in watched.watchers:
                watcher.queue.put_nowait(Broken(error))
