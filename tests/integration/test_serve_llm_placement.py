"""Ray Serve LLM deployments of the presets on a local Ray cluster with two fake 8-GPU nodes.

The engine behind LLMServer is the scripted Hermes engine (``deploy.scripted_llm``), so this runs the
production serving path (placement groups, the session router, completions) without a GPU.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
import ray
from ray import serve
from ray.cluster_utils import Cluster
from ray.serve.llm import build_llm_deployment
from ray.serve.llm.openai_api_models import CompletionRequest
from ray.util import placement_group_table

from deploy.presets import PRESETS, llm_config
from deploy.scripted_llm import TOOL_CALL, ScriptedLLMEngine


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    # A short private temp dir (Ray's socket paths must stay short) and no token auth for a test cluster.
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    saved = {key: os.environ.get(key) for key in ("RAY_TMPDIR", "RAY_AUTH_MODE")}
    os.environ.update(RAY_TMPDIR=temp, RAY_AUTH_MODE="disabled")
    local = Cluster(initialize_head=True, head_node_args={"num_cpus": 4, "num_gpus": 0})
    nodes = [local.add_node(num_cpus=8, num_gpus=8) for _ in range(2)]
    ray.init(address=local.address)
    try:
        yield local
    finally:
        serve.shutdown()
        ray.shutdown()
        local.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        shutil.rmtree(temp, ignore_errors=True)
        del nodes


def _deploy(name: str) -> Any:
    app = build_llm_deployment(llm_config(PRESETS[name]), bind_kwargs={"engine_cls": ScriptedLLMEngine})
    serve.run(app, name=name, route_prefix=None)
    return serve.get_app_handle(name)


def _placement(name: str) -> tuple[str, int, int]:
    groups = [
        g for g in placement_group_table().values() if g["state"] == "CREATED" and name in str(g["name"])
    ]
    assert len(groups) == 1, groups
    group = groups[0]
    return group["strategy"], len(group["bundles"]), len(set(group["bundles_to_node_id"].values()))


def _complete(handle: Any, name: str) -> str:
    request = CompletionRequest(model=name, prompt="<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    # LLMServer.completions is a generator (streamed or not): a non-streamed request yields one response.
    (response,) = list(handle.options(stream=True).completions.remote(request))
    return str(response.choices[0].text)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("hermes-2-theta-70b", ("STRICT_PACK", 8, 1)), ("hermes-3-405b-bf16", ("PACK", 16, 2))],
)
def test_preset_replica_placement_and_completion(
    cluster: Cluster, name: str, expected: tuple[str, int, int]
) -> None:
    handle = _deploy(name)
    try:
        assert _placement(name) == expected
        assert _complete(handle, name) == TOOL_CALL
    finally:
        serve.delete(name)  # the next preset needs the GPUs back
