"""What a real redis-server received, as MONITOR shows it: the commands clients sent (one line each, a
pipeline's commands one by one), told apart from the commands scripts ran on the server (``lua``)."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import redis


@dataclass
class Received:
    sent: list[str] = field(default_factory=list)  # each command a client sent: its name, lower case
    lines: list[str] = field(default_factory=list)  # each command a client sent, in full
    scripted: list[str] = field(default_factory=list)  # each command a script ran

    def counts(self) -> dict[str, int]:
        return {name: self.sent.count(name) for name in sorted(set(self.sent))}


@contextmanager
def received(url: str) -> Iterator[Received]:
    """Records every command the server at ``url`` receives during the block (from every client)."""
    seen = Received()
    marker = f"monitor-end-{uuid.uuid4().hex}"
    ready = threading.Event()

    def watch() -> None:
        client = redis.Redis.from_url(url)
        with client.monitor() as monitor:
            ready.set()
            for line in monitor.listen():
                words = line["command"].split(" ")
                if words[0].lower() == "echo" and marker in line["command"]:
                    break
                if line["client_type"] == "lua":
                    seen.scripted.append(words[0].lower())
                else:
                    seen.sent.append(words[0].lower())
                    seen.lines.append(line["command"])
        client.close()

    stopper = redis.Redis.from_url(url)
    stopper.ping()  # connected before: its connection's own commands are not counted
    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    ready.wait(10)
    try:
        yield seen
    finally:
        stopper.echo(marker)
        stopper.close()
        thread.join(10)
