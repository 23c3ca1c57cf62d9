"""The run store on Redis: the only package that imports ``redis``.

- ``keys``: the key layout; ``record``: a run's hash fields and their one codec; ``scripts``: the Lua.
- ``client``: connecting, group commit, the scripts registered, Redis failures as ``StoreError``s.
- ``runs``: a run as its worker sees it (the ``RunStore`` port, ``load``, ``fail``).
- ``queue``: the run queue and its leases.
- ``submissions``, ``reads``: what the API asks (``orchestrator.store_ports``).
- ``store``: ``RedisStore``, all of them on one client.
"""

from orchestrator.redis.client import SOCKET_TIMEOUT_S, TRANSIENT, Link, connect
from orchestrator.redis.keys import QUEUE, Keys
from orchestrator.redis.queue import Claim, RunQueue
from orchestrator.redis.reads import RedisEventReader, RedisReads
from orchestrator.redis.runs import RedisRunStore
from orchestrator.redis.store import RedisStore
from orchestrator.redis.submissions import RedisSubmissions

__all__ = [
    "QUEUE",
    "SOCKET_TIMEOUT_S",
    "TRANSIENT",
    "Claim",
    "Keys",
    "Link",
    "RedisEventReader",
    "RedisReads",
    "RedisRunStore",
    "RedisStore",
    "RedisSubmissions",
    "RunQueue",
    "connect",
]
