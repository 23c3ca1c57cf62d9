"""What the REST API asks of the run store, as small Protocols, and the plain data they exchange.

- ``Submissions``: a run submitted (the user's turn, its record, its queue entry), all or nothing.
- ``RunReads``: a run's record, a tenant's runs, a thread's turns, a run's events after an id.
- ``EventFeed``: readers that wait on many runs' event streams at once (the API's ``EventHub``).
- ``Control``: cancellation, and whether the store answers.

``ApiStore`` is all four: the Redis store (``orchestrator.redis.RedisStore``) and the in-memory one
(``orchestrator.memory.MemoryStore``) implement it. A store raises ``StoreError`` when it fails
(``StoreUnavailableError`` when it cannot be reached): the API answers 503 for those, and names no store.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeAlias

from orchestrator.ports import Checkpoint, RunSpec
from orchestrator.records import Event, RunRecord, StoredStatus
from orchestrator.runs import user_turn

RunRef: TypeAlias = tuple[str, str]  # (tenant, run id)
StoredRun: TypeAlias = tuple[RunSpec, RunRecord]


@dataclass(frozen=True)
class Submitted:
    """What a submission did: ``created`` the run (``record``: its record, as written), found its
    idempotency key bound already (``replay``: the bound ``run_id`` and the request's ``fingerprint``),
    found ``no_thread`` to continue, the thread ``busy`` with run ``run_id``, or the thread ``moved`` on
    past the run it was to follow (``run_id``: its latest run). Only ``created`` has a record."""

    kind: Literal["created", "replay", "no_thread", "busy", "moved"]
    run_id: str
    record: RunRecord = field(default_factory=RunRecord)
    fingerprint: str = ""


class Submissions(Protocol):
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
        """Append the user's turn (``text``, after the rendered turns ``earlier``; ``None``: no user turn,
        only ``earlier``) to the run's thread, write its record (created now: the time that also orders the
        tenant's runs; its own turns start after these) and queue it (unless not ``enqueue``): all or
        nothing. ``claim``: the run claims its thread, unless another run of it is still queued or running
        (``busy``). ``existing_thread``: the thread must exist already (``no_thread``). ``follows``: the
        thread's latest run must be this one (else ``moved``): a conversation continued from one of its
        runs goes on from there, never from an earlier point. ``idempotency``: (key, fingerprint of the
        request): a key bound already is answered with its binding (``replay``, nothing written), else it
        is bound to this run. A spec that would not read back raises ``UnreadableRunError`` before
        anything is written."""
        ...


class RunReads(Protocol):
    async def record(self, tenant: str, run_id: str) -> StoredRun | None:
        """The run's spec and record, or ``None`` when the tenant has no such run."""
        ...

    async def runs(
        self, tenant: str, *, limit: int, after: str | None = None
    ) -> tuple[list[StoredRun], bool]:
        """The tenant's runs, newest first: up to ``limit`` of them, starting after the run ``after`` when
        given, and whether more follow. ``RunNotFoundError`` when ``after`` is not one of its runs."""
        ...

    async def thread(self, tenant: str, thread_id: str) -> list[str]:
        """The thread's rendered turns (none when the tenant has no such thread)."""
        ...

    async def run_turns(self, tenant: str, run_id: str) -> tuple[StoredRun, list[str]] | None:
        """The run's spec and record and the turns it committed itself (after its input), in one read;
        ``None`` when the tenant has no such run."""
        ...

    async def events(
        self, tenant: str, run_id: str, after: str = "0-0", *, block_ms: int | None = None
    ) -> list[Event]:
        """The run's events after the id ``after``; with ``block_ms``, waits that long for one when there
        is none yet (0: for as long as it takes)."""
        ...


class EventReader(Protocol):
    """Blocking reads of many runs' event streams at once; ``interrupt``, from any other task, ends a wait
    early (as if it timed out); ``aclose`` gives back what the reader holds."""

    async def read(
        self, positions: Mapping[RunRef, str], *, block_ms: int | None = None
    ) -> dict[RunRef, list[Event]]:
        """Each run's events after its position; none at all once ``block_ms`` passed (``None``: no wait)."""
        ...

    async def statuses(self, runs: Sequence[RunRef]) -> list[StoredStatus | None]:
        """Each run's stored status (``None`` where its record is gone)."""
        ...

    async def interrupt(self) -> None: ...

    async def aclose(self) -> None: ...


class EventFeed(Protocol):
    def reader(self) -> EventReader:
        """A new reader, for as long as it is not closed."""
        ...


class Control(Protocol):
    async def request_cancel(self, tenant: str, run_id: str) -> StoredStatus | None:
        """Ask for the run to stop; returns its status after, or ``None`` when there is no such run. A
        queued run that no worker holds is finished here (stop reason ``cancelled``); a held run hears
        of the request from its worker."""
        ...

    async def delete(self, tenant: str, run_id: str) -> Literal["deleted", "busy"] | None:
        """Delete a run that is over (its record, events, steps, ledger; its thread stays, as other runs
        may continue it): ``deleted``; ``busy`` for a run still queued or running (nothing is deleted);
        ``None`` when there is no such run."""
        ...

    async def ping(self) -> bool:
        """Whether the store answers (it raises ``StoreError`` when it does not)."""
        ...


class ApiStore(Submissions, RunReads, EventFeed, Control, Protocol):
    """Everything the REST API asks of the store."""


def input_turns(earlier: Sequence[str], text: str | None) -> list[str]:
    """The turns a submission appends: ``earlier``, then the user's turn for ``text`` (if any); at least
    one."""
    turns = [*earlier] if text is None else [*earlier, user_turn(text)]
    if not turns:
        raise ValueError("a submission appends at least one turn")
    return turns
