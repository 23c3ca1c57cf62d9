"""The security suite: escape probes through the ``python`` tool, judged on the host (workers/sandbox/probes).

Run under bubblewrap (the mechanism in force here) and under the Landlock fallback, which this machine
also supports, so that the fallback is proven too."""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from tests.integration.conftest_workers import cold_executor, probe_registry, sandbox_processes
from toolbox.protocol import ToolCall, ToolResult
from workers.sandbox import Mechanism, probes

pytestmark = pytest.mark.integration
_NAMES = probes.names()


def test_the_suite_has_at_least_fifteen_probes() -> None:
    assert len(_NAMES) >= 15


@pytest.mark.timeout(60)
@pytest.mark.parametrize("name", _NAMES)
@pytest.mark.parametrize("mechanism", ["bubblewrap", "landlock"])
def test_probe_is_contained(mechanism: Mechanism, name: str, tmp_path: Path) -> None:
    async def main() -> probes.Verdict:
        with probes.bait() as found:
            probe = next(p for p in probes.probes(found) if p.name == name)
            async with cold_executor(probe_registry(), tmp_path, mechanism) as executor:

                async def run(call: ToolCall) -> ToolResult:
                    return await executor.execute(call, "probe")

                verdict = await probes.judge(run, probe, found)
                await executor.sandbox.settle()
                assert sandbox_processes() == [], "a process of the task survived it"
                return verdict

    verdict = asyncio.run(main())
    assert verdict.contained, f"{name} escaped: {verdict.payload[:2000]}"
    assert verdict.seconds < 10, f"{name} took {verdict.seconds:.1f} s: the limits did not bound it"
    assert subprocess.run(["/bin/true"], check=False).returncode == 0, (
        "the host can no longer start processes"
    )
