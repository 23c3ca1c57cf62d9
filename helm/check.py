"""The chart check behind `make helm-check`: lint, render every scenario, validate what it renders.

For the chart at helm/caduceus it runs, in order, and exits non-zero at the first failure:

1. `helm lint` with the default values and with each scenario in ci/*.yaml;
2. `helm template` of each scenario, then each rendered object against the Kubernetes schemas
   (kubernetes-validate, strict: unknown fields fail), the RayService against the openAPIV3Schema of
   KubeRay's CRD (made strict the same way), and the ServiceMonitor against a small schema of the fields
   the chart uses (prometheus-operator's CRD is not available offline; this is said in the output);
3. the chart's own promises on each rendering: resource requests on every container, no Secret objects,
   a serve config naming deploy.app:build_app whose `args` match the documented document, a GPU worker
   group per preset, and the `# expect-group:` lines of the scenario (pods and GPUs per group);
4. every file in helm/bad-values/ must make `helm lint` and `helm template` fail with the message its
   `# expect-error:` line names (the schema and the template checks do reject bad values);
5. README.md's values table is the one generated from the `# --` comments of values.yaml.

`python helm/check.py --write-readme` regenerates that table.
"""

from __future__ import annotations

import argparse
import importlib.metadata
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
from jsonschema.protocols import Validator

from deploy.presets import PRESETS

HERE = Path(__file__).resolve().parent
CHART = HERE / "caduceus"
BAD_VALUES = HERE / "bad-values"
K8S_VERSIONS = ("1.29.0", "1.37.0")  # the chart's kubeVersion floor and the newest schemas we have
README_START, README_END = "<!-- values:start -->", "<!-- values:end -->"

Obj = dict[str, Any]


class CheckError(Exception):
    """A check failed; the message says which and why."""


