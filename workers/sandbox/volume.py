"""A size-limited filesystem for one conversation's scratch directory: a sparse ext4 image, loop-mounted.

The image is ``quota + slack`` bytes (sparse: it holds on disk only what is written), so writes stop hard
a little past the quota and ``used > quota`` tells the worker the call went over. It is mounted with
``discard``, so that space freed inside is punched out of the image and returned to the host's disk.
Mounting needs root (CAP_SYS_ADMIN), loop devices, ``mkfs.ext4`` and ``mount``: ``problem()`` probes
that once per scratch root by mounting a tiny image, and says why not where it fails.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import subprocess
from pathlib import Path

_MKFS = ("-q", "-F", "-m", "0", "-i", "16384", "-O", "^has_journal", "-E", "nodiscard")
_OPTIONS = "loop,nosuid,nodev,noatime,discard"
_TIMEOUT = 30
_PROBE_BYTES = 4 * 1024 * 1024
_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


class VolumeError(OSError):
    """A scratch filesystem could not be made, mounted or unmounted."""


def image_bytes(quota: int) -> int:
    """The image's size: the quota, an eighth more before writes fail, and room for ext4's own tables."""
    return quota + quota // 8 + 16 * 1024 * 1024


def _run(*argv: str) -> None:
    try:
        done = subprocess.run(argv, capture_output=True, timeout=_TIMEOUT, check=False, env={"PATH": _PATH})
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise VolumeError(f"{argv[0]}: {exc}") from exc
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip() or f"exit status {done.returncode}"
        raise VolumeError(f"{' '.join(argv[:2])}: {message}")


def mounted(path: Path) -> bool:
    return os.path.ismount(path)


def create(image: Path, size: int) -> None:
    """A fresh sparse image of ``size`` bytes with an empty ext4 filesystem."""
    with open(image, "wb") as handle:
        handle.truncate(size)
    _run("mkfs.ext4", *_MKFS, str(image))


def mount(image: Path, path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    _run("mount", "-o", _OPTIONS, str(image), str(path))
    path.chmod(0o700)
    with contextlib.suppress(OSError):  # a fresh filesystem's lost+found: tools should see an empty dir
        (path / "lost+found").rmdir()


def unmount(path: Path) -> None:
    _run("umount", str(path))


def syncfs(path: Path) -> None:
    """Flush the filesystem, which also returns the space of deleted files to the host (discard)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        ctypes.CDLL(None, use_errno=True).syncfs(fd)
    finally:
        os.close(fd)


def usage(path: Path) -> tuple[int, int]:
    """Bytes used on the filesystem at ``path``, and its free inodes."""
    stat = os.statvfs(path)
    return (stat.f_blocks - stat.f_bfree) * stat.f_frsize, stat.f_ffree


def problem(root: Path) -> str | None:
    """Why per-conversation volumes cannot be used under ``root``, or ``None`` when they can (probed
    once per filesystem and process)."""
    device = root.stat().st_dev
    if device not in _PROBED:
        _PROBED[device] = _probe(root)
    return _PROBED[device]


_PROBED: dict[int, str | None] = {}


def _probe(root: Path) -> str | None:
    if os.geteuid() != 0:
        return "mounting a scratch volume needs root (the worker runs as a user)"
    missing = [name for name in ("mkfs.ext4", "mount", "umount") if shutil.which(name, path=_PATH) is None]
    if missing:
        return f"missing {', '.join(missing)}"
    probe = root / ".caduceus" / f"probe-{os.getpid()}"
    image = probe.with_suffix(".img")
    try:
        probe.parent.mkdir(parents=True, exist_ok=True)
        create(image, _PROBE_BYTES)
        mount(image, probe)
        unmount(probe)
    except OSError as exc:
        return f"cannot loop-mount a scratch image under {root}: {exc}"
    finally:
        with contextlib.suppress(OSError):
            probe.rmdir()
        image.unlink(missing_ok=True)
    return None
