"""``GET /v1/runs``: a tenant's runs, newest first, paged with ``after``, over a real service."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.integration.conftest_api import A, B, api_client, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def idle(redis_url: str) -> Iterator[httpx.Client]:
    """The API with no worker behind it: runs stay queued."""
    with api_client(redis_url, worker=False) as http:
        yield http


def _submit(http: httpx.Client, n: int, headers: dict[str, str] = A) -> str:
    run_id: str = http.post("/v1/runs", json={"input": f"run {n}"}, headers=headers).json()["id"]
    return run_id


def test_runs_are_listed_newest_first_and_paged_with_after(idle: httpx.Client) -> None:
    mine = [_submit(idle, n) for n in range(5)]
    listed = idle.get("/v1/runs", headers=A).json()
    assert listed["object"] == "list"
    assert [run["id"] for run in listed["data"]] == mine[::-1]
    assert listed["has_more"] is False
    assert listed["data"][0] == idle.get(f"/v1/runs/{mine[-1]}", headers=A).json()

    seen: list[str] = []
    after: str | None = None
    while True:
        params = {"limit": 2} | ({"after": after} if after else {})
        page = idle.get("/v1/runs", params=params, headers=A).json()
        seen += [run["id"] for run in page["data"]]
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    assert seen == mine[::-1]


def test_another_tenants_runs_never_show(idle: httpx.Client) -> None:
    mine = _submit(idle, 1)
    theirs = _submit(idle, 2, headers=B)
    assert [run["id"] for run in idle.get("/v1/runs", headers=B).json()["data"]] == [theirs]
    assert [run["id"] for run in idle.get("/v1/runs", headers=A).json()["data"]] == [mine]
    # Another tenant's run is no cursor either: the same answer as for a run that never was.
    for after in (theirs, "run_never"):
        response = idle.get("/v1/runs", params={"after": after}, headers=A)
        assert response.status_code == 400
        assert response.json()["error"]["code"] == "invalid_cursor"
    assert idle.get("/v1/runs").status_code == 401


def test_a_bad_limit_or_cursor_is_refused_in_the_envelope(idle: httpx.Client) -> None:
    for params in ({"limit": 0}, {"limit": 101}, {"limit": "x"}, {"after": "a:b"}):
        response = idle.get("/v1/runs", params=params, headers=A)
        assert response.status_code == 422, params
        assert response.json()["error"]["type"] == "invalid_request_error"
    assert idle.get("/v1/runs", params={"limit": 100}, headers=A).json() == {
        "object": "list",
        "data": [],
        "has_more": False,
    }


def test_listed_runs_show_their_progress(redis_url: str) -> None:
    with api_client(redis_url, worker=True) as http:
        run = http.post("/v1/runs", json={"input": "tool hi", "tools": ["echo"]}, headers=A).json()
        wait_for(http, run["id"], "completed")
        (listed,) = http.get("/v1/runs", headers=A).json()["data"]
        assert (listed["id"], listed["status"], listed["output"]) == (run["id"], "completed", "echo: tool hi")
        assert listed["created_at"] == run["created_at"] > 0
