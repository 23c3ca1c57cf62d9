"""The Helm chart: the 405B bf16 scenario's sizing, and the chart check's own logic.

The rendering test runs the real helm that `make helm-check` fetches into .tools/ (`make test` runs that
first); without it the test fails and says so.
"""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HELM = ROOT / ".tools" / "helm"
CHART = ROOT / "helm" / "caduceus"

# helm/check.py and its chartcheck package are scripts beside the chart, not an installed package.
sys.path.insert(0, str(ROOT / "helm"))
check = importlib.import_module("check")
chartcheck = importlib.import_module("chartcheck")
values_doc = importlib.import_module("chartcheck.values_doc")


def render(values: str) -> list[dict[str, Any]]:
    if not HELM.is_file():
        pytest.fail(f"{HELM} is missing: `make helm-check` fetches it (and `make test` runs that first)")
    out = subprocess.run(
        [str(HELM), "template", "caduceus", str(CHART), "--values", str(CHART / "ci" / values)],
        capture_output=True,
        text=True,
        check=True,
    )
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


def test_405b_bf16_is_two_8_gpu_pods_and_the_serve_config_names_it() -> None:
    (ray,) = [o for o in render("405b-bf16-two-nodes.yaml") if o["kind"] == "RayService"]
    cluster = ray["spec"]["rayClusterConfig"]
    (group,) = [g for g in cluster["workerGroupSpecs"] if g["groupName"] == "hermes-3-405b-bf16"]
    assert (group["replicas"], group["minReplicas"], group["maxReplicas"]) == (2, 2, 2)
    container = group["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "8"
    assert group["rayStartParams"]["num-gpus"] == "8"
    assert cluster["headGroupSpec"]["rayStartParams"]["num-gpus"] == "0"
    (app,) = yaml.safe_load(ray["spec"]["serveConfigV2"])["applications"]
    assert app["import_path"] == "deploy.app:build_app"
    assert [m["preset"] for m in app["args"]["models"]] == ["hermes-3-405b-bf16"]
    assert app["args"]["models"][0]["replicas"] == {"min": 1, "max": 1}
    env = {e["name"]: e for e in container["env"]}
    assert env["HF_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "hf-token", "key": "token"}
    assert "CADUCEUS_API_KEYS" not in env, "credentials belong on the head only"


def test_an_undocumented_value_fails_the_check() -> None:
    text = "a:\n  # -- Documented.\n  b: 1\n  c: 2\n"
    with pytest.raises(chartcheck.CheckError, match=r"a\.c has no `# --` comment"):
        values_doc.documented_values(text)
    assert values_doc.documented_values("# -- The whole map.\na:\n  b: 1\n") == [
        ("a", "The whole map.", {"b": 1})
    ]


def test_list_items_are_documented_by_their_list() -> None:
    text = "# -- The presets,\n# one per group.\nmodels:\n  - preset: x\n    replicas: {min: 1}\n"
    ((path, description, _),) = values_doc.documented_values(text)
    assert (path, description) == ("models", "The presets, one per group.")


def test_strict_closes_objects_unless_they_keep_unknown_fields() -> None:
    schema = {
        "type": "object",
        "properties": {
            "closed": {"type": "object", "properties": {"a": {"type": "string"}}},
            "open": {"type": "object", "properties": {}, "x-kubernetes-preserve-unknown-fields": True},
        },
    }
    strict = check.strict(schema)
    assert strict["additionalProperties"] is False
    assert strict["properties"]["closed"]["additionalProperties"] is False
    assert "additionalProperties" not in strict["properties"]["open"]


def test_the_readme_table_is_current() -> None:
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    assert values_doc.readme_with_table(readme) == readme
