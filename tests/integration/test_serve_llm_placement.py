"""Ray Serve LLM deployments of the presets on a local Ray cluster with two fake 8-GPU nodes.

The engine behind LLMServer is the scripted Hermes engine (``deploy.scripted_llm``), so this runs the
production serving path (placement groups, the session router, completions) without a GPU. The one-node
layout (the 70B's eight GPUs STRICT_PACKed on one node) is checked in ``test_service_app``, inside the
whole service; here, the layout that spans two nodes.
"""

from __future__ import annotations

from typing import Any

import pytest
from ray import serve
from ray.serve.llm import build_llm_deployment
from ray.serve.llm.openai_api_models import CompletionRequest
from ray.util import placement_group_table

from deploy.presets import PRESETS, llm_config
from deploy.scripted_llm import ScriptedLLMEngine
from tests.integration.ray_cluster import RayTestCluster


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
    # No tools offered: the scripted model answers in text.
    # max_tokens: vLLM's default (16) can cut the reply, whose replica tag is more or fewer pieces.
    prompt = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    request = CompletionRequest(model=name, prompt=prompt, max_tokens=64)
    # LLMServer.completions is a generator (streamed or not): a non-streamed request yields one response.
    (response,) = list(handle.options(stream=True).completions.remote(request))
    return str(response.choices[0].text)


@pytest.mark.parametrize(
    ("name", "expected"),
    [("hermes-3-405b-bf16", ("PACK", 16, 2))],
)
def test_preset_replica_placement_and_completion(
    ray_cluster: RayTestCluster, name: str, expected: tuple[str, int, int]
) -> None:
    handle = _deploy(name)
    try:
        assert _placement(name) == expected
        assert _complete(handle, name).endswith("Hello from the scripted Hermes engine.")
    finally:
        serve.delete(name)  # the next preset needs the GPUs back
