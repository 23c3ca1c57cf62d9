"""The pooled sandbox: single-use hosts, started ahead of the calls that take them.

Two ways of binding a host to its conversation's scratch directory (``binding``):

- ``first_use`` (the fleet, ``fleet``): spare hosts forked from a template, not tied to a conversation,
  each bound at its first and only task. A conversation's first call costs what any call costs. Under
  bubblewrap this needs a worker that may clone mounts (CAP_SYS_ADMIN over its mount namespace, as root
  has); Landlock and the plain process always can, since their scratch is a path in the request.
- ``at_start``: hosts started for one scratch directory (and network): a call takes a warm one of its own
  conversation's, or starts one (a cold start), and a replacement for that conversation starts after it.
  Idle hosts are killed after ``idle_seconds`` and warm hosts are kept for at most ``max_keys``
  conversations, so an idle service holds few processes.

``auto`` takes ``first_use`` where it works and ``at_start`` elsewhere. ``warm`` is the number of warm
hosts per conversation for ``at_start``; ``spare`` the number of spare hosts per kind for ``first_use``
(``warm`` unless given).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path
from typing import Literal, TypeAlias

from workers.sandbox import nest
from workers.sandbox.cgroup import REQUIRED, CallGroups
from workers.sandbox.fleet import Fleet
from workers.sandbox.host import START_TIMEOUT, StartedHost
from workers.sandbox.launch import HostSpec
from workers.sandbox.policy import Mechanism, Outcome, Task

Binding: TypeAlias = Literal["auto", "first_use", "at_start"]
log = logging.getLogger(__name__)


class PooledSandbox:
    """A ``Sandbox`` that runs each task in a fresh host of the given mechanism."""

    def __init__(
        self,
        mechanism: Mechanism,
        *,
        preload: tuple[str, ...] = (),
        warm: int = 1,
        max_keys: int = 32,
        idle_seconds: float = 300.0,
        landlock_abi: int = 0,
        start_timeout: float = START_TIMEOUT,
        binding: Binding = "auto",
        spare: int | None = None,
    ) -> None:
        self.mechanism: Mechanism = mechanism
        self.binding: Binding = binding
        self.preload = preload
        self.warm = warm
        self.max_keys = max_keys
        self.idle_seconds = idle_seconds
        self.landlock_abi = landlock_abi  # tests run the fallback as on kernels before 6.12 with it
        self.start_timeout = start_timeout
        self.groups = CallGroups()
        self._ready: OrderedDict[HostSpec, list[StartedHost]] = OrderedDict()
        self._starting: set[asyncio.Task[None]] = set()
        self._pending: dict[HostSpec, int] = {}
        self._reaping: set[asyncio.Future[None]] = set()
        self._discarded: set[Path] = set()
        self.fleet = Fleet(
            mechanism,
            self.groups,
            preload=preload,
            spare=warm if spare is None else spare,
            landlock_abi=landlock_abi,
            start_timeout=start_timeout,
        )

    def problems(self) -> list[str]:
        """What keeps a call from being bounded as a whole: a required cgroup controller that is missing."""
        if self.groups.available:
            return []
        return [
            f"no {c} cgroup ({self.groups.problems.get(c, 'unavailable')})"
            for c in REQUIRED
            if c not in self.groups.hierarchies
        ]

    def spec_for(self, task: Task) -> HostSpec:
        return HostSpec(task.scratch, bool(task.egress), self.preload, self.landlock_abi)

    def first_use(self, task: Task) -> bool:
        """Whether ``task`` runs on the fleet (decided once, on the first task, for ``auto``)."""
        if self.binding == "auto":
            problem = binding_problem(self.mechanism, task.scratch)
            if problem is not None:
                log.warning("sandbox hosts are bound at their start, one conversation each: %s", problem)
            self.binding = "first_use" if problem is None else "at_start"
        return self.binding == "first_use"

    async def run(self, task: Task) -> Outcome:
        if self.first_use(task):
            return await self.fleet.run(task)
        spec = self.spec_for(task)
        host = self._take(spec) or await self._cold(spec, task)
        outcome = await host.run(task.target, task.arguments, task.limits, task.egress)
        if host.reaper is not None:
            self._reaping.add(host.reaper)
            host.reaper.add_done_callback(self._reaping.discard)
        # The replacement starts after the call, so that it does not compete with it for the CPU.
        self.refill(spec)
        return outcome

    async def _cold(self, spec: HostSpec, task: Task) -> StartedHost:
        # A host started for one waiting call imports only that call's tool, not every tool.
        return await StartedHost.start(
            replace(spec, preload=(task.module,)), self.mechanism, self.groups, self.start_timeout
        )

    async def prewarm(self, task: Task) -> None:
        """Start the warm hosts ``task`` would take (its conversation's, for ``at_start``) and wait
        until they are ready."""
        if self.first_use(task):
            await self.fleet.prewarm(task)
            return
        spec = self.spec_for(task)
        self.refill(spec)
        while self._starting:
            await asyncio.gather(*self._starting, return_exceptions=True)

    async def keep_spare(self, spare: int) -> int:
        """Keep ``spare`` spare hosts (of the kind without network) from now on: a taken one is replaced
        while fewer are ready (more are not stopped). Waits until they are ready; returns how many are
        (0 where hosts are bound at their start)."""
        if self.binding == "at_start":
            return 0
        self.fleet.spare = spare
        return await self.fleet.fill(HostSpec(None, False, self.preload, self.landlock_abi))

    def refill(self, spec: HostSpec) -> None:
        self._discarded.discard(spec.scratch)
        if self.warm <= 0:
            return
        missing = self.warm - len(self._ready.get(spec, [])) - self._pending.get(spec, 0)
        for _ in range(max(0, missing)):
            # Counted now, not when the job first runs, so that a second refill does not start more.
            self._pending[spec] = self._pending.get(spec, 0) + 1
            job = asyncio.ensure_future(self._start_into(spec))
            self._starting.add(job)
            job.add_done_callback(self._starting.discard)

    async def _start_into(self, spec: HostSpec) -> None:
        host: StartedHost | None = None
        try:
            host = await StartedHost.start(spec, self.mechanism, self.groups, self.start_timeout)
        except Exception:  # a failed warm start only means that the next call starts cold
            return
        finally:
            self._pending[spec] -= 1
            discarded = spec.scratch in self._discarded
            if not any(n for s, n in self._pending.items() if s.scratch == spec.scratch):
                self._discarded.discard(spec.scratch)
        if discarded:  # its conversation was let go while it started
            await host.kill()
            return
        self._ready.setdefault(spec, []).append(host)
        self._ready.move_to_end(spec)
        await self._evict()

    def _take(self, spec: HostSpec) -> StartedHost | None:
        hosts = self._ready.get(spec, [])
        while hosts:
            host = hosts.pop(0)
            if host.alive:
                return host
        return None

    async def _evict(self) -> None:
        now = time.monotonic()
        stale: list[StartedHost] = []
        for spec in list(self._ready):
            keep = [h for h in self._ready[spec] if h.alive and now - h.started < self.idle_seconds]
            stale += [h for h in self._ready[spec] if h not in keep]
            self._ready[spec] = keep
        while len(self._ready) > self.max_keys:
            stale += self._ready.popitem(last=False)[1]
        for host in stale:
            await host.kill()

    async def discard(self, scratch: Path) -> None:
        """Kill the warm hosts bound to ``scratch``, and any that finish starting later."""
        if any(n for spec, n in self._pending.items() if spec.scratch == scratch):
            self._discarded.add(scratch)
        for spec in [spec for spec in self._ready if spec.scratch == scratch]:
            for host in self._ready.pop(spec):
                await host.kill()

    def standing(self) -> set[int]:
        """Pids of the processes the pool keeps between calls (templates, spare and warm hosts): what
        is left after every call ended, when nothing of any task survived."""
        warm = {pid for hosts in self._ready.values() for host in hosts if host.alive for pid in host.tree()}
        return self.fleet.standing() | warm

    async def settle(self) -> None:
        """Wait until every finished host has exited (tests use it to check that nothing survives)."""
        await asyncio.gather(*self._reaping, return_exceptions=True)
        await self.fleet.settle()

    async def close(self) -> None:
        await self.settle()
        await self.fleet.close()
        for job in list(self._starting):
            job.cancel()
        await asyncio.gather(*self._starting, return_exceptions=True)
        for hosts in self._ready.values():
            for host in hosts:
                await host.kill()
        self._ready.clear()


def binding_problem(mechanism: Mechanism, scratch: Path) -> str | None:
    """Why hosts cannot be bound at their first task here (``None`` when they can): under bubblewrap,
    this worker must be able to clone the scratch directory's mount (hosts receive it detached)."""
    if mechanism != "bubblewrap":
        return None
    try:
        os.close(nest.detach(str(scratch)))
    except OSError as exc:
        return f"this worker cannot clone mounts ({exc.strerror}; it needs CAP_SYS_ADMIN)"
    return None
