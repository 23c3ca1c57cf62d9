"""The service configuration document: defaults, the chart's full form, and errors that name the field."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from deploy.config import ConfigError, PresetName, ServiceConfig, load_config, load_config_file
from deploy.presets import PRESETS

FULL = """
api: {ray_resource: caduceus-api}
models:
  - preset: hermes-3-405b-bf16
    replicas: {min: 1, max: 1}
    max_ongoing_requests: 32
    ray_resource: caduceus-gpu-hermes-3-405b-bf16
orchestrator: {replicas: {min: 2, max: 8}, max_concurrent_runs: 128, ray_resource: caduceus-orchestrator}
tool_workers: {replicas: {min: 2, max: 16}, max_concurrent_calls: 32, ray_resource: caduceus-tools}
redis: {url_env: REDIS_URL, password_env: REDIS_PASSWORD}
api_keys_env: CADUCEUS_API_KEYS
otlp_endpoint: http://collector:4317
model_cache_dir: /models
"""


def test_preset_names_match_the_presets() -> None:
    assert set(typing.get_args(PresetName)) == set(PRESETS)


def test_empty_document_is_a_local_default() -> None:
    config = load_config("")
    assert [model.preset for model in config.models] == ["hermes-3-3b"]
    assert config.redis.url_env == "REDIS_URL"
    assert load_config({}) == config == load_config(None)


def test_the_charts_full_document() -> None:
    config = load_config(FULL)
    assert config.models[0].preset == "hermes-3-405b-bf16"
    assert config.orchestrator.replicas.max == 8
    assert config.otlp_endpoint == "http://collector:4317"


def test_json_is_accepted() -> None:
    assert load_config('{"models": [{"preset": "hermes-2-pro-8b"}]}').models[0].preset == "hermes-2-pro-8b"


@pytest.mark.parametrize(
    ("document", "fragment"),
    [
        ("models: [{preset: gpt-5}]", "models.0.preset: Input should be 'hermes-3-405b'"),
        ("models: [{preset: gpt-5}]", '(got "gpt-5")'),
        ("models: []", "models: List should have at least 1 item"),
        (
            "orchestrator: {replicas: {min: 3, max: 2}}",
            "orchestrator.replicas: Value error, min (3) is larger",
        ),
        (
            "tool_workers: {max_concurrent_calls: 0}",
            "tool_workers.max_concurrent_calls: Input should be greater",
        ),
        ("redis: {url: redis://x}", "redis.url: Extra inputs are not permitted"),
        ("colour: blue", "colour: Extra inputs are not permitted"),
        ("models: [{preset: hermes-3-3b}, {preset: hermes-3-3b}]", "repeated: hermes-3-3b"),
        ("models: [{replicas: {min: 1}}]", "models.0: Value error, preset is required on GPUs"),
        ("models: [{engine: gpu}]", "models.0.engine: Input should be 'vllm' or 'scripted'"),
        ("models: [{engine: local}]", "models.0.engine: Input should be 'vllm' or 'scripted'"),
        ("models: [{device: cpu, engine: scripted}]", "the scripted engine models a GPU preset"),
        ("models: [{device: cpu, tensor_parallel_size: 0}]", "models.0.tensor_parallel_size"),
        ("models: [{device: cpu}, {device: cpu}]", "repeated: smollm2-135m"),
        ("- a list", "must be a mapping"),
        ("models: [unclosed", "not valid YAML or JSON"),
    ],
)
def test_errors_name_the_bad_field(document: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_config(document, source="values")
    assert fragment in str(error.value)
    assert str(error.value).startswith("values:")


def test_config_file(tmp_path: Path) -> None:
    path = tmp_path / "caduceus.yaml"
    path.write_text(FULL, encoding="utf-8")
    assert isinstance(load_config_file(path), ServiceConfig)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config_file(tmp_path / "missing.yaml")


def test_engines_names_and_constrained_defaults() -> None:
    config = load_config(
        """
models:
  - {device: cpu}
  - {device: cpu, name: hermes-local, model_source: /models/hermes-3-3b, constrained: false}
  - {preset: hermes-2-theta-70b, engine: scripted, scripted_latency: {first_token_s: 0.1, per_token_s: 0.013}}
  - {preset: hermes-3-3b}
"""
    )
    assert config.model_names == ["smollm2-135m", "hermes-local", "hermes-2-theta-70b", "hermes-3-3b"]
    assert [m.constrained_by_default for m in config.models] == [True, False, False, False]
    assert config.models[2].scripted_latency.per_token_s == 0.013
