"""Where a run lives in Redis: the key layout, in one place.

Every key of a tenant starts with ``cad:t:{tenant}:``, so tenants never share a key; ids are restricted to
``[A-Za-z0-9_.-]`` so no id can reach into another's keys::

    cad:t:{tenant}:thread:{thread}        LIST    the thread's turns, each its exact rendered bytes
                                                  (appended, never rewritten; replay never re-renders)
    cad:t:{tenant}:run:{run}              HASH    the spec (JSON) and the run's record (``record``: its
                                                  fields and their one codec)
    cad:t:{tenant}:run:{run}:steps        LIST    one small JSON record per acknowledged step
    cad:t:{tenant}:run:{run}:events       STREAM  the run's events (``orchestrator.ports.EventKind``);
                                                  Redis stream ids are monotonic: resume from the last seen
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
"""

from __future__ import annotations

import functools
import hashlib
import re
from dataclasses import dataclass

from orchestrator.errors import StoreError

QUEUE = "cad:queue"
GROUP = "orchestrators"
ID = re.compile(r"[A-Za-z0-9_.-]{1,128}")


def check_id(kind: str, value: str) -> str:
    if not ID.fullmatch(value):
        raise StoreError(f"{kind} id {value!r} must be 1-128 of [A-Za-z0-9_.-]")
    return value


def tenant_prefix(tenant: str) -> str:
    return f"cad:t:{check_id('tenant', tenant)}:"


@dataclass(frozen=True)
class Keys:
    """A run's keys (and its thread's, when the thread is named)."""

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
        run = f"{run_prefix(tenant)}{check_id('run', run_id)}"
        return cls(
            run,
            thread_key(tenant, thread_id) if thread_id else "",
            f"{run}:steps",
            f"{run}:events",
            f"{run}:repeats",
            f"{run}:lease",
            f"{run}:ledger",
            f"{run}:cancel",
        )

    def for_commit(self) -> list[str]:
        return [self.run, self.thread, self.steps, self.events, self.repeats, self.lease, self.ledger]


def run_prefix(tenant: str) -> str:
    """What a tenant's run keys start with (a script that finds a run id appends it)."""
    return f"{tenant_prefix(tenant)}run:"


def thread_prefix(tenant: str) -> str:
    """What a tenant's thread keys start with (a script that finds a thread id appends it)."""
    return f"{tenant_prefix(tenant)}thread:"


def thread_key(tenant: str, thread_id: str) -> str:
    return f"{thread_prefix(tenant)}{check_id('thread', thread_id)}"


def thread_run_key(tenant: str, thread_id: str) -> str:
    """The thread's latest run (its claim)."""
    return f"{thread_key(tenant, thread_id)}:run"


def runs_key(tenant: str) -> str:
    """The tenant's run index."""
    return f"{tenant_prefix(tenant)}runs"


def idempotency_key(tenant: str, key: str) -> str:
    # Hashed: a client's key may hold any characters, and its length is bounded here.
    return f"{tenant_prefix(tenant)}idem:{hashlib.sha256(key.encode()).hexdigest()[:40]}"
