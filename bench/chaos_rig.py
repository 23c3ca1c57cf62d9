"""What the chaos campaign injects its faults into, each a real process or socket it owns.

- ``RedisServer``: a redis-server with AOF persistence as the Helm chart runs it (``--appendonly yes``,
  ``--appendfsync everysec`` unless told otherwise), which can be stopped (SIGTERM: a clean shutdown;
  SIGKILL: a crash) and started again on the same port from the same AOF, or paused (SIGSTOP) and resumed.
- ``Proxy``: a TCP proxy on loopback between the workers and Redis. ``cut`` resets every connection at
  once; ``blackhole`` makes every connection open now (and every one opened in the next ``seconds``) go
  silent for good, as when the peer vanishes without a reset: what is sent is dropped, nothing comes back,
  and nothing tells the client, whose only way out is a timeout of its own.
- ``Fleet``: processes by name, started from a command; a killed one is started again under a new name.
- ``calls_in_flight``: the sandbox processes of tool calls running right now under some processes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import redis

from deploy.local_redis import free_port, redis_server_binary


class RedisServer:
    """A redis-server on a fixed loopback port, with its data (the AOF) in ``workdir``."""

    def __init__(self, workdir: Path, *, appendfsync: str = "everysec") -> None:
        self.port, self.workdir, self.appendfsync = free_port(), workdir, appendfsync
        self.process: subprocess.Popen[bytes] | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    def start(self) -> None:
        command = [redis_server_binary(), "--bind", "127.0.0.1", "--port", str(self.port)]
        command += ["--dir", str(self.workdir), "--save", "", "--appendonly", "yes"]
        command += ["--appendfsync", self.appendfsync, "--databases", "32"]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self._ready()

    def _ready(self) -> None:
        """Wait until it answers PING (it refuses commands while it loads its AOF)."""
        client = redis.Redis(port=self.port, socket_timeout=1)
        try:
            for _ in range(500):
                assert self.process is not None
                if self.process.poll() is not None:
                    raise RuntimeError(f"redis-server exited with {self.process.returncode}")
                with contextlib.suppress(redis.RedisError, OSError):
                    if client.ping():
                        return
                time.sleep(0.02)
            raise RuntimeError("redis-server did not answer in 10 s")
        finally:
            client.close()

    def stop(self, how: signal.Signals = signal.SIGTERM) -> None:
        if self.process is not None:
            self.process.send_signal(signal.SIGCONT)  # a paused server could not handle its SIGTERM
            self.process.send_signal(how)
            self.process.wait(timeout=30)
            self.process = None

    def restart(self, how: signal.Signals, down_s: float) -> None:
        self.stop(how)
        time.sleep(down_s)
        self.start()
        self.restarts += 1

    def pause(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)


class Proxy:
    """A loopback TCP proxy to ``target_port``, whose connections the campaign can cut or silence."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pairs: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._silent: set[asyncio.StreamWriter] = set()
        self._silent_until = 0.0
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.transport.abort()
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        if time.monotonic() < self._silent_until:
            self._silent.update(pair)
        for source, sink in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._pipe(source, sink, pair))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _pipe(
        self,
        source: asyncio.StreamReader,
        sink: asyncio.StreamWriter,
        pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter],
    ) -> None:
        with contextlib.suppress(OSError, asyncio.CancelledError):
            while data := await source.read(65536):
                if sink in self._silent:
                    continue  # dropped: the peer seems to have vanished
                sink.write(data)
                await sink.drain()
        if not self._silent.intersection(pair):
            _close(pair)
            self._pairs.discard(pair)

    def cut(self) -> int:
        """Reset every connection now (both sides); returns how many there were."""
        pairs, self._pairs = list(self._pairs), set()
        for pair in pairs:
            self._silent.difference_update(pair)
            _close(pair)
        return len(pairs)

    def blackhole(self, seconds: float) -> int:
        """Silence every open connection for good, and the new ones for ``seconds``; returns how many."""
        self._silent_until = time.monotonic() + seconds
        for pair in self._pairs:
            self._silent.update(pair)
        return len(self._pairs)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()


def _close(pair: tuple[asyncio.StreamWriter, asyncio.StreamWriter]) -> None:
    for writer in pair:
        writer.transport.abort()


class Fleet:
    """Processes by name, each started by ``command(name)``; ``kill`` SIGKILLs one and starts a new one."""

    def __init__(self, prefix: str, size: int, command: Callable[[str], list[str]]) -> None:
        self._prefix, self._command, self._born = prefix, command, 0
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        for _ in range(size):
            self.spawn()

    def spawn(self) -> str:
        self._born += 1
        name = f"{self._prefix}{self._born}"
        self.processes[name] = subprocess.Popen(self._command(name))
        return name

    def kill(self, name: str, *, respawn: bool = True) -> None:
        process = self.processes.pop(name)
        process.send_signal(signal.SIGKILL)
        process.wait()
        if respawn:
            self.spawn()

    def signal(self, number: signal.Signals) -> None:
        """Send ``number`` to each process that handles it: one still starting would die of it."""
        for process in self.processes.values():
            if _catches(process.pid, number):
                process.send_signal(number)

    def serving(self) -> bool:
        """Whether every process is past its start: it handles SIGTERM (a stop) by then."""
        return all(_catches(process.pid, signal.SIGTERM) for process in self.processes.values())

    def stop(self) -> None:
        for process in self.processes.values():
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.processes.clear()


def _catches(pid: int, number: signal.Signals) -> bool:
    """Whether the process has a handler for signal ``number`` installed (its SigCgt mask in /proc)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    mask = next((line.split()[1] for line in status.splitlines() if line.startswith("SigCgt:")), "0")
    return bool(int(mask, 16) >> (number - 1) & 1)


def _table() -> tuple[dict[int, int], dict[int, list[bytes]]]:
    parents: dict[int, int] = {}
    stats: dict[int, list[bytes]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{entry}/stat").read_bytes().rsplit(b")", 1)[1].split()
                parents[int(entry)] = int(fields[1])
                stats[int(entry)] = fields
    return parents, stats


def descendants(roots: set[int]) -> set[int]:
    parents, _ = _table()
    found: set[int] = set()
    frontier = roots
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier and pid not in found}
        found |= frontier
    return found


def calls_in_flight(roots: set[int]) -> list[tuple[int, int]]:
    """The tool calls running now in the sandboxes under ``roots``, as (task process, its host process).

    A sandbox host forks its task's process ahead of the call; that process leads a session of its own,
    and sets its CPU time limit only once it has read its request: a session leader under a host whose
    CPU time is limited is a call in progress."""
    parents, stats = _table()
    under = descendants(roots)
    found = []
    for pid in under:
        fields = stats.get(pid)
        if fields is None or int(fields[3]) != pid or parents.get(pid) not in under:
            continue
        with contextlib.suppress(OSError):
            limits = Path(f"/proc/{pid}/limits").read_text()
            line = next(line for line in limits.splitlines() if line.startswith("Max cpu time"))
            if "unlimited" not in line:
                found.append((pid, parents[pid]))
    return found
