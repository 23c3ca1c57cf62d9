"""``GET /v1/runs``: a tenant's runs, newest first, paged with ``after``, over the in-memory store."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api_support import A, B
from tests.unit.api_memory import MemoryApi, memory_api


@pytest.fixture
def api() -> Iterator[MemoryApi]:
    with memory_api() as served:
        yield served


def _submit(api: MemoryApi, n: int, headers: dict[str, str] = A) -> str:
    run_id: str = api.http.post("/v1/runs", json={"input": f"run {n}"}, headers=headers).json()["id"]
    return run_id


def test_runs_are_listed_newest_first_and_paged_with_after(api: MemoryApi) -> None:
    mine = [_submit(api, n) for n in range(5)]
    listed = api.http.get("/v1/runs", headers=A).json()
    assert listed["object"] == "list"
    assert [run["id"] for run in listed["data"]] == mine[::-1]
    assert listed["has_more"] is False
    assert listed["data"][0] == api.http.get(f"/v1/runs/{mine[-1]}", headers=A).json()

    seen: list[str] = []
    after: str | None = None
    while True:
        params = {"limit": 2} | ({"after": after} if after else {})
        page = api.http.get("/v1/runs", params=params, headers=A).json()
        seen += [run["id"] for run in page["data"]]
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    assert seen == mine[::-1]


def test_another_tenants_runs_never_show(api: MemoryApi) -> None:
    mine = _submit(api, 1)
    theirs = _submit(api, 2, headers=B)
    assert [run["id"] for run in api.http.get("/v1/runs", headers=B).json()["data"]] == [theirs]
    assert [run["id"] for run in api.http.get("/v1/runs", headers=A).json()["data"]] == [mine]
    # Another tenant's run is no cursor either: the same answer as for a run that never was.
    for after in (theirs, "run_never"):
        response = api.http.get("/v1/runs", params={"after": after}, headers=A)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_cursor"
    assert api.http.get("/v1/runs").status_code == 401


def test_a_bad_limit_or_cursor_is_refused_in_the_envelope(api: MemoryApi) -> None:
    for params in ({"limit": 0}, {"limit": 101}, {"limit": "x"}, {"after": "a:b"}):
        response = api.http.get("/v1/runs", params=params, headers=A)
        assert response.status_code == 422, params
        assert response.json()["error"]["type"] == "invalid_request_error"
    assert api.http.get("/v1/runs", params={"limit": 100}, headers=A).json() == {
        "object": "list",
        "data": [],
        "has_more": False,
    }


def test_listed_runs_show_their_progress(api: MemoryApi) -> None:
    run = api.http.post("/v1/runs", json={"input": "tool hi", "tools": ["echo"]}, headers=A).json()
    script = ['<tool_call>\n{"name": "echo", "arguments": {"text": "hi"}}\n</tool_call>', "echo: tool hi"]
    assert api.run_queued(script, "acme", run["id"]).stop_reason == "answer"
    (listed,) = api.http.get("/v1/runs", headers=A).json()["data"]
    assert (listed["id"], listed["status"], listed["output"]) == (run["id"], "completed", "echo: tool hi")
    assert listed["created_at"] == run["created_at"] > 0 and listed["finished_at"] >= listed["created_at"]
    assert listed["steps"] == 2 and listed["usage"]["total_tokens"] > 0
