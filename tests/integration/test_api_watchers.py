"""Many clients watching many runs' events do not hold one Redis connection each: the API process reads
every watched stream through one connection, and its other requests keep their pool."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
import redis

from tests.api_support import A, B
from tests.integration.conftest_api import Service

pytestmark = pytest.mark.integration

RUNS, WATCHERS_PER_RUN = 50, 4


def _clients(redis_url: str, since: int = 0) -> list[dict[str, Any]]:
    """The connections Redis has from others than the asker, made after the connection ``since`` (the
    API's, here: earlier tests' connections may still be closing)."""
    raw = redis.Redis.from_url(redis_url)
    try:
        mine = raw.client_id()
        return [c for c in raw.client_list() if since < int(c["id"]) != mine]
    finally:
        raw.close()


def _frames(lines: Iterator[str]) -> list[dict[str, str]]:
    frames, frame = [], {}
    for line in lines:
        if not line:
            if frame:
                frames.append(frame)
            frame = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            frame[name] = value.removeprefix(" ")
    return frames


def test_two_hundred_event_streams_share_one_redis_connection(redis_url: str) -> None:
    before = max(int(client["id"]) for client in _clients(redis_url) or [{"id": 0}])
    service = Service(redis_url, worker=False, rate_per_s=100_000.0, burst=100_000)
    unlimited = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    with (
        service.running(),
        httpx.Client(base_url=service.url, limits=unlimited, timeout=10) as http,
        ExitStack() as streams,
    ):
        runs = [
            http.post("/v1/runs", json={"input": f"run {n}"}, headers=A).json()["id"] for n in range(RUNS)
        ]
        lines: dict[str, list[Iterator[str]]] = {run: [] for run in runs}
        for run in runs:
            for _ in range(WATCHERS_PER_RUN):
                response = streams.enter_context(http.stream("GET", f"/v1/runs/{run}/events", headers=A))
                assert response.status_code == 200
                watching = response.iter_lines()
                assert next(watching).startswith(":")  # the stream says it is watched
                lines[run].append(watching)
        # 200 streams are watched now. Redis sees the API's one blocking reader and a few connections for
        # its other requests (the pool keeps what it made), not one connection per stream (64, the pool's
        # size, before the hub).
        clients = _clients(redis_url, before)
        assert len(clients) <= 8, [(c["id"], c["cmd"], c["flags"], c["age"]) for c in clients]
        assert sum("b" in client["flags"] for client in clients) == 1
        # Another tenant's requests still answer, from the same pool.
        assert http.get("/v1/runs", headers=B).status_code == 200
        assert http.post("/v1/runs", json={"input": "other"}, headers=B).status_code == 202
        # The one reader hands each watcher its run's events: a cancelled run's four streams end with it.
        assert http.post(f"/v1/runs/{runs[7]}/cancel", headers=A).status_code == 200
        for watching in lines[runs[7]]:
            [finished] = _frames(watching)
            assert finished["event"] == "finished"
            assert json.loads(finished["data"])["stop_reason"] == "cancelled"
        assert len(_clients(redis_url, before)) <= 8
