"""The whole service as one Ray Serve application (``deploy.app:build_app``) on a local Ray cluster with two
fake 8-GPU nodes: REST ingress -> orchestrator -> Ray Serve LLM (the scripted Hermes engine as its engine
class, on the presets' real placement) -> tool workers (sandboxed) -> Redis, over real HTTP."""

from __future__ import annotations

import re
import time
import warnings
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from ray import serve
from ray.util import placement_group_table

from deploy.app import LLM_PREFIX, build_app
from tests.integration.ray_cluster import (
    GPU_RESOURCE,
    KEYS_ENV,
    REDIS_ENV,
    SMALL_GPU_RESOURCE,
    RayTestCluster,
)

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]
A = {"Authorization": "Bearer key-a"}
B = {"Authorization": "Bearer key-b"}
ARGS: dict[str, Any] = {
    "models": [
        # Several replicas of one model, to see the router keep each conversation on one of them.
        {
            "preset": "hermes-3-3b",
            "engine": "scripted",
            "replicas": {"min": 2, "max": 2},
            "ray_resource": SMALL_GPU_RESOURCE,
        },
        # Slow, as a 70B is: its runs stay in the queue long enough for the orchestrators to scale.
        {
            "preset": "hermes-2-theta-70b",
            "engine": "scripted",
            "ray_resource": GPU_RESOURCE,
            "scripted_latency": {"first_token_s": 0.5, "per_token_s": 0.5},
        },
    ],
    # Two runs per replica at most, and a policy that reacts within seconds (the defaults: tens of runs,
    # seconds to scale up, minutes to scale down).
    "orchestrator": {
        "replicas": {"min": 1, "max": 2},
        "max_concurrent_runs": 2,
        "runs_per_replica": 2,
        "upscale_delay_s": 0,
        "downscale_delay_s": 3,
        "metrics_interval_s": 0.5,
    },
    "redis": {"url_env": REDIS_ENV},
    "api_keys_env": KEYS_ENV,
}
_REPLICA = re.compile(r"\(replica ([0-9a-f]{8})\)")


@pytest.fixture(scope="module")
def service(ray_cluster: RayTestCluster) -> Iterator[httpx.Client]:
    serve.run(build_app(ARGS), name="caduceus", route_prefix="/")
    try:
        with httpx.Client(base_url=ray_cluster.url, timeout=30) as client:
            yield client
    finally:
        serve.delete("caduceus")


def _finished(client: httpx.Client, run_id: str, headers: dict[str, str] = A) -> dict[str, Any]:
    for _ in range(1200):
        run: dict[str, Any] = client.get(f"/v1/runs/{run_id}", headers=headers).json()
        if run["status"] not in ("queued", "in_progress"):
            return run
        time.sleep(0.05)
    raise AssertionError(f"run {run_id} did not finish: {run}")


def _submit(client: httpx.Client, text: str, **body: Any) -> dict[str, Any]:
    response = client.post("/v1/runs", json={"input": text, **body}, headers=A)
    assert response.status_code == 202, response.text
    created: dict[str, Any] = response.json()
    return created


def test_a_run_goes_rest_orchestrator_llm_tool_workers_redis(service: httpx.Client) -> None:
    assert service.get("/readyz").json() == {"status": "ok"}
    tools = {tool["name"] for tool in service.get("/v1/tools", headers=A).json()["data"]}
    assert {"calculator", "files", "python", "current_time"} <= tools
    created = _submit(service, "Compute 17 * 23 and store it.", tools=["calculator", "files"])
    run = _finished(service, created["id"])
    assert (run["status"], run["stop_reason"], run["steps"]) == ("completed", "answer", 3), run
    assert run["model"] == "hermes-3-3b"
    assert "17 * 23 = 391" in run["output"] and "result.txt" in run["output"]
    messages = service.get(f"/v1/threads/{run['thread_id']}/messages", headers=A).json()["data"]
    assert [m["role"] for m in messages] == ["user", "assistant", "tool", "assistant", "tool", "assistant"]
    # The tool workers really ran the calls: the calculator's result, then the file written.
    assert '"name": "calculator", "content": 391' in messages[2]["content"], messages[2]
    assert '"error"' not in messages[4]["content"], messages[4]
    # Another tenant sees none of it.
    assert service.get(f"/v1/runs/{run['id']}", headers=B).status_code == 404
    assert service.get(f"/v1/threads/{run['thread_id']}/messages", headers=B).status_code == 404


