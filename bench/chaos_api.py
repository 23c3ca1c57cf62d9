"""API replicas killed while clients stream: the real REST app under uvicorn, and clients that follow runs.

Each replica is a process serving ``orchestrator.api.create_app`` over the shared Redis. Each client
follows one run's event stream (``GET /v1/runs/{id}/events``) on a replica picked at random; when its
stream breaks (its replica was killed, or answered an error) it reconnects to a replica with the
``Last-Event-ID`` of the last event it got, until it has the run's final event. The ids each client got
are then compared with the run's stream in Redis: every event exactly once, in order.
"""

from __future__ import annotations

import asyncio
import random
from dataclasses import dataclass, field

import httpx
import uvicorn

from orchestrator.api import create_app
from orchestrator.records import FINAL_KINDS
from orchestrator.redis import RedisStore, connect
from toolbox.protocol import ToolSpec

KEY = "chaos-key"
FINAL: frozenset[str] = frozenset(FINAL_KINDS)


async def serve_api(url: str, port: int, tenant: str, tools: list[ToolSpec]) -> None:
    """One API replica (its own process), until it is stopped or killed."""
    redis = connect(url)
    app = create_app(RedisStore(redis), keys={KEY: tenant}, tools=tools, rate_per_s=10_000, burst=10_000)
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="critical", lifespan="off", ws="none")
    try:
        await uvicorn.Server(config).serve()
    finally:
        await redis.aclose()


@dataclass
class Follower:
    """One client following one run's events across replicas."""

    run_id: str
    ids: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    resumes: int = 0  # streams opened with a Last-Event-ID (after a break)

    @property
    def done(self) -> bool:
        return bool(self.kinds) and self.kinds[-1] in FINAL

    async def follow(self, client: httpx.AsyncClient, replicas: list[str], give_up: float) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        while not self.done and loop.time() < give_up:
            headers = {"Authorization": f"Bearer {KEY}"}
            if self.ids:
                headers["Last-Event-ID"] = self.ids[-1]
            try:
                got = await self._read(client, random.choice(replicas), headers)
            except (httpx.HTTPError, OSError, ValueError):
                got = False  # the replica died mid-stream, or is down: resume elsewhere from the last id
            failures = 0 if got else failures + 1
            if not self.done:
                await asyncio.sleep(min(0.5, 0.02 * 2**failures) * random.uniform(0.5, 1.0))

    async def _read(self, client: httpx.AsyncClient, base: str, headers: dict[str, str]) -> bool:
        """Read the stream until it ends or breaks; whether it was opened (200)."""
        path = f"{base}/v1/runs/{self.run_id}/events"
        async with client.stream("GET", path, headers=headers) as response:
            if response.status_code != 200:
                return False
            self.resumes += "Last-Event-ID" in headers
            ident = kind = None
            async for line in response.aiter_lines():
                if line.startswith("id: "):
                    ident = line[4:]
                elif line.startswith("event: "):
                    kind = line[7:]
                elif line == "" and ident is not None and kind is not None:
                    self.ids.append(ident)  # a whole frame: counted once its blank line arrived
                    self.kinds.append(kind)
                    ident = kind = None
                    if self.done:
                        break
        return True


def judge(follower: Follower, stream: list[str]) -> bool:
    """Whether the client got exactly the run's stream: every event once, in order, the last one final."""
    return follower.done and follower.ids == stream
