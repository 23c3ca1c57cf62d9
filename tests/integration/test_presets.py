"""Model presets: placement as computed by Ray Serve LLM itself (needs vLLM importable, no GPU)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from deploy import cli
from deploy.presets import PRESETS, SESSION_ROUTER, llm_config, placement, preset

EXPECTED = {
    "hermes-3-405b": {
        "bundles": 8,
        "strategy": "STRICT_PACK",
        "gpus": 8,
        "nodes": 1,
        "tensor_parallel_size": 8,
        "pipeline_parallel_size": 1,
        "max_model_len": 131_072,
    },
    "hermes-3-405b-bf16": {
        "bundles": 16,
        "strategy": "PACK",
        "gpus": 16,
        "nodes": 2,
        "tensor_parallel_size": 8,
        "pipeline_parallel_size": 2,
        "max_model_len": 131_072,
    },
    "hermes-2-theta-70b": {
        "bundles": 8,
        "strategy": "STRICT_PACK",
        "gpus": 8,
        "nodes": 1,
        "tensor_parallel_size": 8,
        "pipeline_parallel_size": 1,
        "max_model_len": 8_192,
    },
    "hermes-2-theta-70b-tp4": {
        "bundles": 4,
        "strategy": "STRICT_PACK",
        "gpus": 4,
        "nodes": 1,
        "tensor_parallel_size": 4,
        "pipeline_parallel_size": 1,
        "max_model_len": 8_192,
    },
    "hermes-2-pro-8b": {
        "bundles": 1,
        "strategy": "STRICT_PACK",
        "gpus": 1,
        "nodes": 1,
        "tensor_parallel_size": 1,
        "pipeline_parallel_size": 1,
        "max_model_len": 8_192,
    },
    "hermes-3-3b": {
        "bundles": 1,
        "strategy": "STRICT_PACK",
        "gpus": 1,
        "nodes": 1,
        "tensor_parallel_size": 1,
        "pipeline_parallel_size": 1,
        "max_model_len": 131_072,
    },
}


@pytest.mark.parametrize("name", list(EXPECTED))
def test_placement_computed_by_ray_serve_llm(name: str) -> None:
    assert placement(PRESETS[name]) == EXPECTED[name]


@pytest.mark.parametrize("name", list(EXPECTED))
def test_serving_knobs_are_explicit(name: str) -> None:
    config: Any = llm_config(PRESETS[name])
    assert config.engine_kwargs["enable_prefix_caching"] is True
    assert config.engine_kwargs["tool_call_parser"] == "hermes"
    deployment = config.deployment_config
    autoscaling = deployment["autoscaling_config"]
    assert autoscaling["max_replicas"] >= autoscaling["min_replicas"] >= 1
    assert autoscaling["target_ongoing_requests"] < deployment["max_ongoing_requests"]
    assert deployment["request_router_config"]["request_router_class"] == SESSION_ROUTER
    assert deployment["health_check_timeout_s"] >= deployment["health_check_period_s"]


def test_bigger_models_get_more_patient_health_checks() -> None:
    assert (
        preset("hermes-3-405b-bf16").health_check_timeout_s
        > preset("hermes-2-theta-70b").health_check_timeout_s
    )
    assert preset("hermes-2-theta-70b").health_check_timeout_s > preset("hermes-3-3b").health_check_timeout_s


def test_fp8_checkpoint_for_the_one_node_405b() -> None:
    config: Any = llm_config(PRESETS["hermes-3-405b"])
    assert config.engine_kwargs["quantization"] == "fp8"
    assert config.model_loading_config.model_source.endswith("-FP8")


def test_unknown_preset_lists_the_known_ones() -> None:
    with pytest.raises(KeyError, match="hermes-3-3b"):
        preset("gpt-5")


def test_presets_command_prints_one_json_object(capsys: pytest.CaptureFixture[str]) -> None:
    # In this process (Ray Serve LLM is imported already; a new process spends ~40 s importing it again):
    # the command's own code, from its argument parsing on. The console script itself is checked in
    # test_cli_demo.
    assert cli.main(["presets"]) == 0
    assert json.loads(capsys.readouterr().out) == EXPECTED
    assert cli.main(["presets", "nope"]) == 2
    assert "unknown preset" in capsys.readouterr().out
