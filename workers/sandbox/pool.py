"""The pooled sandbox: warm hosts per (scratch directory, network), one task each.

A call takes a host that is already started and warm (namespaces made, interpreter up, tool modules
imported), so it pays only for a fork; meanwhile a replacement starts in the background. A call that finds
no warm host starts one (a cold start). Idle hosts are killed after ``idle_seconds`` and the pool keeps
warm hosts for at most ``max_keys`` scratch directories, so an idle service holds few processes.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from dataclasses import replace
from pathlib import Path

from workers.sandbox.cgroup import REQUIRED, CallGroups
from workers.sandbox.host import START_TIMEOUT, Host
from workers.sandbox.launch import HostSpec
from workers.sandbox.policy import Mechanism, Outcome, Task


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
    ) -> None:
        self.mechanism: Mechanism = mechanism
        self.preload = preload
        self.warm = warm
        self.max_keys = max_keys
        self.idle_seconds = idle_seconds
        self.landlock_abi = landlock_abi  # tests run the fallback as on kernels before 6.12 with it
        self.start_timeout = start_timeout
        self.groups = CallGroups()
        self._ready: OrderedDict[HostSpec, list[Host]] = OrderedDict()
        self._starting: set[asyncio.Task[None]] = set()
        self._pending: dict[HostSpec, int] = {}
        self._reaping: set[asyncio.Future[None]] = set()
        self._discarded: set[Path] = set()

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

    async def run(self, task: Task) -> Outcome:
        spec = self.spec_for(task)
        host = self._take(spec) or await self._cold(spec, task)
        outcome = await host.run(task.target, task.arguments, task.limits, task.egress)
        if host.reaper is not None:
            self._reaping.add(host.reaper)
            host.reaper.add_done_callback(self._reaping.discard)
        # The replacement starts after the call, so that it does not compete with it for the CPU.
        self.refill(spec)
        return outcome

    async def _cold(self, spec: HostSpec, task: Task) -> Host:
        # A host started for one waiting call imports only that call's tool, not every tool.
        return await Host.start(
            replace(spec, preload=(task.module,)), self.mechanism, self.groups, self.start_timeout
        )

    async def prewarm(self, task: Task) -> None:
        """Start the warm hosts for ``task``'s scratch directory and wait until they are ready."""
        spec = self.spec_for(task)
        self.refill(spec)
        while self._starting:
            await asyncio.gather(*self._starting, return_exceptions=True)

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
        host: Host | None = None
        try:
            host = await Host.start(spec, self.mechanism, self.groups, self.start_timeout)
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

    def _take(self, spec: HostSpec) -> Host | None:
        hosts = self._ready.get(spec, [])
        while hosts:
            host = hosts.pop(0)
            if host.alive:
                return host
        return None

    async def _evict(self) -> None:
        now = time.monotonic()
        stale: list[Host] = []
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

    async def settle(self) -> None:
        """Wait until every finished host has exited (tests use it to check that nothing survives)."""
        await asyncio.gather(*self._reaping, return_exceptions=True)

    async def close(self) -> None:
        await self.settle()
        for job in list(self._starting):
            job.cancel()
        await asyncio.gather(*self._starting, return_exceptions=True)
        for hosts in self._ready.values():
            for host in hosts:
                await host.kill()
        self._ready.clear()
