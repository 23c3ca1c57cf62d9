"""API keys and per-key rate limits.

Keys map to tenants; ``CADUCEUS_API_KEYS`` holds them as ``key1=tenantA,key2=tenantB``. Rate limits are a
token bucket per key kept in this process's memory: with N API replicas a key may get up to N times the
rate. That is acceptable for a guard against runaway clients; an exact global limit would need Redis.
"""

from __future__ import annotations

import hmac
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from orchestrator.api.errors import ApiError

_TENANT = re.compile(r"[A-Za-z0-9_.-]{1,128}")


class ApiKeysError(ValueError):
    """The API-keys setting is malformed; the message says where."""


def parse_api_keys(text: str) -> dict[str, str]:
    """``key1=tenantA,key2=tenantB`` -> ``{"key1": "tenantA", "key2": "tenantB"}``."""
    keys: dict[str, str] = {}
    for n, item in enumerate(part.strip() for part in text.split(",")):
        if not item:
            continue
        key, sep, tenant = item.partition("=")
        key, tenant = key.strip(), tenant.strip()
        if not sep or not key or not _TENANT.fullmatch(tenant):
            raise ApiKeysError(f"API keys entry {n + 1} must be key=tenant (tenant of [A-Za-z0-9_.-])")
        if key in keys:
            raise ApiKeysError(f"API keys entry {n + 1} repeats a key")
        keys[key] = tenant
    return keys


def authenticate(keys: Mapping[str, str], header: str | None) -> tuple[str, str]:
    """The (key, tenant) that an ``Authorization: Bearer`` header names, or a 401."""
    scheme, _, token = (header or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise ApiError(401, "missing_api_key", "send an API key as 'Authorization: Bearer <key>'")
    token = token.strip()
    # Compare against every key in constant time, so timing does not tell how much of a key was right.
    found = [tenant for key, tenant in keys.items() if hmac.compare_digest(key.encode(), token.encode())]
    if not found:
        raise ApiError(401, "invalid_api_key", "the API key is not valid")
    return token, found[0]


@dataclass
class _Bucket:
    tokens: float
    at: float


@dataclass
class RateLimiter:
    """``rate`` requests a second on average per key, in bursts of up to ``burst``."""

    rate: float
    burst: int
    _buckets: dict[str, _Bucket] = field(default_factory=dict)

    def take(self, key: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        bucket = self._buckets.setdefault(key, _Bucket(float(self.burst), now))
        bucket.tokens = min(float(self.burst), bucket.tokens + (now - bucket.at) * self.rate)
        bucket.at = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return
        wait = math.ceil((1.0 - bucket.tokens) / self.rate)
        raise ApiError(
            429, "rate_limited", "too many requests for this key", headers={"Retry-After": str(wait)}
        )