def helm(binary: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([binary, *args], capture_output=True, text=True, check=False)


def load_crd_validator(path: Path) -> Validator:
    if not path.is_file():
        raise CheckError(
            f"KubeRay's RayService CRD was not found at {path}. Put KubeRay v1.7.0's "
            "ray.io_rayservices.yaml there (../shared/kuberay/ beside the clone) or name it: "
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


def args_schema(presets: list[str]) -> Obj:
    """The serve config's `args` document (README: "The serve-config arguments")."""
    replicas = closed({"min": {"type": "integer", "minimum": 0}, "max": {"type": "integer", "minimum": 1}})
    text = {"type": "string", "minLength": 1}
    text_or_null = {"type": ["string", "null"], "minLength": 1}
    count = {"type": "integer", "minimum": 1}
    model = closed(
        {
            "preset": {"enum": presets},
            "replicas": replicas,
            "max_ongoing_requests": count,
            "ray_resource": text,
        }
    )
    return closed(
        {
            "api": closed({"ray_resource": text}),
            "models": {"type": "array", "minItems": 1, "items": model},
            "orchestrator": closed(
                {"replicas": replicas, "max_concurrent_runs": count, "ray_resource": text}
            ),
            "tool_workers": closed(
                {"replicas": replicas, "max_concurrent_calls": count, "ray_resource": text}
            ),
            "redis": closed({"url_env": text, "password_env": text_or_null}),
            "api_keys_env": text,
            "otlp_endpoint": text_or_null,
            "model_cache_dir": text_or_null,
        }
    )


def closed(properties: Obj) -> Obj:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": list(properties),
        "properties": properties,
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


def serve_args(ray: Obj, presets: list[str]) -> Obj:
    serve = yaml.safe_load(ray["spec"]["serveConfigV2"])
    (app,) = serve["applications"]
    if serve.get("proxy_location") != "HeadOnly":
        raise CheckError("serveConfigV2 must keep the HTTP proxy on the head (proxy_location: HeadOnly)")
    if app["import_path"] != "deploy.app:build_app" or app["route_prefix"] != "/":
        raise CheckError(f"serveConfigV2 names {app['import_path']} at {app['route_prefix']}")
    try:
        jsonschema.validate(app["args"], args_schema(presets))
    except jsonschema.ValidationError as err:
        raise CheckError(f"serveConfigV2 args: {err.message}") from err
    args: Obj = app["args"]
    return args


def ray_resources(group: Obj) -> dict[str, int]:
    """The custom Ray resources a group advertises (rayStartParams `resources`, a quoted JSON string)."""
    raw = group["rayStartParams"].get("resources")
    return json.loads(json.loads(raw)) if raw else {}


def check_placement(cluster: Obj, args: Obj) -> None:
    """Each Ray resource the args pin a deployment to is advertised by a group; secrets stay on the head."""
    head = cluster["headGroupSpec"]
    if head["rayStartParams"].get("num-gpus") != "0":
        raise CheckError("the Ray head must start with num-gpus 0")
    groups = [head, *cluster.get("workerGroupSpecs", [])]
    advertised = {name for g in groups for name in ray_resources(g)}
    pinned = [args["api"], args["orchestrator"], args["tool_workers"], *args["models"]]
    for missing in {p["ray_resource"] for p in pinned} - advertised:
        raise CheckError(f"serve args pin deployments to Ray resource {missing}, which no group advertises")
    env = {e["name"] for e in head["template"]["spec"]["containers"][0]["env"]}
    for var in (args["redis"]["url_env"], args["redis"]["password_env"], args["api_keys_env"]):
        if var is not None and var not in env:
            raise CheckError(f"serve args name the variable {var}, which the head container does not set")
    for group in cluster.get("workerGroupSpecs", []):
        for item in group["template"]["spec"]["containers"][0].get("env", []):
            if "valueFrom" in item and item["name"] != "HF_TOKEN":
                raise CheckError(
                    f"group {group['groupName']} gets the secret {item['name']}; only the head may"
                )


def check_gpu_groups(cluster: Obj, args: Obj, presets: list[str], expected: dict[str, dict[str, int]]) -> str:
    groups = {g["groupName"]: g for g in cluster.get("workerGroupSpecs", []) if g["groupName"] in presets}
    served = sorted(m["preset"] for m in args["models"])
    if served != sorted(groups) or sorted(expected) != served:
        raise CheckError(f"presets served {served}, GPU groups {sorted(groups)}, expected {sorted(expected)}")
    for name, want in expected.items():
        group = groups[name]
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        got = {
            "replicas": group["replicas"],
            "minReplicas": group["minReplicas"],
            "maxReplicas": group["maxReplicas"],
            "gpus": int(limits["nvidia.com/gpu"]),
        }
        if {k: got[k] for k in want} != want:
            raise CheckError(f"group {name}: rendered {got}, the scenario expects {want}")
    return ", ".join(f"{n}: {groups[n]['replicas']} pod(s) x {expected[n]['gpus']} GPUs" for n in served)


DNS_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


def check_operator_rules(ray: Obj) -> None:
    """Rules the KubeRay operator enforces when it reconciles, which its CRD schema does not express."""
    name, cluster = ray["metadata"]["name"], ray["spec"]["rayClusterConfig"]
    if len(name) > 47 or not DNS_1035.match(name):
        raise CheckError(f"RayService name {name!r}: KubeRay needs a DNS-1035 label of at most 47 characters")
    options = cluster.get("autoscalerOptions", {})
    v2 = cluster.get("enableInTreeAutoscaling", False) and options.get("version") == "v2"
    for group in [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]:
        where = f"group {group.get('groupName', 'head')}"
        if "labels" in group.get("rayStartParams", {}):
            raise CheckError(f"{where}: rayStartParams.labels is refused by KubeRay; use the group's labels")
        if group.get("resources") and "resources" in group.get("rayStartParams", {}):
            raise CheckError(f"{where}: resources in both rayStartParams and the group's resources")
        if "idleTimeoutSeconds" in group and not v2:
            raise CheckError(f"{where}: idleTimeoutSeconds needs the in-tree autoscaler at version v2")
        if v2 and group["template"]["spec"].get("restartPolicy", "Never") != "Never":
            raise CheckError(f"{where}: autoscaler v2 needs restartPolicy Never or unset")
        if "groupName" in group and not group["minReplicas"] <= group["replicas"] <= group["maxReplicas"]:
            raise CheckError(f"{where}: replicas outside [minReplicas, maxReplicas]")


def check_ray_service(ray: Obj, presets: list[str], expected: dict[str, dict[str, int]]) -> str:
    args = serve_args(ray, presets)
    cluster = ray["spec"]["rayClusterConfig"]
    check_operator_rules(ray)
    check_placement(cluster, args)
    return check_gpu_groups(cluster, args, presets, expected)


EXPECT_GROUP = re.compile(r"^# expect-group: (\S+)((?: \w+=\d+)+)\s*$", re.MULTILINE)


def expected_groups(scenario: Path) -> dict[str, dict[str, int]]:
    found = {}
    for name, pairs in EXPECT_GROUP.findall(scenario.read_text(encoding="utf-8")):
        found[name] = {k: int(v) for k, v in (p.split("=") for p in pairs.split())}
    if not found:
        raise CheckError(f"{scenario.name} has no `# expect-group: <preset> replicas=N gpus=N` line")
    return found


DASHBOARD_PANELS = (
    "runs",
    "steps",
    "tool call latency",
    "tool call errors",
    "token throughput",
    "queue depth",
    "time to first token",
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


VALUE_KEY = re.compile(r"^(\s*)([A-Za-z_][\w.-]*):")


def documented_values(text: str) -> list[tuple[str, str, Any]]:
    """(key path, description, default) of each key with a `# --` comment; checks every leaf has one."""
    values = yaml.safe_load(text)
    stack: list[tuple[int, str]] = []
    pending: list[str] | None = None
    rows: list[tuple[str, str, Any]] = []
    leaves: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("# --"):
            pending = [stripped[4:].strip()]
            continue
        if pending is not None and stripped.startswith("#"):
            pending.append(stripped[1:].strip())
            continue
        match = VALUE_KEY.match(line)
        if match:
            indent = len(match.group(1))
            stack = [(i, k) for i, k in stack if i < indent] + [(indent, match.group(2))]
            path = ".".join(k for _, k in stack)
            found, value = lookup(values, path)
            if found and pending is not None:
                rows.append((path, " ".join(pending), value))
            if found and (not isinstance(value, dict) or not value):
                leaves.append(path)
        pending = None
    documented = {row[0] for row in rows}
    for leaf in leaves:
        parts = leaf.split(".")
        if not any(".".join(parts[:n]) in documented for n in range(1, len(parts) + 1)):
            raise CheckError(f"values.yaml: {leaf} has no `# --` comment (nor has a parent)")
    return rows


def lookup(values: Any, path: str) -> tuple[bool, Any]:
    for key in path.split("."):
        if not isinstance(values, dict) or key not in values:
            return False, None
        values = values[key]
    return True, values


def values_table() -> str:
    rows = documented_values((CHART / "values.yaml").read_text(encoding="utf-8"))
    lines = ["| Key | Default | Description |", "|-----|---------|-------------|"]
    for path, description, value in rows:
        default = json.dumps(value, separators=(", ", ": ")).replace("|", "\\|")
        text = description.replace("|", "\\|")
        lines.append(f"| `{path}` | `{default}` | {text} |")
    return "\n".join(lines)


def readme_with_table(readme: str) -> str:
    before, _, rest = readme.partition(README_START)
    _, _, after = rest.partition(README_END)
    if not rest:
        raise CheckError(f"helm/caduceus/README.md lacks the markers {README_START} ... {README_END}")
    return f"{before}{README_START}\n{values_table()}\n{README_END}{after}"


def chart_presets() -> Obj:
    """The preset table the chart sizes GPU groups from (the `caduceus.presets` define in _helpers.tpl)."""
    helpers = (CHART / "templates" / "_helpers.tpl").read_text(encoding="utf-8")
    found = re.search(r'define "caduceus\.presets" -}}\n(.*?)\n{{- end }}', helpers, re.DOTALL)
    if not found:
        raise CheckError("_helpers.tpl lost its caduceus.presets define")
    table: Obj = yaml.safe_load(found.group(1))
    return table


def check_agrees_with_service(schema: Obj) -> None:
    """The chart's presets, preset names and Ray version are the service's (deploy/presets.py, pyproject)."""
    service = {
        p.name: {
            "hf": p.model_source,
            "tp": p.tensor_parallel_size,
            "pp": p.pipeline_parallel_size,
            "placement": p.strategy,
            "maxModelLen": p.max_model_len,
        }
        for p in PRESETS.values()
    }
    chart = chart_presets()
    for name in sorted(set(chart) | set(service)):
        if chart.get(name) != service.get(name):
            raise CheckError(
                f"preset {name}: the chart says {chart.get(name)}, deploy/presets.py {service.get(name)}"
            )
    enum = schema["properties"]["models"]["items"]["properties"]["preset"]["enum"]
    if sorted(enum) != sorted(service):
        raise CheckError(
            f"values.schema.json's preset enum {enum} is not deploy/presets.py's {sorted(service)}"
        )
    values = yaml.safe_load((CHART / "values.yaml").read_text(encoding="utf-8"))
    ray = importlib.metadata.version("ray")
    if values["ray"]["version"] != ray:
        raise CheckError(f"values.yaml ray.version {values['ray']['version']} is not the project's Ray {ray}")


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
    parser.add_argument("--crd", type=Path, default=Path("../shared/kuberay/ray.io_rayservices.yaml"))
    parser.add_argument("--write-readme", action="store_true", help="regenerate the README's values table")
    options = parser.parse_args()
    started = time.monotonic()
    try:
        if options.write_readme:
            readme = CHART / "README.md"
            readme.write_text(readme_with_table(readme.read_text(encoding="utf-8")), encoding="utf-8")
            return 0
        run_checks(options.helm, options.crd)
    except CheckError as err:
        print(f"FAIL {err}", file=sys.stderr)
        return 1
    print(f"helm-check passed in {time.monotonic() - started:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
