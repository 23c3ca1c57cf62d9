"""Submitting a run to Redis: one script, one round trip, all or nothing (``store_ports.Submissions``).

The script replays an idempotency key bound already, refuses an unknown thread or, when the run claims its
thread, a thread whose run is still queued or running; else it appends the turns, writes the record,
claims the thread (for as long as the record lasts), indexes and queues the run and binds the key.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Sequence

from redis.typing import EncodableT

from orchestrator.ports import Checkpoint, RunSpec
from orchestrator.records import RunRecord, encode_spec
from orchestrator.redis import record as fields
from orchestrator.redis.client import Link
from orchestrator.redis.keys import QUEUE, Keys, idempotency_key, run_prefix, runs_key, thread_run_key
from orchestrator.store_ports import Submitted, input_turns

IDEMPOTENCY_TTL_S = 24 * 3600
RUNS_INDEX_MAX = 10_000  # the most runs a tenant's index keeps (the newest)


class RedisSubmissions:
    def __init__(self, link: Link) -> None:
        self.link = link

    async def submit(
        self,
        spec: RunSpec,
        ckpt: Checkpoint,
        text: str | None,
        *,
        enqueue: bool = True,
        earlier: Sequence[str] = (),
        claim: bool = False,
        existing_thread: bool = False,
        idempotency: tuple[str, str] | None = None,
        follows: str | None = None,
    ) -> Submitted:
        """As ``store_ports.Submissions.submit`` says. The run stays in its tenant's index for ``ttl_s``
        after its submission; its claim on the thread lasts as long as its record."""
        now = time.time()
        record = RunRecord.queued(spec, ckpt, now)
        stored: dict[str, str | bytes] = {fields.SPEC: encode_spec(spec)}  # refuses, before any write
        stored |= fields.encode(record)
        turns = input_turns(earlier, text)
        args: list[EncodableT] = [
            spec.run_id,
            spec.tenant,
            self.link.ttl_s,
            repr(now),
            "1" if existing_thread else "0",
            _binding(spec, idempotency),
            IDEMPOTENCY_TTL_S,
            run_prefix(spec.tenant),
            repr(now - self.link.ttl_s),
            RUNS_INDEX_MAX,
            "1" if enqueue else "0",
            "1" if claim else "0",
            follows or "",
            len(turns),
            *turns,
            *(part for pair in stored.items() for part in pair),
        ]
        reply = await self.link.batch.run(self.link.scripts.submit, _keys(spec, idempotency), args)
        return _submitted(spec, record, reply)


def _keys(spec: RunSpec, idempotency: tuple[str, str] | None) -> list[str]:
    keys = Keys.of(spec.tenant, spec.run_id, spec.thread_id)
    # Without a key to bind, the script is given one it never touches.
    idem = keys.run if idempotency is None else idempotency_key(spec.tenant, idempotency[0])
    claim = thread_run_key(spec.tenant, spec.thread_id)
    return [keys.thread, keys.run, claim, runs_key(spec.tenant), QUEUE, idem]


def _binding(spec: RunSpec, idempotency: tuple[str, str] | None) -> str:
    if idempotency is None:
        return ""
    return json.dumps({"fingerprint": idempotency[1], "run": spec.run_id})


def _submitted(spec: RunSpec, record: RunRecord, reply: list[bytes]) -> Submitted:
    kind = fields.text(reply[0])
    if kind == "ok":
        return Submitted("created", spec.run_id, dataclasses.replace(record, first_turn=int(reply[1])))
    if kind == "idem":
        held = json.loads(reply[1])
        return Submitted("replay", str(held["run"]), fingerprint=str(held["fingerprint"]))
    if kind == "busy":
        return Submitted("busy", fields.text(reply[1]))
    if kind == "moved":
        return Submitted("moved", fields.text(reply[1]))
    return Submitted("no_thread", spec.run_id)
