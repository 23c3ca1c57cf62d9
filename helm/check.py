"""The chart check behind `make helm-check`: lint, render every scenario, validate what it renders.

For the chart at helm/caduceus it runs, in order, and exits non-zero at the first failure:

0. the chart's preset table, the schema's preset names and `ray.version` agree with deploy/presets.py and
   the project's Ray;
1. `helm lint --strict` with the default values and with each scenario in ci/*.yaml;
2. `helm template` of each scenario, then each rendered object against the Kubernetes schemas
   (kubernetes-validate, strict: unknown fields fail), the RayService against the openAPIV3Schema of
   KubeRay's CRD (made strict the same way), and the ServiceMonitor against a small schema of the fields
   the chart uses (prometheus-operator's CRD is not available offline; this is said in the output);
3. the chart's own promises on each rendering: NOTES render, resource requests on every container, no
   Secret objects, the dashboard's panels, the KubeRay operator's own spec rules, a serve config naming
   deploy.app:build_app whose `args` match the documented document, every Ray resource it pins to is
   advertised, credentials on the head only, and the scenario's `# expect-group:` lines (pods and GPUs);
4. every file in helm/bad-values/ must make `helm template` fail with the message its `# expect-error:`
   line names, and `helm lint` too when the schema is what catches it;
5. README.md's values table is the one generated from the `# --` comments of values.yaml.

`python helm/check.py --write-readme` regenerates that table. The RayService's own promises live in
chartcheck/rayservice.py (it also holds the chart's presets against deploy/presets.py), the values
documentation in chartcheck/values_doc.py.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import yaml
from chartcheck import CHART, CheckError, Obj
from chartcheck.rayservice import check_agrees_with_service, check_ray_service, expected_groups
from chartcheck.values_doc import readme_with_table
from jsonschema.protocols import Validator

BAD_VALUES = Path(__file__).resolve().parent / "bad-values"
K8S_VERSIONS = ("1.29.0", "1.37.0")  # the chart's kubeVersion floor and the newest schemas we have


def helm(binary: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary, *args], capture_output=True, text=True, check=False)


CRD_BESIDE = Path("shared/kuberay/ray.io_rayservices.yaml")


def find_crd() -> Path:
    """KubeRay's CRD in ``shared/`` beside this checkout, or else beside the repository it was cloned from
    (a local clone, as CI's clean-clone check makes, lives wherever it was put)."""
    root = Path(__file__).resolve().parent.parent
    candidates = [root.parent / CRD_BESIDE]
    origin = subprocess.run(
        ["git", "-C", str(root), "config", "--get", "remote.origin.url"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    if origin and Path(origin).is_dir():
        candidates.append(Path(origin).resolve().parent / CRD_BESIDE)
    return next((path for path in candidates if path.is_file()), candidates[0])


def load_crd_validator(path: Path) -> Validator:
    if not path.is_file():
        raise CheckError(
            f"KubeRay's RayService CRD was not found at {path}. Put KubeRay v1.7.0's "
            "ray.io_rayservices.yaml there (shared/kuberay/ beside the clone, or beside the repository it "
            "was cloned from) or name it: "
            "make helm-check KUBERAY_CRD=/path/to/ray.io_rayservices.yaml"
        )
    crd = yaml.load(path.read_text(encoding="utf-8"), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
    schema = strict(version["schema"]["openAPIV3Schema"])
    # Checking a 1 MB schema is the slow part of validating against it: check it once, then reuse it.
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def strict(schema: Any) -> Any:
    """Reject unknown fields, as the API server's strict field validation does for structural schemas."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out = {key: strict(value) for key, value in schema.items()}
    open_object = "additionalProperties" in out or out.get("x-kubernetes-preserve-unknown-fields")
    if "properties" in out and not open_object:
        out["additionalProperties"] = False
    return out


# Only the fields the chart renders; the check says plainly that this is not prometheus-operator's CRD.

SERVICE_MONITOR_SCHEMA: Obj = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "monitoring.coreos.com/v1"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "required": ["selector", "endpoints"],
            "properties": {
                "selector": {"type": "object", "required": ["matchLabels"]},
                "endpoints": {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["port"],
                        "properties": {
                            "port": {"type": "string"},
                            "path": {"type": "string"},
                            "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                        },
                    },
                },
            },
        },
    },
}


def validate_object(obj: Obj, crd: Validator) -> str:
    """Validates one rendered object; returns what it was checked against."""
    kind, name = obj["kind"], obj["metadata"]["name"]
    try:
        if kind == "RayService":
            crd.validate(obj)
            return "KubeRay v1.7.0 CRD"
        if kind == "ServiceMonitor":
            jsonschema.validate(obj, SERVICE_MONITOR_SCHEMA)
            return "the chart's ServiceMonitor subset schema (no prometheus-operator CRD offline)"
        for version in K8S_VERSIONS:
            kubernetes_validate.validate(obj, version, strict=True)
        return "Kubernetes " + " and ".join(K8S_VERSIONS)
    except jsonschema.ValidationError as err:
        where = "/".join(str(p) for p in err.absolute_path)
        raise CheckError(f"{kind}/{name}: {where}: {err.message}") from err
    except kubernetes_validate.SchemaNotFoundError as err:
        raise CheckError(f"{kind}/{name}: no schema to validate it against: {err.message}") from err


def pod_specs(obj: Obj) -> Iterator[tuple[str, Obj]]:
    spec = obj.get("spec", {})
    if obj["kind"] in {"Deployment", "StatefulSet"}:
        yield obj["kind"], spec["template"]["spec"]
    if obj["kind"] == "RayService":
        cluster = spec["rayClusterConfig"]
        yield "head", cluster["headGroupSpec"]["template"]["spec"]
        for group in cluster.get("workerGroupSpecs", []):
            yield f"group {group['groupName']}", group["template"]["spec"]
        if cluster.get("enableInTreeAutoscaling"):
            yield "autoscaler", {"containers": [{"name": "autoscaler", **cluster["autoscalerOptions"]}]}


def check_requests(obj: Obj) -> None:
    for where, spec in pod_specs(obj):
        for container in spec.get("containers", []) + spec.get("initContainers", []):
            requests = container.get("resources", {}).get("requests", {})
            if "cpu" not in requests or "memory" not in requests:
                raise CheckError(
                    f"{obj['kind']} {where}: container {container['name']} requests no cpu/memory"
                )


DASHBOARD_PANELS = (
    "runs",
    "steps",
    "tool call latency",
    "tool call errors",
    "token throughput",
    "queue depth",
    "time to first token",
    "step latency",
    "queue wait",
    "tokens by tenant and model",
    "prefix cache hit rate",
    "sandbox pool size",
    "sandbox cold starts",
    "lease takeovers",
)


def check_dashboard(objects: list[Obj]) -> None:
    """The dashboard ConfigMap holds a JSON dashboard with a panel for each figure operators asked for."""
    for obj in objects:
        if obj["kind"] == "ConfigMap" and "caduceus.json" in obj.get("data", {}):
            titles = " | ".join(
                p["title"].lower() for p in json.loads(obj["data"]["caduceus.json"])["panels"]
            )
            for missing in [p for p in DASHBOARD_PANELS if p not in titles]:
                raise CheckError(f"the Grafana dashboard has no panel for {missing}")


def check_scenario(binary: str, scenario: Path, crd: Validator, presets: list[str]) -> str:
    lint = helm(binary, "lint", "--strict", str(CHART), "--values", str(scenario))
    if lint.returncode != 0:
        raise CheckError(f"helm lint with {scenario.name} failed:\n{lint.stdout}{lint.stderr}")
    rendered = helm(binary, "template", "caduceus", str(CHART), "--values", str(scenario))
    if rendered.returncode != 0:
        raise CheckError(f"helm template with {scenario.name} failed:\n{rendered.stderr}")
    notes = helm(binary, "install", "caduceus", str(CHART), "--dry-run=client", "--values", str(scenario))
    if notes.returncode != 0 or "\nNOTES:\n" not in notes.stdout:
        raise CheckError(
            f"helm install --dry-run=client with {scenario.name} printed no NOTES:\n{notes.stderr}"
        )
    objects = [o for o in yaml.safe_load_all(rendered.stdout) if o]
    kinds: dict[str, int] = {}
    for obj in objects:
        against = validate_object(obj, crd)
        if "subset" in against:
            print(f"    note: {obj['kind']}/{obj['metadata']['name']} checked against {against}")
        check_requests(obj)
        if obj["kind"] == "Secret":
            raise CheckError("the chart rendered a Secret: secrets are taken by reference only")
        kinds[obj["kind"]] = kinds.get(obj["kind"], 0) + 1
    check_dashboard(objects)
    (ray,) = [o for o in objects if o["kind"] == "RayService"]
    groups = check_ray_service(ray, presets, expected_groups(scenario))
    summary = " ".join(f"{k}={n}" for k, n in sorted(kinds.items()))
    return f"{len(objects)} objects valid ({summary}); {groups}"


def check_bad_values(binary: str, bad: Path) -> str:
    """`helm template` must fail with the expected message; so must `helm lint` when the schema catches it.

    helm lint renders in lint mode, where a template's `fail` is only logged, so the checks that the
    schema cannot express (`# caught-by: template`) fail `helm template` and `helm install` only.
    """
    text = bad.read_text(encoding="utf-8")
    wanted = re.findall(r"^# expect-error: (.+)$", text, re.MULTILINE)
    caught_by = re.findall(r"^# caught-by: (schema|template)$", text, re.MULTILINE)
    if not wanted or not caught_by:
        raise CheckError(f"{bad.name} needs `# expect-error: <message>` and `# caught-by: schema|template`")
    for command in ("lint", "template") if caught_by[0] == "schema" else ("template",):
        result = helm(binary, command, str(CHART), "--values", str(bad))
        output = result.stdout + result.stderr
        if result.returncode == 0:
            raise CheckError(f"helm {command} ACCEPTED the bad values {bad.name}")
        if wanted[0].strip() not in output:
            raise CheckError(f"helm {command} rejected {bad.name}, not with {wanted[0]!r}:\n{output}")
    return f"{wanted[0].strip()} (by the {caught_by[0]})"


def run_checks(binary: str, crd: Path) -> None:
    crd_validator = load_crd_validator(crd)
    schema = json.loads((CHART / "values.schema.json").read_text(encoding="utf-8"))
    presets = schema["properties"]["models"]["items"]["properties"]["preset"]["enum"]
    check_agrees_with_service(schema)
    print("ok   presets, preset names and Ray version agree with deploy/presets.py and the project's Ray")
    lint = helm(binary, "lint", "--strict", str(CHART))
    if lint.returncode != 0:
        raise CheckError(f"helm lint (default values) failed:\n{lint.stdout}{lint.stderr}")
    print("ok   helm lint --strict (default values)")
    scenarios = sorted((CHART / "ci").glob("*.yaml"))
    if len(scenarios) < 4:
        raise CheckError(f"expected at least 4 scenarios in {CHART / 'ci'}, found {len(scenarios)}")
    for scenario in scenarios:
        print(f"ok   ci/{scenario.name}: {check_scenario(binary, scenario, crd_validator, presets)}")
    bad_files = sorted(BAD_VALUES.glob("*.yaml"))
    if not bad_files:
        raise CheckError(f"no negative cases in {BAD_VALUES}")
    for bad in bad_files:
        print(f"ok   bad-values/{bad.name} rejected: {check_bad_values(binary, bad)}")
    readme = (CHART / "README.md").read_text(encoding="utf-8")
    if readme_with_table(readme) != readme:
        raise CheckError(
            "helm/caduceus/README.md's values table is stale: python helm/check.py --write-readme"
        )
    print("ok   README.md values table matches values.yaml")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--helm", default=".tools/helm", help="the helm binary")
    parser.add_argument("--crd", type=Path, default=None, help="KubeRay's RayService CRD (default: found)")
    parser.add_argument("--write-readme", action="store_true", help="regenerate the README's values table")
    options = parser.parse_args()
    started = time.monotonic()
    try:
        if options.write_readme:
            readme = CHART / "README.md"
            readme.write_text(readme_with_table(readme.read_text(encoding="utf-8")), encoding="utf-8")
            return 0
        run_checks(options.helm, options.crd or find_crd())
    except CheckError as err:
        print(f"FAIL {err}", file=sys.stderr)
        return 1
    print(f"helm-check passed in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
