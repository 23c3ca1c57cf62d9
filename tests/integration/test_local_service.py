"""``caduceus demo --scripted`` as a user runs it: a separate process brings the whole service up on this
machine (embedded Redis, a private local Ray, the Serve application), runs the demo task over REST, streams
it, prints the summary and shuts everything down. The scripted engine keeps it to Ray's start-up time."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(400)]


def test_the_scripted_demo_runs_through_the_local_service_and_stops(tmp_path: object) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "RAY_ADDRESS")}
    env["CADUCEUS_SCRATCH_ROOT"] = str(tmp_path)  # where the demo's files tool writes
    done = subprocess.run(
        [sys.executable, "-m", "deploy.cli", "demo", "--scripted"],
        capture_output=True,
        text=True,
        timeout=360,
        env=env,
        check=False,
    )
    out = done.stdout
    assert done.returncode == 0, (out[-3000:], done.stderr[-3000:])
    assert "service up at http://127.0.0.1:" in out
    # Streamed live: the model's text, then each call and its result as the sandboxed tool returned it.
    assert '  -> calculator {"expression": "17 * 23"}' in out and "  <- calculator ok: 391" in out
    assert '  -> files {"action": "write", "path": "result.txt", "content": "391"}' in out
    assert "=== completed (answer): 3 steps" in out
    assert f"the files tool wrote result.txt: '391' (in {tmp_path}/c" in out
    assert [path.read_text() for path in Path(str(tmp_path)).glob("c*/result.txt")] == ["391"]
    assert out.rstrip().endswith("service stopped.")
    assert "Traceback" not in out + done.stderr
