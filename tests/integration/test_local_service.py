"""``caduceus serve`` as an operator runs it, and ``caduceus demo --url`` as a user smoke-tests it: the key
serve prints is accepted, the demo task runs through the service (REST, the orchestrator, Ray Serve LLM with
the scripted engine, the sandboxed tool workers, the embedded Redis) and streams live, and SIGTERM stops
serve cleanly, with every process it started (redis-server, Ray's daemons and agents, Serve's replicas).

One service for both: bringing the service up is most of the cost (Ray, then replicas that import Ray
Serve LLM), and ``caduceus demo`` without ``--url`` is the same ``local_service`` around the same task."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

from deploy.local_redis import free_port

pytestmark = [pytest.mark.integration, pytest.mark.timeout(500)]


def _gone(process: psutil.Process) -> bool:
    try:
        return process.status() == psutil.STATUS_ZOMBIE  # exited; only its parent has not reaped it
    except psutil.NoSuchProcess:
        return True


def _up(serve: subprocess.Popen[str]) -> dict[str, str]:
    """Reads serve's output up to the line that tells the URL and key; returns them."""
    assert serve.stdout is not None and serve.stderr is not None
    lines = []
    for line in serve.stdout:
        lines.append(line)
        if "export CADUCEUS_URL=" in line:
            return dict(part.split("=", 1) for part in line.split()[1:])
    raise AssertionError(f"serve never came up: {lines} {serve.stderr.read()[-3000:]}")


def _answers(url: str, key: str) -> int:
    headers = {"Authorization": f"Bearer {key}"}
    for _ in range(100):  # Serve's proxy can take a moment after the application is up
        response = httpx.get(f"{url}/v1/runs", headers=headers, timeout=10)
        if response.status_code != 503:
            break
        time.sleep(0.2)
    return response.status_code


def _demo(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "deploy.cli", "demo", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)


def test_serve_prints_a_working_key_runs_the_demo_and_stops_everything_on_sigterm(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "RAY_ADDRESS", "CADUCEUS_API_KEY")}
    env["CADUCEUS_API_KEYS"] = "team-key=acme"  # keys configured, none given: serve must print one of them
    env["CADUCEUS_SCRATCH_ROOT"] = str(tmp_path)  # where the files tool writes
    command = [sys.executable, "-m", "deploy.cli", "serve", "--scripted", "--port", str(free_port())]
    with subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as serve:
        try:
            exports = _up(serve)
            started = psutil.Process(serve.pid).children(recursive=True)
            names = " ".join(process.name() for process in started)
            assert "redis-server" in names and "raylet" in names and "gcs_server" in names, names
            assert exports["CADUCEUS_API_KEY"] == "team-key"
            url = exports["CADUCEUS_URL"]
            assert _answers(url, exports["CADUCEUS_API_KEY"]) == 200

            wrong = _demo(env, "--url", url, "--api-key", "not-a-key")
            assert wrong.returncode != 0 and "401" in wrong.stderr + wrong.stdout, wrong
            assert "Traceback" not in wrong.stdout + wrong.stderr
            demo = _demo(env | {"CADUCEUS_API_KEY": exports["CADUCEUS_API_KEY"]}, "--url", url)
            out = demo.stdout
            assert demo.returncode == 0, (out[-3000:], demo.stderr[-3000:])
            # Streamed live: the model's text, then each call and its result as the sandboxed tool gave it.
            assert '  -> calculator {"expression": "17 * 23"}' in out and "  <- calculator ok: 391" in out
            assert '  -> files {"action": "write", "path": "result.txt", "content": "391"}' in out
            assert "=== completed (answer): 3 steps" in out
            assert "Traceback" not in out + demo.stderr
            # The files tool wrote into the conversation's scratch directory, on the service's side.
            assert [path.read_text() for path in tmp_path.glob("c*/result.txt")] == ["391"]

            serve.send_signal(signal.SIGTERM)
            out, err = serve.communicate(timeout=240)
        finally:
            if serve.poll() is None:
                serve.kill()
                serve.communicate()
    assert serve.returncode == 0, err[-3000:]
    said = out.splitlines()  # Ray's raylet may add a line of its own while Serve shuts down
    assert "stopping ..." in said and said[-1] == "stopped.", out[-2000:]
    left = [f"{p.pid} {p.name()}" for p in started if not _gone(p)]
    assert left == [], left
    assert "Traceback" not in err, err[-3000:]
