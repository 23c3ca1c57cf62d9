"""The whole service as one Ray Serve application (``deploy.app:build_app``) on a local Ray cluster with two
fake 8-GPU nodes: REST ingress -> orchestrator -> Ray Serve LLM (the scripted Hermes engine as its engine
class, on the presets' real placement) -> tool workers (sandboxed) -> Redis, over real HTTP."""

from __future__ import annotations

import json
import re
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from ray import serve
from ray.util import placement_group_table

from deploy.app import LLM_PREFIX, build_app
from tests.integration.conftest_api import sse
from tests.integration.otlp_receiver import Receiver, Span, rotel, spans
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
    # These tests poll runs at 20 requests a second, the default limit per key: a burst submitted right
    # after a poll loop would meet a 429 (the rate limit has its own tests, on the API).
    "api": {"rate_per_s": 1000, "burst": 1000},
}
_REPLICA = re.compile(r"\(replica ([0-9a-f]{8})\)")


@pytest.fixture(scope="module")
def receiver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    """rotel, where every replica of the service sends its spans (and metrics) over OTLP."""
    with rotel(tmp_path_factory.mktemp("otlp"), "traces") as running:
        yield running


@pytest.fixture(scope="module")
def service(ray_cluster: RayTestCluster, receiver: Receiver) -> Iterator[httpx.Client]:
    args = ARGS | {"otlp_endpoint": receiver.endpoint, "telemetry": {"export_interval_s": 1}}
    serve.run(build_app(args), name="caduceus", route_prefix="/")
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


def _trace(log: Path, trace_id: str, needed: dict[str, int], within_s: float = 60) -> list[Span]:
    """The trace's spans once rotel has received at least ``needed[name]`` spans of each name."""
    deadline = time.monotonic() + within_s
    while True:
        found = [span for span in spans(log.read_text(errors="replace")) if span.trace_id == trace_id]
        names = [span.name for span in found]
        if all(names.count(name) >= n for name, n in needed.items()) or time.monotonic() > deadline:
            return found
        time.sleep(0.5)


def test_one_run_is_one_trace_across_the_api_orchestrator_llm_and_tool_worker_processes(
    service: httpx.Client, receiver: Receiver
) -> None:
    created = _submit(service, "Compute 17 * 23 and store it.", tools=["calculator", "files"])
    run = _finished(service, created["id"])
    trace_id = run["trace_id"]
    assert re.fullmatch(r"[0-9a-f]{32}", trace_id) and created["trace_id"] == trace_id, run
    with service.stream("GET", f"/v1/runs/{run['id']}/events", headers=A) as response:
        steps = [json.loads(f["data"]) for f in sse(response) if f["event"] == "step"]
    assert [step["trace_id"] for step in steps] == [trace_id] * 3  # the trace id rides in its events

    needed = {"POST /v1/runs": 1, "queue_wait": 1, "invoke_agent caduceus": 1, "chat hermes-3-3b": 3}
    needed |= {"llm_request": 3, "execute_tool calculator": 1, "execute_tool files": 1}
    needed |= {"sandbox calculator": 1, "sandbox files": 1}
    found = _trace(receiver.log, trace_id, needed)
    names = sorted(span.name for span in found)
    assert names == sorted(name for name, n in needed.items() for _ in range(n)), names
    by_id = {span.span_id: span for span in found}
    # One root, the API request that submitted the run; every other span's parent is in the trace.
    assert [span.name for span in found if not span.parent_id] == ["POST /v1/runs"]
    assert [span.name for span in found if span.parent_id and span.parent_id not in by_id] == []

    def parent(span: Span) -> str:
        return by_id[span.parent_id].name

    for span in found:
        if span.name == "llm_request":  # the LLM replica's side of each model call
            assert parent(span) == "chat hermes-3-3b" and span.service == "caduceus-llm", span
        elif span.name.startswith("sandbox "):  # the tool worker's side of each tool call
            assert parent(span) == "execute_tool " + span.name.split()[1] and span.service == "caduceus-tools"
        elif span.name.startswith("execute_tool "):
            assert (
                parent(span) == "chat hermes-3-3b"
                and span.attributes["gen_ai.operation.name"] == "execute_tool"
            )
        elif span.name.startswith("chat "):
            assert parent(span) == "invoke_agent caduceus" and span.attributes["caduceus.tenant"] == "acme"
            assert int(span.attributes["gen_ai.usage.output_tokens"]) > 0
        elif span.name in ("invoke_agent caduceus", "queue_wait"):
            assert parent(span) == "POST /v1/runs" and span.service == "caduceus-orchestrator", span
            assert span.attributes["gen_ai.conversation.id"] == run["thread_id"]
        else:
            assert span.service == "caduceus-api" and span.attributes["http.response.status_code"] == "202"


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
