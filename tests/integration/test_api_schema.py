"""Property-based requests from the API's own OpenAPI document (schemathesis): whatever a client sends,
the service never answers with a 5xx. Bounded: a couple of dozen examples per operation (valid and
invalid), loopback only.

Schemathesis's pytest plugin does not load under this pytest, so each operation's hypothesis strategy is
driven directly with ``given``."""

from __future__ import annotations

import itertools

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from tests.api_support import A
from tests.integration.conftest_api import Service

pytestmark = pytest.mark.integration


def test_no_request_makes_the_service_fail(redis_url: str) -> None:
    # A generous rate limit, so the examples reach the handlers instead of stopping at 429.
    options = {"rate_per_s": 10_000, "burst": 10_000}
    with Service(redis_url, worker=True, **options).running() as service:
        schema = schemathesis.openapi.from_url(f"{service.url}/openapi.json")
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) == 16  # runs, threads, tools, chat completions, models, responses, health
        seen: set[tuple[str, int]] = set()
        for operation, mode in itertools.product(operations, list(schemathesis.GenerationMode)):
            if (
                mode is schemathesis.GenerationMode.NEGATIVE
                and "{" not in operation.path
                and operation.method.lower() != "post"
            ):
                continue  # an operation with no inputs to it has no invalid form

            @given(case=operation.as_strategy(mode))
            @settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            def no_5xx(case: schemathesis.Case) -> None:
                response = case.call_and_validate(headers=A, checks=[not_a_server_error])
                seen.add((case.operation.label, response.status_code))

            no_5xx()
        # The examples reached the handlers, not only the validation in front of them.
        assert ("POST /v1/runs", 202) in seen, sorted(seen)
