"""The store's client of Redis: connecting, group commit (``Batcher``), the registered scripts, and what
Redis failures become (``StoreError``; ``StoreUnavailableError`` for what passes if one waits).

``Link`` is what every part of the store shares: one client, its batcher, the scripts, this process's
worker id (writes that move a run forward are fenced by its lease) and the TTL of a run's keys.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import math
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeAlias, TypeVar

from redis.asyncio import BlockingConnectionPool, Redis
from redis.commands.core import AsyncScript
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ReadOnlyError, RedisError, ResponseError, TryAgainError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.typing import EncodableT

from orchestrator.errors import StoreError, StoreUnavailableError
from orchestrator.redis import scripts as lua

P = ParamSpec("P")
R = TypeVar("R")
DEFAULT_TTL_S = 7 * 24 * 3600
# A command's timeout on the service's clients. Longer than any blocking read they make (the worker's
# take: 100 ms; an event watcher's read: 1 s), which would otherwise time out while waiting as asked.
SOCKET_TIMEOUT_S = 5.0
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


def store_error(exc: BaseException) -> StoreError:
    kind = StoreUnavailableError if isinstance(exc, _REDIS_TRANSIENT) else StoreError
    return kind(f"redis: {type(exc).__name__}: {exc}")


def translated(method: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
    """The method, raising a Redis failure as the ``StoreError`` it is (what the API answers 503 for)."""

    @functools.wraps(method)
    async def call(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await method(*args, **kwargs)
        except (RedisError, OSError) as exc:
            raise store_error(exc) from exc

    return call


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


_Pending: TypeAlias = tuple[AsyncScript, list[str], list[EncodableT], "asyncio.Future[Any]"]


class Batcher:
    """Group commit: the scripts that concurrent runs call in the same event-loop tick go to Redis in one
    pipeline. Each script is still atomic on its own and each caller still waits for its own reply, so
    nothing is acknowledged before Redis has applied it; many runs just share the round trip. A failure
    reaches each caller as a ``StoreError``."""

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
                    future.set_exception(store_error(exc))
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        for (*_, future), reply in zip(batch, replies, strict=True):
            if future.done():
                continue  # its caller was cancelled; the write itself went through
            if isinstance(reply, Exception):
                future.set_exception(store_error(reply))
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
        """One EVALSHA per call, written at once on one connection, and the replies read in order (an
        error reply is that call's; the others stand). The commands are encoded here rather than by a
        redis-py pipeline, whose per-argument encoding and per-reply timeout were a fifth of a loop step's
        cost; the whole batch shares one timeout instead."""
        packed = b"".join(_evalsha(script.sha, keys, args) for script, keys, args, _ in batch)
        pool = self._redis.connection_pool
        connection = await pool.get_connection()  # type: ignore[no-untyped-call]
        try:
            async with asyncio.timeout(SOCKET_TIMEOUT_S):
                await connection.send_packed_command(packed, check_health=False)
                return [await _reply(connection) for _ in batch]
        except BaseException:
            await connection.disconnect()  # its replies may be half read: never reuse it
            raise
        finally:
            await pool.release(connection)


# Flush tasks are kept referenced until done, so that the event loop cannot drop one half-way.
_IN_FLIGHT: set[asyncio.Task[None]] = set()


async def _reply(connection: Any) -> Any:
    try:
        return await connection.read_response(timeout=math.inf)  # the batch's timeout covers it
    except ResponseError as exc:  # this call's error; the connection is in step for the next reply
        return exc


def _evalsha(sha: str, keys: list[str], args: list[EncodableT]) -> bytes:
    """``EVALSHA sha numkeys keys... args...`` in the Redis protocol (RESP)."""
    parts = [b"EVALSHA", sha.encode(), b"%d" % len(keys), *map(_encoded, keys), *map(_encoded, args)]
    return b"".join([b"*%d\r\n" % len(parts), *(b"$%d\r\n%s\r\n" % (len(part), part) for part in parts)])


def _encoded(value: EncodableT) -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    if isinstance(value, int):  # bool is refused by redis-py too; ints are what the scripts take
        return b"%d" % value
    if isinstance(value, float):
        return repr(value).encode()
    return bytes(value)  # memoryview


@dataclass(frozen=True)
class Scripts:
    """The Lua scripts (``scripts``), registered on one client."""

    commit: AsyncScript
    finish: AsyncScript
    release: AsyncScript
    begin_call: AsyncScript
    end_call: AsyncScript
    emit: AsyncScript
    fail: AsyncScript
    done: AsyncScript
    heartbeat: AsyncScript
    cancel: AsyncScript
    submit: AsyncScript
    start: AsyncScript
    list_runs: AsyncScript
    run_turns: AsyncScript
    delete: AsyncScript

    @classmethod
    def on(cls, redis: Redis) -> Scripts:
        """Each script, by its name in ``scripts`` (``begin_call``: ``BEGIN_CALL``)."""
        texts = {name.name: getattr(lua, name.name.upper()) for name in dataclasses.fields(cls)}
        return cls(**{name: redis.register_script(text) for name, text in texts.items()})


@dataclass(frozen=True)
class Link:
    """What every part of the Redis store shares. ``worker`` is this process's worker id: leave it empty
    only where no queue is used (one process owns every run it runs)."""

    redis: Redis
    batch: Batcher
    scripts: Scripts
    worker: str = ""
    ttl_s: int = DEFAULT_TTL_S

    @classmethod
    def of(cls, redis: Redis, *, worker: str = "", ttl_s: int = DEFAULT_TTL_S) -> Link:
        return cls(redis, Batcher(redis), Scripts.on(redis), worker, ttl_s)
