"""A real Prometheus for tests (Debian's ``prometheus`` package, which ``make test`` installs when missing),
started on a free loopback port with a temp config and storage, and the Grafana dashboard's queries as
Grafana would send them.

Grafana's timeseries panels send range queries, with ``$__rate_interval`` at least four scrape intervals;
``dashboard_queries`` does the same substitution. ``unit_of`` says what unit a query's result is in, from
the metric's name (``_seconds``) and its type as Prometheus's metadata has it (a rate of a counter is per
second; a gauge, or an increase, is a count; a ratio of two rates is a fraction).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from deploy.local_redis import free_port

DASHBOARD = Path(__file__).resolve().parents[2] / "helm" / "caduceus" / "dashboards" / "caduceus.json"
SCRAPE_S = 1
RATE_INTERVAL = f"{4 * SCRAPE_S}s"


@dataclass(frozen=True)
class Query:
    panel: str
    unit: str
    expr: str


def dashboard_queries() -> list[Query]:
    panels = json.loads(DASHBOARD.read_text(encoding="utf-8"))["panels"]
    return [
        Query(
            p["title"],
            p["fieldConfig"]["defaults"]["unit"],
            t["expr"].replace("$__rate_interval", RATE_INTERVAL),
        )
        for p in panels
        for t in p["targets"]
    ]


@contextmanager
def prometheus(directory: Path, *, file_sd: Path, static: list[str]) -> Iterator[httpx.Client]:
    """Prometheus scraping every target named in ``file_sd``'s files and the ``static`` ones, each second;
    yields a client of its HTTP API."""
    binary = shutil.which("prometheus")
    assert binary, "Debian's prometheus package is missing: `make test` installs it (apt-get)"
    config = {
        "global": {"scrape_interval": f"{SCRAPE_S}s", "scrape_timeout": f"{SCRAPE_S}s"},
        "scrape_configs": [
            {
                "job_name": "caduceus",
                "file_sd_configs": [{"files": [f"{file_sd}/*.json"], "refresh_interval": "1s"}],
            },
            {"job_name": "ray", "static_configs": [{"targets": static}]},
        ],
    }
    (directory / "prometheus.yml").write_text(yaml.safe_dump(config), encoding="utf-8")
    address = f"127.0.0.1:{free_port()}"
    command = [binary, f"--config.file={directory / 'prometheus.yml'}", f"--web.listen-address={address}"]
    command += [f"--storage.tsdb.path={directory / 'data'}", "--log.level=warn"]
    with (directory / "prometheus.log").open("w") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        with httpx.Client(base_url=f"http://{address}", timeout=10) as client:
            _ready(client, process, directory / "prometheus.log")
            yield client
    finally:
        process.terminate()
        process.wait(timeout=30)


def _ready(client: httpx.Client, process: subprocess.Popen[bytes], log: Path) -> None:
    for _ in range(100):
        assert process.poll() is None, log.read_text()[-2000:]
        try:
            if client.get("/-/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"prometheus never became ready: {log.read_text()[-2000:]}")


def series(client: httpx.Client, expr: str, start: float, end: float) -> list[dict[str, Any]]:
    """The range query's series, each with its finite values only (a series of NaNs is no data)."""
    answer = client.get(
        "/api/v1/query_range", params={"query": expr, "start": start, "end": end, "step": SCRAPE_S}
    )
    body = answer.json()
    assert body["status"] == "success", (expr, body)
    found = []
    for one in body["data"]["result"]:
        values = [float(v) for _, v in one["values"] if v not in ("NaN", "+Inf", "-Inf")]
        if values:
            found.append({"metric": one["metric"], "values": values})
    return found


_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*(?![a-zA-Z0-9_:]|\s*\()")
_SUFFIX = re.compile(r"_(bucket|count|sum|total)$")


def metric_names(expr: str) -> list[str]:
    """The metric names a query selects: its identifiers that call nothing, once label matchers, ranges
    and ``by (...)`` clauses are left out."""
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\bby \([^)]*\)", "", expr)
    return _NAME.findall(bare)


def unit_of(expr: str, types: dict[str, str]) -> str:
    """The unit a query's result is in: ``s``, ``percentunit``, ``per_second`` or ``count``."""
    names = metric_names(expr)
    kinds = {types.get(name) or types.get(_SUFFIX.sub("", name)) for name in names}
    assert None not in kinds, f"{expr}: Prometheus has no metadata for {names}"
    if "histogram_quantile" in expr:
        assert kinds == {"histogram"}, (expr, kinds)
        return "s" if all(name.endswith("_seconds_bucket") for name in names) else "count"
    if " / " in expr:
        assert kinds == {"counter"}, (expr, kinds)
        return "percentunit"
    if "rate(" in expr and "increase(" not in expr:
        assert kinds <= {"counter", "histogram"}, (expr, kinds)
        return "per_second"
    assert kinds <= {"gauge", "counter"}, (expr, kinds)
    return "count"


def grafana_unit_is(unit: str, wanted: str) -> bool:
    """Whether a panel's Grafana unit shows a result in ``wanted`` (``unit_of``)."""
    if wanted == "per_second":
        return unit in ("ops", "reqps") or unit.endswith("/s")
    if wanted == "count":
        return unit in ("short", "none")
    return unit == wanted


def metadata_types(client: httpx.Client) -> dict[str, str]:
    body = client.get("/api/v1/metadata").json()
    return {name: entries[0]["type"] for name, entries in body["data"].items()}
