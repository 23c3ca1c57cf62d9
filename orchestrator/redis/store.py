"""``RedisStore``: every part of the Redis store on one client, for a process that needs them all (a test,
a benchmark, a single-process demo). The service's processes build the parts they use: a worker the
``RedisRunStore`` and the ``RunQueue``, the API a store for its ports."""

from __future__ import annotations

from redis.asyncio import Redis

from orchestrator.redis.client import DEFAULT_TTL_S, Link
from orchestrator.redis.reads import RedisReads
from orchestrator.redis.runs import RedisRunStore
from orchestrator.redis.submissions import RedisSubmissions


class RedisStore(RedisRunStore, RedisSubmissions, RedisReads):
    """The ``RunStore`` port (with ``load`` and ``fail``), submissions, reads and cancellation: the
    ``orchestrator.store_ports.ApiStore`` on Redis. ``worker`` is this process's worker id (see ``Link``).
    """

    def __init__(self, redis: Redis, *, worker: str = "", ttl_s: int = DEFAULT_TTL_S) -> None:
        link = Link.of(redis, worker=worker, ttl_s=ttl_s)
        RedisRunStore.__init__(self, link)
        RedisSubmissions.__init__(self, link)
        RedisReads.__init__(self, link)

    @property
    def redis(self) -> Redis:
        return self.link.redis
