"""Each conversation's scratch directory: where it lives, its disk quota, and when it expires.

Under the scratch root (``scratch_root()``)::

    <root>/<conversation>/                  what the tools see, read-write (a mount point with a quota)
    <root>/.caduceus/<conversation>.img     its filesystem image (``volume``), when quotas work here
    <root>/.caduceus/<conversation>.lock    a lock, whose modification time is the conversation's last use

**Quota.** Where the worker may loop-mount (root, loop devices, ``mkfs.ext4``), each conversation's
directory is a filesystem of its own, ``quota_bytes`` plus a little slack: writes stop hard there, and a
call that leaves the conversation over its quota fails (``denied``) and the files it wrote are removed,
so the space is given back. Elsewhere the directories are plain and ``problem`` says why; the executor
then refuses untrusted tools and ``caduceus doctor`` says so.

**Holding.** A worker holds a shared ``flock`` on the lock of every conversation it has a call or a warm
sandbox for, so that no other worker unmounts or deletes it meanwhile; preparing (mounting), unmounting and
deleting take the lock exclusively, without waiting, so that workers share a conversation at once (a run
taken over by another worker goes on in the same directory). The lock file is re-checked after locking (it
may have been deleted).

**Expiry.** ``sweep`` unmounts the volumes of conversations unused for ``idle_seconds`` (the data stays in
the image) and deletes directory, image and lock of those unused for ``ttl_seconds``.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import shutil
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from workers.errors import ToolConfigError
from workers.sandbox import volume
from workers.sandbox.policy import check_conversation

_STATE = ".caduceus"
_SHOWN = 10  # file names listed in a quota error
_CLOCK_REALTIME_COARSE = 5  # Linux; the time module does not name it
_TICK_S = 0.001


@dataclass(frozen=True)
class ScratchSettings:
    quota_bytes: int = 256 * 1024 * 1024
    ttl_seconds: float = 7 * 24 * 3600.0
    idle_seconds: float = 15 * 60.0
    sweep_seconds: float = 60.0
    quota: bool = True  # False: plain directories even where volumes work (said by ``problem``)

    @classmethod
    def from_env(cls) -> ScratchSettings:
        """``CADUCEUS_SCRATCH_QUOTA_MB`` (0: no quota) and ``CADUCEUS_SCRATCH_TTL_HOURS`` override."""
        settings = cls()
        quota = _number("CADUCEUS_SCRATCH_QUOTA_MB")
        if quota is not None:
            megabytes = int(quota)
            settings = replace(settings, quota_bytes=max(megabytes, 1) * 1024 * 1024, quota=megabytes > 0)
        ttl = _number("CADUCEUS_SCRATCH_TTL_HOURS")
        if ttl is not None:
            settings = replace(settings, ttl_seconds=ttl * 3600.0)
        return settings


def _number(name: str) -> float | None:
    text = os.environ.get(name, "").strip()
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if value < 0:
        raise ToolConfigError(f"{name} must be a number of at least 0, not {text!r}")
    return value


@dataclass(frozen=True)
class Overrun:
    """A call left its conversation over quota; ``removed`` are the files it wrote, now deleted."""

    used: int
    removed: list[str]

    def message(self, quota: int) -> str:
        shown = ", ".join(self.removed[:_SHOWN]) + (" ..." if len(self.removed) > _SHOWN else "")
        return (
            f"the call wrote past this conversation's scratch quota of {quota // (1024 * 1024)} MiB; "
            f"the {len(self.removed)} file(s) it wrote were removed to give the space back"
            + (f" ({shown})" if shown else "")
            + ": write less, or delete files you no longer need"
        )


@dataclass
class _Held:
    fd: int
    path: Path
    busy: int = 0
    last_used: float = field(default_factory=time.monotonic)


class ScratchStore:
    """The scratch directories of one scratch root, their quotas and their expiry."""

    def __init__(self, root: Path, settings: ScratchSettings | None = None) -> None:
        self.root = root
        self.settings = settings or ScratchSettings()
        self._state = root / _STATE
        self._held: dict[str, _Held] = {}
        self._lock = threading.Lock()  # counters only, never held while mounting
        self._opening = threading.Lock()
        self.problem: str | None = "quotas are switched off (CADUCEUS_SCRATCH_QUOTA_MB=0)"
        if self.settings.quota:
            root.mkdir(parents=True, exist_ok=True)
            self.problem = volume.problem(root)

    @property
    def quota(self) -> bool:
        return self.problem is None

    def describe(self) -> str:
        if self.problem is not None:
            return f"NONE: {self.problem}; expiry after {self.settings.ttl_seconds / 3600:g} h unused"
        return (
            f"{self.settings.quota_bytes // (1024 * 1024)} MiB per conversation (loop-mounted ext4 image), "
            f"unmounted after {self.settings.idle_seconds / 60:g} min idle, "
            f"deleted after {self.settings.ttl_seconds / 3600:g} h unused"
        )

    def path(self, conversation: str) -> Path:
        return self.root / check_conversation(conversation)

    def enter(self, conversation: str) -> Path:
        """Hold the conversation's directory (mounted, with its quota) for a call; pair with ``leave``.
        Mounting takes a moment: call it in a thread unless ``ready``."""
        held = self._held.get(conversation)
        if held is None:
            with self._opening:  # never taken on the event loop's path: see ready()
                held = self._held.get(conversation) or self._open(conversation, self.path(conversation))
        with self._lock:
            held.busy += 1
            held.last_used = time.monotonic()
        with contextlib.suppress(OSError):
            os.utime(held.fd)  # the last use, which expiry goes by
        return held.path

    def ready(self, conversation: str) -> bool:
        """Whether ``enter`` will not have to mount (so it need not go to a thread)."""
        return conversation in self._held

    def leave(self, conversation: str) -> None:
        with self._lock:
            held = self._held.get(conversation)
            if held is not None:
                held.busy -= 1
                held.last_used = time.monotonic()

    def idle(self, now: float | None = None) -> list[str]:
        """Held conversations with no call for ``idle_seconds``: release them once nothing uses them."""
        now = time.monotonic() if now is None else now
        limit = self.settings.idle_seconds
        with self._lock:
            return [c for c, h in self._held.items() if h.busy == 0 and now - h.last_used >= limit]

    def release(self, conversation: str) -> None:
        """Stop holding an idle conversation (its warm sandboxes must be gone): others may unmount it."""
        with self._lock:
            held = self._held.get(conversation)
            if held is None or held.busy:
                return
            del self._held[conversation]
        os.close(held.fd)

    def release_all(self) -> None:
        with self._lock:
            held, self._held = list(self._held.values()), {}
        for entry in held:
            os.close(entry.fd)

    def over(self, conversation: str) -> bool:
        """Whether the conversation is past its quota (bytes, or files: the volume's inodes)."""
        if not self.quota:
            return False
        held = self._held.get(conversation)
        used, free_inodes = volume.usage(held.path if held is not None else self.path(conversation))
        return used > self.settings.quota_bytes or free_inodes == 0

    def reclaim(self, conversation: str, since_ns: int) -> Overrun:
        """Remove what was written since ``since_ns`` (a ``coarse_now_ns`` reading taken before the call
        that went over), and give its space back to the host's disk."""
        path = self.path(conversation)
        used, _ = volume.usage(path)
        removed = _remove_newer(path, since_ns)
        volume.syncfs(path)
        return Overrun(used, removed)

    def _open(self, conversation: str, path: Path) -> _Held:
        self._state.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = self._shared(conversation, path)
        held = _Held(fd, path)
        with self._lock:
            self._held[conversation] = held
        return held

    def _shared(self, conversation: str, path: Path) -> int:
        """The conversation's lock, held shared, once its directory is ready (prepared here if need be).

        The shared lock waits only for an exclusive holder (a prepare, an unmount or an expiry: short).
        Preparing takes the lock exclusively without waiting: another worker that holds it shared holds
        a prepared directory, which the next look finds ready; waiting for it instead would last as long
        as that worker uses the conversation."""
        lock = self._state / f"{conversation}.lock"
        while True:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_SH)
            if not _same_file(fd, lock):
                os.close(fd)  # deleted by an expiry meanwhile: lock the new one
                continue
            if self._ready_on_disk(path):
                return fd
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)  # another worker is preparing it, or holds it: look again
                time.sleep(0.005)
                continue
            try:
                if _same_file(fd, lock):
                    self._prepare(conversation, path)
                    fcntl.flock(fd, fcntl.LOCK_SH)  # others may use it too, but not unmount or delete it
                    return fd
            except BaseException:
                os.close(fd)
                raise
            os.close(fd)

    def _ready_on_disk(self, path: Path) -> bool:
        return volume.mounted(path) if self.quota else path.is_dir()

    def _prepare(self, conversation: str, path: Path) -> None:
        if not self.quota:
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            return
        if volume.mounted(path):
            return
        image = self._state / f"{conversation}.img"
        if image.exists():
            volume.mount(image, path)
            return
        # A directory from before quotas: its files move into the new volume.
        legacy = self._state / f"{conversation}.legacy"
        if path.is_dir() and any(path.iterdir()):
            path.rename(legacy)
        volume.create(image, volume.image_bytes(self.settings.quota_bytes))
        volume.mount(image, path)
        if legacy.exists():
            shutil.copytree(legacy, path, symlinks=True, dirs_exist_ok=True)
            shutil.rmtree(legacy)

    def sweep(self, now: float | None = None) -> list[str]:
        """Unmount idle volumes and delete expired conversations that no worker holds; says what it did."""
        now = time.time() if now is None else now
        done: list[str] = []
        for conversation, stamp in self._stamps().items():
            if conversation in self._held:
                continue
            age = now - stamp
            if age >= self.settings.ttl_seconds:
                done += [f"deleted {conversation}"] if self._expire(conversation) else []
            elif age >= self.settings.idle_seconds and volume.mounted(self.root / conversation):
                done += [f"unmounted {conversation}"] if self._unmount(conversation) else []
        return done

    def _stamps(self) -> dict[str, float]:
        """Each conversation's last use: its lock's modification time, else its directory's or image's."""
        found: dict[str, dict[str, float]] = {}
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self.root):
                if not entry.name.startswith(".") and entry.is_dir(follow_symlinks=False):
                    found.setdefault(entry.name, {})["dir"] = entry.stat(follow_symlinks=False).st_mtime
        with contextlib.suppress(FileNotFoundError):
            for entry in os.scandir(self._state):
                name, _, kind = entry.name.rpartition(".")
                if kind in ("lock", "img") and not name.startswith("probe-"):
                    found.setdefault(name, {})[kind] = entry.stat().st_mtime
        return {
            name: times.get("lock", times.get("dir", times.get("img", 0.0))) for name, times in found.items()
        }

    def _exclusive(self, conversation: str) -> int | None:
        """The conversation's lock, taken exclusively, or ``None`` when a worker holds it."""
        lock = self._state / f"{conversation}.lock"
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError:
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                return None
            raise
        if not _same_file(fd, lock):
            os.close(fd)
            return None
        return fd

    def _unmount(self, conversation: str) -> bool:
        fd = self._exclusive(conversation)
        if fd is None:
            return False
        try:
            volume.unmount(self.root / conversation)
        except volume.VolumeError:
            return False
        finally:
            os.close(fd)
        return True

    def _expire(self, conversation: str) -> bool:
        check_conversation(conversation)
        fd = self._exclusive(conversation)
        if fd is None:
            return False
        try:
            path = self.root / conversation
            if volume.mounted(path):
                volume.unmount(path)
            shutil.rmtree(path, ignore_errors=True)
            (self._state / f"{conversation}.img").unlink(missing_ok=True)
            (self._state / f"{conversation}.lock").unlink(missing_ok=True)
        except volume.VolumeError:
            return False
        finally:
            os.close(fd)
        return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _remove_newer(root: Path, since_ns: int) -> list[str]:
    """Delete the files under ``root`` modified at or after ``since_ns``, never following a symlink."""
    removed: list[str] = []
    for directory, _, names, dir_fd in os.fwalk(root, follow_symlinks=False):
        for name in names:
            with contextlib.suppress(OSError):
                if os.stat(name, dir_fd=dir_fd, follow_symlinks=False).st_mtime_ns >= since_ns:
                    os.unlink(name, dir_fd=dir_fd)
                    removed.append(os.path.relpath(os.path.join(directory, name), root))
    return sorted(removed)


def coarse_now_ns() -> int:
    """The clock the kernel stamps files with, so that a file written just after a reading is not older."""
    return time.clock_gettime_ns(_CLOCK_REALTIME_COARSE)


async def fresh_tick_ns() -> int:
    """A ``coarse_now_ns`` reading later than the stamp of every file written before the call: it waits
    for the clock's next tick (4 ms here). A file written by the call before, in the same tick, would
    otherwise look written by this call, and be removed with its files if this call goes over its quota."""
    before = coarse_now_ns()
    while (now := coarse_now_ns()) == before:
        await asyncio.sleep(_TICK_S)
    return now
