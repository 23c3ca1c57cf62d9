"""A real OTLP receiver for tests: rotel (its wheel carries the ``rotel-agent`` binary) on free loopback
ports, logging every span it receives in detail; ``spans`` reads them back from that log."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from deploy.local_redis import free_port


@dataclass(frozen=True)
class Receiver:
    endpoint: str  # OTLP/gRPC, as the service's otlp_endpoint names it
    log: Path


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent_id: str
    name: str
    kind: str
    service: str
    attributes: dict[str, str] = field(default_factory=dict)


@contextmanager
def rotel(directory: Path, *signals: str) -> Iterator[Receiver]:
    """rotel, receiving OTLP on a free port and logging the ``signals`` it receives (traces, metrics)."""
    spec = importlib.util.find_spec("rotel")
    assert spec is not None and spec.submodule_search_locations, "the rotel wheel is a test dependency"
    agent = Path(next(iter(spec.submodule_search_locations))) / "rotel-agent"
    grpc, http, log = free_port(), free_port(), directory / "received.txt"
    logged = [arg for signal in signals for arg in ("--debug-log", signal)]
    command = [str(agent), "start", "--exporter", "blackhole", "--otlp-grpc-endpoint", f"127.0.0.1:{grpc}"]
    command += ["--otlp-http-endpoint", f"127.0.0.1:{http}", *logged, "--debug-log-verbosity", "detailed"]
    command += ["--log-file", str(directory / "agent.log")]
    with log.open("w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(log, ["Starting Rotel"], 30)
        yield Receiver(f"http://127.0.0.1:{grpc}", log)
    finally:
        process.terminate()
        process.wait(timeout=30)


def wait_for(log: Path, needles: list[str] | tuple[str, ...], seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while True:
        text = log.read_text(errors="replace")
        if all(needle in text for needle in needles) or time.monotonic() > deadline:
            return text
        time.sleep(0.2)


_FIELD = re.compile(r"^\s+(Trace ID|Parent ID|ID|Name|Kind)\s+: ?(.*)$")
_ATTRIBUTE = re.compile(r"^\s+-> ([\w.]+): \w+\((.*)\)$")
_KEYS = {"Trace ID": "trace_id", "Parent ID": "parent_id", "ID": "span_id", "Name": "name", "Kind": "kind"}


def spans(text: str) -> list[Span]:
    """Every span in rotel's detailed log, with its resource's ``service.name``."""
    found: list[Span] = []
    service, current, in_resource = "", None, False
    for line in text.splitlines():
        if line.startswith("Resource attributes:"):
            in_resource = True
        elif line.startswith(("ScopeSpans", "Span #")):
            in_resource = False
            if line.startswith("Span #"):
                current = Span("", "", "", "", "", service)
                found.append(current)
        attribute = _ATTRIBUTE.match(line)
        if attribute and in_resource and attribute.group(1) == "service.name":
            service = attribute.group(2)
        elif attribute and current is not None:
            current.attributes[attribute.group(1)] = attribute.group(2)
        matched = _FIELD.match(line)
        if matched and current is not None:
            setattr(current, _KEYS[matched.group(1)], matched.group(2).strip())
    return found
