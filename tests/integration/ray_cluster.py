"""One local Ray cluster for every Ray test of the session: a head (the control resources the chart's head
advertises) and two fake 8-GPU nodes (advertising ``caduceus-gpu`` and ``caduceus-gpu-small``), in a short private temp dir,
with Ray's token auth off. Ray workers inherit the environment of the process that starts the nodes, so
the variables the service reads (the Redis URL, the API keys, the scratch root) are set before that."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import ray
from ray import serve
from ray.cluster_utils import Cluster

from deploy.local_redis import free_port
from tests.integration.mounts import unmount_under

REDIS_ENV = "CADUCEUS_TEST_REDIS_URL"
KEYS_ENV = "CADUCEUS_TEST_API_KEYS"
API_KEYS = "key-a=acme,key-b=globex"
CONTROL = {"caduceus-api": 1000, "caduceus-orchestrator": 1000, "caduceus-tools": 1000}
GPU_RESOURCE = "caduceus-gpu"
#: The second node's GPUs, as the chart gives each model's group its own resource: pinning a small
#: model here keeps the first node's eight GPUs whole for a tensor-parallel group of eight.
SMALL_GPU_RESOURCE = "caduceus-gpu-small"


@dataclass(frozen=True)
class RayTestCluster:
    cluster: Cluster
    url: str  # Serve's HTTP proxy (one, on the head, on a free loopback port)


@contextmanager
def local_cluster(redis_url: str) -> Iterator[RayTestCluster]:
    # Ray's socket paths must stay short: a temp dir directly under /tmp.
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    env = {
        "RAY_TMPDIR": temp,
        "RAY_AUTH_MODE": "disabled",
        REDIS_ENV: redis_url,
        KEYS_ENV: API_KEYS,
        "CADUCEUS_SCRATCH_ROOT": os.path.join(temp, "scratch"),
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    # No dashboard: nothing here reads it, and when another Ray on the machine holds its port, Ray's port
    # test leaks a socket (ResourceWarning).
    head = {"num_cpus": 4, "num_gpus": 0, "resources": CONTROL, "include_dashboard": False}
    cluster = Cluster(initialize_head=True, head_node_args=head)
    for resource in (GPU_RESOURCE, SMALL_GPU_RESOURCE):
        cluster.add_node(num_cpus=8, num_gpus=8, resources={resource: 8})
    ray.init(address=cluster.address)
    port = free_port()
    serve.start(proxy_location="HeadOnly", http_options={"host": "127.0.0.1", "port": port})
    try:
        yield RayTestCluster(cluster, f"http://127.0.0.1:{port}")
    finally:
        serve.shutdown()
        ray.shutdown()
        cluster.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        unmount_under(Path(temp))
        shutil.rmtree(temp, ignore_errors=True)