def test_chat_completions_go_from_the_api_straight_to_the_models_deployment(service: httpx.Client) -> None:
    calculator = {
        "type": "function",
        "function": {
            "name": "calculator",
            "parameters": {"type": "object", "properties": {"expression": {"type": "string"}}},
        },
    }
    body = {"messages": [{"role": "user", "content": "17 * 23?"}], "tools": [calculator]}
    runs = len(service.get("/v1/runs", headers=A).json()["data"])
    response = service.post("/v1/chat/completions", json={"model": "hermes-3-3b", **body}, headers=A)
    assert response.status_code == 200, response.text
    (choice,) = response.json()["choices"]
    assert choice["finish_reason"] == "tool_calls"
    assert choice["message"]["tool_calls"][0]["function"] == {
        "name": "calculator",
        "arguments": '{"expression": "17 * 23"}',
    }
    assert choice["message"]["content"].startswith("(replica ")  # the LLM deployment's own words
    assert len(service.get("/v1/runs", headers=A).json()["data"]) == runs  # no run: a model, not an agent
    other = service.post("/v1/chat/completions", json={"model": "hermes-2-theta-70b", **body}, headers=A)
    assert other.status_code == 200 and other.json()["model"] == "hermes-2-theta-70b"


def test_runs_reach_the_model_they_name_on_its_placement(service: httpx.Client) -> None:
    created = _submit(service, "hello", model="hermes-2-theta-70b")
    run = _finished(service, created["id"])
    assert (run["status"], run["model"]) == ("completed", "hermes-2-theta-70b")
    assert run["output"].endswith("Hello from the scripted Hermes engine.")
    groups = [
        g
        for g in placement_group_table().values()
        if g["state"] == "CREATED" and f"{LLM_PREFIX}hermes-2-theta-70b" in str(g["name"])
    ]
    assert [(g["strategy"], len(g["bundles"])) for g in groups] == [("STRICT_PACK", 8)]
    assert len(set(groups[0]["bundles_to_node_id"].values())) == 1
    assert all(b.get(GPU_RESOURCE) == 1 for b in groups[0]["bundles"].values())


def test_every_step_of_a_conversation_lands_on_one_llm_replica(service: httpx.Client) -> None:
    # Twelve conversations of two runs each (three model steps per run) over two replicas.
    threads: dict[str, set[str]] = {}
    firsts = [_submit(service, f"task {n}", tools=["calculator", "files"]) for n in range(12)]
    for first in firsts:
        assert _finished(service, first["id"])["status"] == "completed"
    seconds = [_submit(service, "again", tools=["calculator"], thread_id=f["thread_id"]) for f in firsts]
    for second in seconds:
        assert _finished(service, second["id"])["status"] == "completed"
    for first in firsts:
        messages = service.get(f"/v1/threads/{first['thread_id']}/messages", headers=A).json()["data"]
        said = [m["content"] for m in messages if m["role"] == "assistant"]
        assert len(said) == 5
        threads[first["thread_id"]] = {tag for text in said for tag in _REPLICA.findall(text)}
    assert all(len(tags) == 1 for tags in threads.values()), threads
    assert len(set.union(*threads.values())) == 2, "both replicas should serve some conversations"


def _orchestrators() -> int:
    with warnings.catch_warnings():  # reading the config back warns of metrics_interval_s (deploy.app)
        warnings.filterwarnings("ignore", "The `metrics_interval_s` field", DeprecationWarning)
        deployment = serve.status().applications["caduceus"].deployments["Orchestrator"]
    return int(deployment.replica_states.get("RUNNING", 0))


def _until_orchestrators(count: int, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while _orchestrators() != count:
        assert time.monotonic() < deadline, f"{_orchestrators()} orchestrator replicas, not {count}"
        time.sleep(0.5)


def test_orchestrators_scale_up_on_a_burst_in_the_queue_and_back_down_when_it_is_idle(
    service: httpx.Client,
) -> None:
    """Sixteen slow runs (seconds each) against two runs per replica: the queue's depth asks for more
    replicas than the maximum (two); once every run is done and the queue is empty, the minimum (one)."""
    assert _orchestrators() == 1
    burst = [_submit(service, f"burst {n}", model="hermes-2-theta-70b") for n in range(16)]
    _until_orchestrators(2, within_s=300)
    for created in burst:
        assert _finished(service, created["id"])["status"] == "completed"
    _until_orchestrators(1, within_s=120)
