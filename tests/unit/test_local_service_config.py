"""What the local service asks Ray for, and the configurations ``serve`` and ``demo`` build."""

from __future__ import annotations

import argparse

import pytest

from deploy.commands.serve import config_of
from deploy.config import ConfigError, load_config
from deploy.local_service import _gpus, _resources, api_keys
from deploy.service_demo import demo_config
from orchestrator.api.auth import ApiKeysError


def _args(**given: object) -> argparse.Namespace:
    return argparse.Namespace(**{"config": None, "model": None, "scripted": False, **given})


def test_serve_defaults_to_smollm2_on_vllm_on_the_cpu_and_takes_a_model_path_or_the_script() -> None:
    local = config_of(_args())
    assert [(m.engine, m.device, m.served_name, m.model_source) for m in local.models] == [
        ("vllm", "cpu", "smollm2-135m", None)
    ]
    assert local.models[0].constrained_by_default and local.models[0].resource is None
    assert config_of(_args(model="/m/hermes.gguf")).models[0].model_source == "/m/hermes.gguf"
    assert config_of(_args(scripted=True)).models[0].engine == "scripted"


def test_serve_reads_a_config_file_and_reports_a_bad_one(tmp_path: object) -> None:
    from pathlib import Path  # noqa: PLC0415

    good = Path(str(tmp_path)) / "good.yaml"
    good.write_text("models: [{preset: hermes-2-theta-70b, engine: scripted}]\n")
    assert config_of(_args(config=str(good))).model_names == ["hermes-2-theta-70b"]
    bad = Path(str(tmp_path)) / "bad.yaml"
    bad.write_text("models: [{preset: gpt-5}]\n")
    with pytest.raises(ConfigError, match=r"models\.0\.preset"):
        config_of(_args(config=str(bad)))


def test_the_local_cluster_gets_fake_gpus_only_for_scripted_layouts_and_every_pinned_resource() -> None:
    config = load_config(
        {
            "models": [
                {"preset": "hermes-2-theta-70b", "engine": "scripted"},
                {"device": "cpu", "ray_resource": "cpu-models"},
            ]
        }
    )
    assert _gpus(config) == 8
    assert set(_resources(config)) == {
        "caduceus-api",
        "caduceus-orchestrator",
        "caduceus-tools",
        "caduceus-gpu",
        "cpu-models",
    }
    assert _gpus(demo_config(None, scripted=False)) == 0
    assert demo_config(None, scripted=False).tool_workers.tools == "demo"


def test_the_key_serve_tells_is_always_one_the_service_accepts() -> None:
    assert api_keys(None, "team-key=acme,other=globex") == ("team-key", "team-key=acme,other=globex")
    assert api_keys("mine", "team-key=acme") == ("mine", "team-key=acme,mine=local")
    assert api_keys("team-key", "team-key=acme") == ("team-key", "team-key=acme")
    key, keys = api_keys(None, None)
    assert key.startswith("local-") and keys == f"{key}=local"
    for bad in ("", "a,b", "a=b", " padded"):
        with pytest.raises(ApiKeysError):
            api_keys(bad, None)
    with pytest.raises(ApiKeysError):
        api_keys(None, "no-tenant")
