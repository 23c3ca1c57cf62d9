"""The real engine: Ray Serve LLM's own ``LLMServer`` with vLLM's CPU backend serving SmolLM2-135M, as the
one model of the whole service (``deploy.app.build_app``) on the session's Ray cluster.

The replica starts once for the module (vLLM's start-up costs tens of seconds). The engine tests send
vLLM's ``CompletionRequest`` through the deployment handle, streamed or not, as the orchestrator does; the
service tests run the demo task over REST, through the orchestrator and the sandboxed tool workers.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import ray
from ray import serve
from ray.serve.llm.openai_api_models import CompletionRequest
from ray.util import placement_group_table

from deploy import service_demo
from deploy.app import LLM_PREFIX, build_app
from deploy.model_files import model_directory
from tests.integration import real_clients
from tests.integration.conftest_api import sse
from tests.integration.otlp_receiver import Receiver, rotel, spans
from tests.integration.prometheus import (
    dashboard_queries,
    grafana_unit_is,
    metadata_types,
    prometheus,
    series,
    unit_of,
)
from tests.integration.ray_cluster import KEYS_ENV, REDIS_ENV, RayTestCluster
from toolbox.hermes import STOP, parse, render_prompt, validate
from toolbox.hermes.constraint import json_answer, tool_calls
from toolbox.protocol import UserMessage
from toolbox.schema import tool_spec

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]
NAME = "smollm2-135m"
APP = "caduceus-local"


def multiply(a: int, b: int) -> int:
    """Multiply two whole numbers.

    Args:
        a: The first factor.
        b: The second factor.
    """
    return a * b


def add(a: int, b: int) -> int:
    """Add two whole numbers.

    Args:
        a: The first term.
        b: The second term.
    """
    return a + b


SPECS = [tool_spec(multiply), tool_spec(add)]
PROMPT = render_prompt([UserMessage("What is 17 times 23?")], SPECS)
STORY = render_prompt([UserMessage("Tell me a long story about a dragon.")], [])
COUNT = render_prompt([UserMessage("Count from 1 to 1000, separated by commas.")], [])


@dataclass(frozen=True)
class Watching:
    """What watches the service: rotel (spans over OTLP) and Prometheus, which scrapes every replica's
    metrics (the targets they write in ``targets``) and every Ray node's (vLLM's, through Ray)."""

    receiver: Receiver
    targets: Path
    prometheus: httpx.Client


@pytest.fixture(scope="module")
def watching(ray_cluster: RayTestCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Watching]:
    root = tmp_path_factory.mktemp("watching")
    targets = root / "targets"
    targets.mkdir()
    nodes = [f"{n['NodeManagerAddress']}:{n['MetricsExportPort']}" for n in ray.nodes() if n["Alive"]]
    with rotel(root, "traces") as receiver, prometheus(root, file_sd=targets, static=nodes) as client:
        yield Watching(receiver, targets, client)


@pytest.fixture(scope="module")
def service(ray_cluster: RayTestCluster, watching: Watching) -> Iterator[httpx.Client]:
    """The whole service (``build_app``) with SmolLM2 on vLLM (CPU) as its one LLM deployment, on the
    session's Ray cluster: the engine tests below call the deployment's handle, the service tests go over
    REST."""
    config = service_demo.demo_config(None, scripted=False).model_dump(mode="json")
    config |= {"redis": {"url_env": REDIS_ENV}, "api_keys_env": KEYS_ENV}
    # The tests poll runs many times a second, past the default limit per key (20 a second): a request
    # right after a poll loop would meet a 429 (the rate limit has its own tests, on the API).
    config |= {"api": {"rate_per_s": 1000, "burst": 1000}}
    config |= {"otlp_endpoint": watching.receiver.endpoint}
    config |= {"telemetry": {"export_interval_s": 1, "prometheus_targets": str(watching.targets)}}
    serve.run(build_app(config), name=APP, route_prefix="/")
    try:
        with httpx.Client(base_url=ray_cluster.url, timeout=60) as client:
            yield client
    finally:
        serve.delete(APP)


@pytest.fixture(scope="module")
def handle(service: httpx.Client) -> Any:
    return serve.get_deployment_handle(f"{LLM_PREFIX}{NAME}", app_name=APP)


@pytest.fixture(scope="module")
def tokens() -> Any:
    """Counts a prompt's tokens with the model's own tokenizer (the weights stay in the replica)."""
    from transformers import AutoTokenizer  # noqa: PLC0415

    tokenizer = AutoTokenizer.from_pretrained(model_directory(None))
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))


def request(prompt: str, max_tokens: int, **options: Any) -> CompletionRequest:
    options = {"temperature": 0.0, "stop": list(STOP), "skip_special_tokens": False, **options}
    if options.get("stream"):
        options["stream_options"] = {"include_usage": True}  # as the orchestrator asks (completion_body)
    return CompletionRequest(model=NAME, prompt=prompt, max_tokens=max_tokens, **options)


def streamed(handle: Any, req: CompletionRequest) -> tuple[str, str, dict[str, Any]]:
    """The text of a streamed completion, its finish reason and its usage (LLMServer yields batches of
    events; with ``include_usage`` the last event has no choices, only the usage)."""
    lines = [line for batch in handle.options(stream=True).completions.remote(req) for line in batch]
    assert lines[-1] == "data: [DONE]\n\n"
    events = [json.loads(line.removeprefix("data: ")) for line in lines[:-1]]
    choices = [choice for event in events for choice in event["choices"]]
    assert all(choice["finish_reason"] is None for choice in choices[:-1])
    usage = events[-1]["usage"]
    return "".join(choice["text"] for choice in choices), choices[-1]["finish_reason"], usage


def whole(handle: Any, req: CompletionRequest) -> Any:
    (response,) = list(handle.options(stream=True).completions.remote(req))
    return response


def test_the_replica_and_its_engine_worker_hold_cpu_bundles_and_no_gpu(handle: Any) -> None:
    groups = [
        g for g in placement_group_table().values() if g["state"] == "CREATED" and NAME in str(g["name"])
    ]
    # One group of one bundle: the replica's CPU and its vLLM worker's CPU; no GPU although the cluster
    # has sixteen.
    assert [group["bundles"] for group in groups] == [{0: {"CPU": 2.0}}]


def test_a_constrained_greedy_call_streams_with_usage_and_repeats(handle: Any, tokens: Any) -> None:
    constraint = tool_calls(SPECS, require=True, single=True)  # a required turn (loop.constraint_for)
    req = request(PROMPT, 60, stream=True, structured_outputs={"structural_tag": json.dumps(constraint)})
    text, finish, usage = streamed(handle, req)
    calls = parse(text).tool_calls
    assert len(calls) == 1 and calls[0].name in ("multiply", "add"), text
    assert validate(calls[0], SPECS) is None
    assert finish == "stop"  # the grammar ended the turn after one call
    assert usage["prompt_tokens"] == tokens(PROMPT)
    assert 0 < usage["completion_tokens"] <= 60
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert streamed(handle, req)[0] == text  # greedy decoding is deterministic

    # The grammar, not the prompt, decides: an answer that may only be one word the model would not say.
    only = {"structural_tag": json.dumps(json_answer({"enum": ["pomegranate"]}))}
    assert whole(handle, request(STORY, 12, structured_outputs=only)).choices[0].text == '"pomegranate"'


def test_max_tokens_stop_strings_seed_and_the_context_limit(handle: Any, tokens: Any) -> None:
    response = whole(handle, request(STORY, 12))
    assert type(response).__name__ == "CompletionResponse", response
    text = response.choices[0].text
    assert response.choices[0].finish_reason == "length"
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (tokens(STORY), 12)

    stop = text.split()[3]  # a word the greedy output is known to reach
    cut, finish, _ = streamed(handle, request(STORY, 12, stop=[stop], stream=True))
    assert cut == text[: text.index(stop)] and finish == "stop"

    sampled = request(STORY, 8, temperature=1.0, seed=7)
    assert whole(handle, sampled).choices[0].text == whole(handle, sampled).choices[0].text

    refused = whole(handle, request(STORY, 8192))
    assert type(refused).__name__ == "ErrorResponse" and refused.error.code == 400, refused
    assert "maximum context length is 8192" in refused.error.message


def running() -> float:
    """vLLM's own count of requests it is generating, as Ray exports it (``vllm:num_requests_running``)
    from the node that runs the replica (each node's metrics agent serves its own processes)."""
    urls = [
        f"http://{n['NodeManagerAddress']}:{n['MetricsExportPort']}/metrics"
        for n in ray.nodes()
        if n["Alive"]
    ]
    lines = [line for url in urls for line in httpx.get(url, timeout=10).text.splitlines()]
    values = [
        float(line.rsplit(" ", 1)[1])
        for line in lines
        if re.match(r"^\S*vllm.num_requests_running[{ ]", line)
    ]
    assert values, "Ray exports no vllm:num_requests_running gauge"
    return sum(values)


def settles(want: float, deadline_s: float = 90) -> float:
    """The gauge once it reads ``want``, or its last value at the deadline (Ray exports every few seconds)."""
    value = running()
    for _ in range(int(deadline_s)):
        if value == want:
            break
        time.sleep(1)
        value = running()
    return value


def test_a_consumer_that_stops_reading_aborts_the_generation_in_vllm(handle: Any) -> None:
    # Greedy counting to 4000 tokens runs for many minutes on one CPU, unless the cancellation aborts it.
    response = handle.options(stream=True).completions.remote(
        request(COUNT, 4000, stream=True, ignore_eos=True)
    )
    assert next(iter(response))
    assert settles(1) == 1  # vLLM is generating it
    response.cancel()
    assert settles(0) == 0  # and no longer: the request was aborted in vLLM
    assert whole(handle, request(STORY, 4)).choices[0].finish_reason == "length"


HEADERS = {"Authorization": "Bearer key-a"}


def _run(service: httpx.Client) -> tuple[dict[str, Any], list[dict[str, str]]]:
    headers = HEADERS
    created = service.post("/v1/runs", json=service_demo.request(), headers=headers)
    assert created.status_code == 202, created.text
    run_id = created.json()["id"]
    for _ in range(2400):
        run: dict[str, Any] = service.get(f"/v1/runs/{run_id}", headers=headers).json()
        if run["status"] not in ("queued", "in_progress"):
            break
        time.sleep(0.1)
    thread = service.get(f"/v1/threads/{run['thread_id']}/messages", headers=headers).json()["data"]
    return run, thread


def test_the_real_model_completes_the_two_step_task_through_the_service(service: httpx.Client) -> None:
    run, thread = _run(service)
    assert (run["status"], run["stop_reason"], run["steps"]) == ("completed", "answer", 3), run
    calls = [call for m in thread if m["role"] == "assistant" for call in parse(m["content"]).tool_calls]
    assert [call.name for call in calls] == ["calculator", "files"]
    # Valid by construction: each call's arguments match the offered (narrowed) schema, and both tools ran.
    offered = {
        tool["name"]: tool
        for tool in service.get("/v1/tools", headers={"Authorization": "Bearer key-a"}).json()["data"]
    }
    for call in calls:
        assert validate(call, {call.name: _spec(offered[call.name])}) is None
    results = [m["content"] for m in thread if m["role"] == "tool"]
    assert len(results) == 2 and all('"error"' not in result for result in results), results
    # The run's delta events are vLLM's tokens as they streamed: per step they add up to the turn stored.
    with service.stream("GET", f"/v1/runs/{run['id']}/events", headers=HEADERS) as response:
        deltas = [json.loads(frame["data"]) for frame in sse(response) if frame["event"] == "delta"]
    said = ["".join(d["text"] for d in deltas if d["step"] == step) for step in range(3)]
    assert said == [m["content"] for m in thread if m["role"] == "assistant"]
    assert len(deltas) > 3, "streamed in pieces, not one piece per turn"
    # Greedy and constrained: the same task gives the same run, token for token.
    again, replay = _run(service)
    assert [m["content"] for m in replay] == [m["content"] for m in thread]
    assert again["output"] == run["output"]


def _spec(tool: dict[str, Any]) -> Any:
    from toolbox.protocol import ToolSpec  # noqa: PLC0415

    return ToolSpec(tool["name"], tool["description"], tool["parameters"])


#: One call to the calculator, then the answer: a short run that calls a tool that works.
COMPUTE = {
    "input": "Use the calculator to compute 17 * 23.",
    "tools": ["calculator"],
    "tool_choice": ["calculator", "none"],
    "constrained": True,
    "temperature": 0,
    "limits": {"max_steps": 2, "max_tokens": 64},
}
#: A constrained turn cut off after five tokens, inside the call its grammar forces: the block never
#: closes, so the call is malformed (a tool call that failed), and one step is all the run may take.
CUT_SHORT = COMPUTE | {"tool_choice": ["calculator"], "limits": {"max_steps": 1, "max_tokens": 5}}


def _wave(service: httpx.Client) -> list[dict[str, Any]]:
    """The two runs above at once, to their ends."""
    created = [service.post("/v1/runs", json=body, headers=HEADERS).json() for body in (COMPUTE, CUT_SHORT)]
    runs = [_finished_run(service, one["id"]) for one in created]
    assert [run["status"] for run in runs] == ["completed", "incomplete"], runs
    return runs


def _finished_run(service: httpx.Client, run_id: str) -> dict[str, Any]:
    for _ in range(2400):
        run: dict[str, Any] = service.get(f"/v1/runs/{run_id}", headers=HEADERS).json()
        if run["status"] not in ("queued", "in_progress"):
            return run
        time.sleep(0.1)
    raise AssertionError(f"run {run_id} did not finish")


def _until(check: Any, within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while not check() and time.monotonic() < deadline:
        time.sleep(0.5)


def test_every_dashboard_query_has_data_in_prometheus_after_a_short_load(
    service: httpx.Client, watching: Watching
) -> None:
    """Prometheus scrapes the running service through a short load: two waves of two runs (one calls a
    tool, one's call is cut short), the second once Prometheus holds the first's series, so that rates
    see them grow (as they do in a service that runs for a while). Then every query of the Grafana
    dashboard, sent as Grafana sends it, returns data, in the unit its panel shows. vLLM's own request
    spans join each run's trace."""
    client, start = watching.prometheus, time.time()
    first = _wave(service)
    seen = ["ray_vllm_time_to_first_token_seconds_count", "caduceus_tool_duration_seconds_count"]
    _until(lambda: all(series(client, name, start, time.time()) for name in seen), 30)
    _wave(service)
    queries, empty = dashboard_queries(), dashboard_queries()
    deadline = time.monotonic() + 30  # Ray's metrics agent exports vLLM's every few seconds
    while empty and time.monotonic() < deadline:
        time.sleep(1)
        empty = [q for q in empty if not series(client, q.expr, start, time.time())]
    names = set(client.get("/api/v1/label/__name__/values").json()["data"])
    known = " ".join(sorted(n for n in names if "vllm" in n or "caduceus" in n or "gen_ai" in n))
    assert not empty, f"no data: {[q.expr for q in empty]}; series in Prometheus: {known}"
    types = metadata_types(client)
    units = [(q.panel, q.unit, unit_of(q.expr, types)) for q in queries]
    assert [u for u in units if not grafana_unit_is(u[1], u[2])] == []
    components = {t.name.split("-")[0] for t in watching.targets.glob("*.json")}
    assert components == {"api", "orchestrator", "tools"}, components
    # vLLM's llm_request spans are in the run's trace, children of the orchestrator's chat spans.
    trace_id = first[0]["trace_id"]

    def traced() -> list[Any]:
        return [s for s in spans(watching.receiver.log.read_text()) if s.trace_id == trace_id]

    _until(lambda: sum(s.name == "llm_request" for s in traced()) >= 2, 30)
    chats = {s.span_id for s in traced() if s.name == f"chat {NAME}"}
    served = [s for s in traced() if s.name == "llm_request"]
    assert len(served) == 2 and all(s.parent_id in chats for s in served), [s.name for s in traced()]


@pytest.fixture(scope="module")
def sdk(service: httpx.Client) -> Iterator[openai.OpenAI]:
    url = str(service.base_url).rstrip("/")
    with openai.OpenAI(base_url=f"{url}/v1", api_key="key-a", max_retries=0, timeout=120) as client:
        yield client


def test_the_openai_sdk_on_chat_completions_with_the_real_model(sdk: openai.OpenAI) -> None:
    assert [model.id for model in sdk.models.list().data] == [NAME]
    real_clients.chat(sdk, NAME)


def test_the_openai_sdk_on_responses_with_the_real_model(sdk: openai.OpenAI) -> None:
    real_clients.responses(sdk, NAME)


def test_the_readmes_examples_run_as_written_against_the_service(service: httpx.Client) -> None:
    curl, client, chat, agents, langchain, responses = real_clients.readme(str(service.base_url).rstrip("/"))
    assert "event: finished" in curl and '"status":"completed"' in curl.replace(" ", "")
    assert "tool_call" in client.split() and client.splitlines()[-1]  # its events, then the answer
    assert agents.strip().lstrip("-").isdigit()  # the tool's result: the agent stopped on its first call
    name, product = langchain.split()  # the call LangChain parsed, and the tool's result
    assert name == "multiply" and product.lstrip("-").isdigit()
    told = [line.split() for line in responses.splitlines() if re.fullmatch(r"[0-9]+ response\.\S+", line)]
    numbers = [int(number) for number, _ in told]
    assert numbers == list(range(numbers[0], numbers[0] + len(numbers))) and numbers[0] > 1
    assert told[-1][1] in ("response.completed", "response.incomplete")
    assert chat.strip() != "None"
