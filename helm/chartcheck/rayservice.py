"""What a rendered RayService must promise beyond its CRD: the serve-config arguments, placement, the
GPU worker groups a scenario expects, the KubeRay operator's own rules, and agreement with the service's
presets (deploy/presets.py) and pinned Ray version.
"""

from __future__ import annotations

import importlib.metadata
import json
import re
from pathlib import Path

import jsonschema
import yaml

from chartcheck import CHART, CheckError, Obj
from deploy.config import ConfigError, load_config
from deploy.presets import PRESETS


def args_schema(presets: list[str]) -> Obj:
    """The serve config's `args` document (README: "The serve-config arguments")."""
    replicas = closed({"min": {"type": "integer", "minimum": 0}, "max": {"type": "integer", "minimum": 1}})
    text = {"type": "string", "minLength": 1}
    text_or_null = {"type": ["string", "null"], "minLength": 1}
    count = {"type": "integer", "minimum": 1}
    seconds = {"type": "number", "minimum": 0}
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
                {
                    "replicas": replicas,
                    "max_concurrent_runs": count,
                    "runs_per_replica": count,
                    "upscale_delay_s": seconds,
                    "downscale_delay_s": seconds,
                    "ray_resource": text,
                }
            ),
            "tool_workers": closed(
                {
                    "replicas": replicas,
                    "max_concurrent_calls": count,
                    "spare_hosts": {"type": "integer", "minimum": 0},
                    "ray_resource": text,
                }
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


def serve_args(ray: Obj, presets: list[str]) -> Obj:
    serve = yaml.safe_load(ray["spec"]["serveConfigV2"])
    (app,) = serve["applications"]
    if serve.get("proxy_location") != "HeadOnly":
        raise CheckError("serveConfigV2 must keep the HTTP proxy on the head (proxy_location: HeadOnly)")
    if app["import_path"] != "deploy.app:build_app" or app["route_prefix"] != "/":
        raise CheckError(f"serveConfigV2 names {app['import_path']} at {app['route_prefix']}")
    try:
        # Every key rendered explicitly (the service has defaults for local runs; the chart relies on none)
        jsonschema.validate(app["args"], args_schema(presets))
        # and a document the service itself accepts: its pydantic model, deploy/config.py.
        load_config(app["args"], source="serveConfigV2 args")
    except jsonschema.ValidationError as err:
        raise CheckError(f"serveConfigV2 args: {err.message}") from err
    except ConfigError as err:
        raise CheckError(str(err)) from err
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
