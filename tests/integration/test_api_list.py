"""``GET /v1/runs`` over a real service (paging and tenants: ``tests/unit/test_api_http_list.py``)."""

from __future__ import annotations

import pytest

from tests.api_support import A
from tests.integration.conftest_api import api_client, wait_for

pytestmark = pytest.mark.integration


def test_listed_runs_show_their_progress(redis_url: str) -> None:
    with api_client(redis_url, worker=True) as http:
        run = http.post("/v1/runs", json={"input": "tool hi", "tools": ["echo"]}, headers=A).json()
        wait_for(http, run["id"], "completed")
        (listed,) = http.get("/v1/runs", headers=A).json()["data"]
        assert (listed["id"], listed["status"], listed["output"]) == (run["id"], "completed", "echo: tool hi")
        assert listed["created_at"] == run["created_at"] > 0
