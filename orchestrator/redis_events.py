"""Blocking reads of many runs' event streams at once, for the API's ``EventHub``.

It talks to Redis only through the store's client (``redis_store`` stays the one module that imports
``redis``): a connection of its own, taken from the store's pool with ``client()``, for the blocking read;
the pool for the rest.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from orchestrator.redis_store import Event, Keys, RedisStore, events_of


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class EventReader:
    """Blocking reads of many runs' event streams at once, on one connection of its own (taken from the
    store's pool for as long as the reader lives): ``read`` waits on every stream given in one XREAD;
    ``interrupt``, from any other task, ends that wait early (as if it timed out)."""

    def __init__(self, store: RedisStore) -> None:
        self._store = store
        self._client = store.redis.client()
        self._id: int | None = None

    async def read(
        self, positions: Mapping[tuple[str, str], str], *, block_ms: int | None = None
    ) -> dict[tuple[str, str], list[Event]]:
        """Each ``(tenant, run)``'s events after its position; none at all once ``block_ms`` passed."""
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

    async def statuses(self, runs: Sequence[tuple[str, str]]) -> list[str | None]:
        """Each run's status (``None`` where its record is gone), in one round trip."""
        async with self._store.redis.pipeline(transaction=False) as pipe:
            for tenant, run in runs:
                pipe.hget(Keys.of(tenant, run).run, "status")
            replies = await pipe.execute()
        return [None if reply is None else _text(reply) for reply in replies]

    async def interrupt(self) -> None:
        if self._id is not None:
            await self._store.redis.client_unblock(self._id)

    async def aclose(self) -> None:
        await self._client.aclose()  # gives the connection back to the pool
