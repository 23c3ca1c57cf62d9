"""The pooled sandbox fleet: spare hosts not tied to a conversation, each bound at its first task.

One template per kind of host (network or not; the tools it preloads) forks the hosts. The fleet keeps
``spare`` of them ready per kind; a call takes one (or, when none is ready, has one forked for it: a fork
and namespaces, milliseconds), binds it to the call's conversation and runs its one task, and a
replacement is forked in the background. So a conversation's first call costs what any later call costs,
and warm hosts are not held per conversation: 200 conversations share a few spares.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from workers.sandbox.cgroup import CallGroups
from workers.sandbox.host import START_TIMEOUT
from workers.sandbox.launch import HostSpec
from workers.sandbox.policy import Mechanism, Outcome, Task
from workers.sandbox.template import ForkedHost, Template

log = logging.getLogger(__name__)


class Fleet:
    def __init__(
        self,
        mechanism: Mechanism,
        groups: CallGroups,
        *,
        preload: tuple[str, ...],
        spare: int,
        landlock_abi: int = 0,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        self.mechanism: Mechanism = mechanism
        self.groups = groups
        self.preload = preload
        self.spare = spare
        self.landlock_abi = landlock_abi
        self.start_timeout = start_timeout
        self._templates: dict[HostSpec, asyncio.Future[Template]] = {}
        self._ready: dict[HostSpec, list[ForkedHost]] = {}
        self._pending: dict[HostSpec, int] = {}
        self._forking: set[asyncio.Future[None]] = set()
        self._reaping: set[asyncio.Future[None]] = set()
        self._closed = False

    def kind(self, task: Task) -> HostSpec:
        return HostSpec(None, bool(task.egress), self.preload, self.landlock_abi)

    async def run(self, task: Task) -> Outcome:
        kind = self.kind(task)
        host = self._take(kind) or await self._fork(kind)
        outcome = await host.run(task.target, task.arguments, task.limits, task.egress, task.scratch)
        if host.reaper is not None:
            self._reaping.add(host.reaper)
            host.reaper.add_done_callback(self._reaping.discard)
        self.refill(kind)
        return outcome

    async def prewarm(self, task: Task) -> None:
        """Start the kind's template and its spare hosts, and wait until they are ready."""
        await self.fill(self.kind(task))

    async def fill(self, kind: HostSpec) -> int:
        """Fork the kind's missing spares and wait for them; returns how many are ready."""
        self.refill(kind)
        while self._forking:
            await asyncio.gather(*self._forking, return_exceptions=True)
        return len(self._ready.get(kind, []))

    def refill(self, kind: HostSpec) -> None:
        if self._closed:
            return
        missing = self.spare - len(self._ready.get(kind, [])) - self._pending.get(kind, 0)
        for _ in range(max(0, missing)):
            # Counted now, not when the job first runs, so that a second refill does not fork more.
            self._pending[kind] = self._pending.get(kind, 0) + 1
            job = asyncio.ensure_future(self._spare(kind))
            self._forking.add(job)
            job.add_done_callback(self._forking.discard)

    async def _spare(self, kind: HostSpec) -> None:
        try:
            host = await self._fork(kind)
        except Exception as exc:  # a spare that failed only means that the next call forks its own
            log.warning("a spare sandbox host could not be forked: %s", exc)
            return
        finally:
            self._pending[kind] -= 1
        self._ready.setdefault(kind, []).append(host)

    def _take(self, kind: HostSpec) -> ForkedHost | None:
        hosts = self._ready.get(kind, [])
        while hosts:
            host = hosts.pop(0)
            if host.alive:
                return host
        return None

    async def _fork(self, kind: HostSpec) -> ForkedHost:
        template = await self._template(kind)
        return await template.fork(self.mechanism, self.groups, self.start_timeout)

    async def _template(self, kind: HostSpec) -> Template:
        """The kind's template, started once (concurrent callers wait for the same start) and again if
        it died."""
        starting = self._templates.get(kind)
        if starting is not None and starting.done():
            if _started(starting) is not None:
                return starting.result()
            starting = None
        if starting is None:
            starting = asyncio.ensure_future(Template.start(kind, self.mechanism, self.start_timeout))
            self._templates[kind] = starting
        try:
            return await asyncio.shield(starting)
        except BaseException:
            if self._templates.get(kind) is starting and starting.done():
                del self._templates[kind]  # the next call tries again
            raise

    def standing(self) -> set[int]:
        """The processes the fleet keeps between calls: its templates' and its spare hosts'."""
        found: set[int] = set()
        for starting in self._templates.values():
            template = _started(starting)
            if template is not None:
                found |= template.pids
        for hosts in self._ready.values():
            for host in hosts:
                found |= host.pids()
        return found

    async def settle(self) -> None:
        """Wait until every finished host has exited (tests use it to check that nothing survives)."""
        await asyncio.gather(*self._reaping, return_exceptions=True)

    async def close(self) -> None:
        self._closed = True  # no more spares
        await self.settle()
        # Spares being forked are waited for, not cancelled: a cancelled job could drop a host that
        # was just handed to it, alive, with nobody to stop it.
        await asyncio.gather(*self._forking, return_exceptions=True)
        for hosts in self._ready.values():
            for host in hosts:
                await host.kill()
        self._ready.clear()
        for starting in self._templates.values():
            starting.cancel()  # one still starting stops
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await starting
            if starting.done() and not starting.cancelled() and starting.exception() is None:
                await starting.result().close()
        self._templates.clear()


def _started(starting: asyncio.Future[Template]) -> Template | None:
    """The template a finished start gave, if it is still alive."""
    if not starting.done() or starting.cancelled() or starting.exception() is not None:
        return None
    template = starting.result()
    return template if template.alive else None
