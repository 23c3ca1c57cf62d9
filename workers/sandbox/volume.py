"""A size-limited filesystem for one conversation's scratch directory: a sparse ext4 image, loop-mounted.

The image is ``quota + slack`` bytes (sparse: it holds on disk only what is written), so writes stop hard
a little past the quota and ``used > quota`` tells the worker the call went over. It is mounted with
``discard``, so that space freed inside is punched out of the image and returned to the host's disk.
Mounting needs root (CAP_SYS_ADMIN), loop devices, ``mkfs.ext4`` and ``mount``: ``problem()`` probes
that once per scratch root by mounting a tiny image, and says why not where it fails.

A conversation's first call waits for its volume, so making one is kept to milliseconds: the image is a
copy of the data blocks of a pristine image of that size (formatted once per scratch root by
``mkfs.ext4``, 15 ms), and it is attached to a loop device and mounted by the system calls themselves
(``LOOP_CONFIGURE``, ``mount``) rather than by ``mount(8)`` (40 ms here); ``mount(8)`` remains the way on
kernels without ``LOOP_CONFIGURE`` (before 5.8).
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import shutil
import struct
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
    """A fresh sparse image of ``size`` bytes with an empty ext4 filesystem: a copy of the pristine image
    of that size beside it (``pristine-<size>.ext4``, formatted the first time)."""
    pristine = image.with_name(f"pristine-{size}.ext4")
    if not pristine.exists():
        fresh = image.with_name(f".{pristine.name}.{os.getpid()}")
        _format(fresh, size)
        os.replace(fresh, pristine)  # workers racing here each rename a valid image
    try:
        _copy_sparse(pristine, image, size)
    except OSError as exc:
        image.unlink(missing_ok=True)
        raise VolumeError(f"cannot copy the pristine image into {image}: {exc}") from exc


def _format(image: Path, size: int) -> None:
    with open(image, "wb") as handle:
        handle.truncate(size)
    _run("mkfs.ext4", *_MKFS, str(image))


def _copy_sparse(source: Path, target: Path, size: int) -> None:
    """Copy ``source``'s data blocks into ``target`` (``size`` bytes); holes stay holes."""
    with open(source, "rb") as src, open(target, "wb") as dst:
        dst.truncate(size)
        offset = 0
        while offset < size:
            try:
                start = os.lseek(src.fileno(), offset, os.SEEK_DATA)
            except OSError as exc:
                if exc.errno == errno.ENXIO:  # no data after offset
                    break
                raise
            end = os.lseek(src.fileno(), start, os.SEEK_HOLE)
            while start < end:
                start += os.copy_file_range(src.fileno(), dst.fileno(), end - start, start, start)
            offset = end


def mount(image: Path, path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        _loop_mount(image, path)
    except _NoLoopConfigureError:
        _run("mount", "-o", _OPTIONS, str(image), str(path))
    path.chmod(0o700)
    with contextlib.suppress(OSError):  # a fresh filesystem's lost+found: tools should see an empty dir
        (path / "lost+found").rmdir()


def unmount(path: Path) -> None:
    """Unmount the volume (its loop device detaches itself once no mount uses it: autoclear)."""
    if _libc.umount2(str(path).encode(), 0) != 0:
        number = ctypes.get_errno()
        raise VolumeError(number, f"umount {path}: {os.strerror(number)}")


class _NoLoopConfigureError(Exception):
    """This kernel cannot attach a loop device in one call: ``mount(8)`` does it."""


_LOOP_CTL_GET_FREE, _LOOP_CONFIGURE, _LO_FLAGS_AUTOCLEAR = 0x4C82, 0x4C0A, 4
_MS_NOSUID, _MS_NODEV, _MS_NOATIME = 0x2, 0x4, 0x400
_LOOP_ATTEMPTS = 16  # another worker may take the free device first
_libc = ctypes.CDLL(None, use_errno=True)


def _loop_config(backing: int, image: Path) -> bytes:
    """``struct loop_config``: the backing file, the block size (0: the default), ``struct loop_info64``
    (the flags at offset 52, the file name at 56, for ``losetup -l``) and reserved space."""
    info = bytearray(232)
    struct.pack_into("I", info, 52, _LO_FLAGS_AUTOCLEAR)
    name = str(image).encode()[:63]
    info[56 : 56 + len(name)] = name
    return struct.pack("II", backing, 0) + bytes(info) + bytes(64)


def _loop_mount(image: Path, path: Path) -> None:
    try:
        control = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    except OSError as exc:
        raise _NoLoopConfigureError from exc
    backing = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    try:
        for _ in range(_LOOP_ATTEMPTS):
            device = f"/dev/loop{fcntl.ioctl(control, _LOOP_CTL_GET_FREE)}"
            if _attach_and_mount(device, backing, image, path):
                return
        raise VolumeError(f"mount {path}: no free loop device after {_LOOP_ATTEMPTS} tries")
    finally:
        os.close(backing)
        os.close(control)


def _attach_and_mount(device: str, backing: int, image: Path, path: Path) -> bool:
    """Attach ``image`` to ``device`` and mount it at ``path``; ``False`` when another took the device."""
    try:
        loop = os.open(device, os.O_RDWR | os.O_CLOEXEC)
    except FileNotFoundError as exc:  # no device nodes made here (a /dev without devtmpfs)
        raise _NoLoopConfigureError from exc
    try:
        try:
            fcntl.ioctl(loop, _LOOP_CONFIGURE, _loop_config(backing, image))
        except OSError as exc:
            if exc.errno == errno.EBUSY:
                return False
            if exc.errno in (errno.EINVAL, errno.ENOTTY):
                raise _NoLoopConfigureError from exc
            raise VolumeError(f"attach {image} to {device}: {exc.strerror}") from exc
        flags = ctypes.c_ulong(_MS_NOSUID | _MS_NODEV | _MS_NOATIME)
        if _libc.mount(device.encode(), str(path).encode(), b"ext4", flags, b"discard") != 0:
            number = ctypes.get_errno()  # closing the device below detaches it (autoclear)
            raise VolumeError(number, f"mount {image} at {path}: {os.strerror(number)}")
        return True
    finally:
        os.close(loop)


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
