"""API keys parsing and the per-key token bucket (pure functions: no service needed)."""

from __future__ import annotations

import pytest

from orchestrator.api import ApiKeysError, parse_api_keys
from orchestrator.api.auth import RateLimiter, authenticate
from orchestrator.api.errors import ApiError


def test_api_keys_parse_from_the_env_format() -> None:
    assert parse_api_keys(" k1=acme, k2=globex ,") == {"k1": "acme", "k2": "globex"}
    assert parse_api_keys("") == {}
    for bad in ("k1", "=acme", "k1=", "k1=a b", "k1=acme,k1=globex"):
        with pytest.raises(ApiKeysError):
            parse_api_keys(bad)


def test_authenticate_maps_a_bearer_key_to_its_tenant() -> None:
    keys = {"k1": "acme"}
    assert authenticate(keys, "Bearer k1") == ("k1", "acme")
    for header in (None, "", "Bearer", "Basic k1", "Bearer k2"):
        with pytest.raises(ApiError) as caught:
            authenticate(keys, header)
        assert caught.value.status == 401


def test_the_token_bucket_refills_at_its_rate() -> None:
    limiter = RateLimiter(rate=2.0, burst=2)
    limiter.take("k", now=0.0)
    limiter.take("k", now=0.0)
    with pytest.raises(ApiError) as caught:
        limiter.take("k", now=0.1)
    assert caught.value.status == 429
    assert caught.value.headers["Retry-After"] == "1"
    limiter.take("k", now=0.6)  # half a second at 2/s is one more request
    limiter.take("other", now=0.6)
