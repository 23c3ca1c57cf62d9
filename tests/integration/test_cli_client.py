"""``caduceus run``, ``runs`` and ``tools`` as a user runs them (``deploy.cli.main``), against the real API
of ``conftest_api``: uvicorn on loopback, a real redis-server, a real worker with the scripted engine."""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from deploy.cli import main
from tests.integration.conftest_api import A, api_client, free_port, wait_for

pytestmark = pytest.mark.integration


@dataclass
class Cli:
    """Runs the CLI against one service, as tenant acme (key-a) unless told otherwise."""

    url: str
    http: httpx.Client
    capsys: pytest.CaptureFixture[str]

    def __call__(self, *argv: str, key: str | None = "key-a", url: str | None = None) -> tuple[int, str, str]:
        self.capsys.readouterr()
        options = ["--url", url or self.url] + (["--api-key", key] if key else [])
        code = main([*argv, *options])
        captured = self.capsys.readouterr()
        return code, captured.out, captured.err


@pytest.fixture
def cli(redis_url: str, capsys: pytest.CaptureFixture[str]) -> Iterator[Cli]:
    with api_client(redis_url, worker=True) as http:
        yield Cli(str(http.base_url).rstrip("/"), http, capsys)


@pytest.fixture
def idle(redis_url: str, capsys: pytest.CaptureFixture[str]) -> Iterator[Cli]:
    """The API with no worker behind it: runs stay queued."""
    with api_client(redis_url, worker=False) as http:
        yield Cli(str(http.base_url).rstrip("/"), http, capsys)


def test_run_follows_each_tool_call_and_step_to_the_answer(cli: Cli) -> None:
    code, out, err = cli("run", "tool hello", "--tools", "echo")
    assert code == 0, err
    assert out == "echo: tool hello\n"  # the answer alone on stdout
    # The model's text streams live (delta events), between the structured progress lines.
    assert '<tool_call>\n{"name": "echo", "arguments": {"text": "tool hello"}}\n</tool_call>' in err
    assert "\necho: tool hello\n" in err
    streamed = ("<tool_call>", "{", "</tool_call>", "echo: ")
    lines = [line for line in err.splitlines() if not line.startswith(streamed)]
    assert lines[0].startswith("run run_") and "(thread thread_" in lines[0]
    assert lines[1:5] == [
        '  -> echo {"text": "tool hello"}  [call_0_0]',
        '  <- echo ok: "tool hello"',
        "step 1: 1 tool call (echo)",
        "step 2: model turn without tool calls",
    ]
    assert lines[5].startswith("completed, stop reason answer, 2 steps, ")
    assert "prompt +" in lines[5] and "completion)" in lines[5]
    assert "Traceback" not in err


def test_run_with_json_prints_the_final_run_and_continues_a_thread(cli: Cli) -> None:
    code, out, _ = cli("run", "one", "--json")
    first = json.loads(out)
    assert (code, first["status"], first["output"]) == (0, "completed", "echo: one")
    code, out, _ = cli("run", "two", "--thread", first["thread_id"], "--json", "--model", "hermes-3-3b")
    assert (code, json.loads(out)["thread_id"]) == (0, first["thread_id"])
    messages = cli.http.get(f"/v1/threads/{first['thread_id']}/messages", headers=A).json()["data"]
    assert [m["content"] for m in messages] == ["one", "echo: one", "two", "echo: two"]


def test_a_run_that_fails_exits_1_with_its_error(cli: Cli) -> None:
    code, out, err = cli("run", "crash now")
    assert (code, out) == (1, "")
    assert "failed, 0 steps" in err
    assert "error: internal_error: the run failed on the service's side (its logs have the details)" in err
    assert "the engine broke" not in err  # the exception's text stays in the worker's log


def test_runs_list_show_and_the_no_follow_run(cli: Cli) -> None:
    code, out, _ = cli("run", "tool listed", "--tools", "echo", "--no-follow")
    run_id, status = out.split()
    assert code == 0 and run_id.startswith("run_") and status in ("queued", "in_progress")
    wait_for(cli.http, run_id, "completed")
    code, out, _ = cli("runs", "list")
    header, row = out.splitlines()
    assert code == 0 and header.split() == ["ID", "STATUS", "CREATED", "STEPS", "TOKENS", "OUTPUT"]
    assert row.split()[:2] == [run_id, "completed"] and row.endswith("echo: tool listed")
    code, out, _ = cli("runs", "show", run_id)
    assert code == 0
    assert f"id:          {run_id}" in out.splitlines()
    assert "stop reason: answer" in out and out.endswith("output:\necho: tool listed\n")
    code, out, _ = cli("runs", "show", run_id, "--json")
    assert json.loads(out) == cli.http.get(f"/v1/runs/{run_id}", headers=A).json()


def test_runs_show_timeline_draws_each_step_with_its_calls(cli: Cli) -> None:
    code, out, _ = cli("run", "tool timed", "--tools", "echo", "--no-follow")
    run_id = out.split()[0]
    wait_for(cli.http, run_id, "completed")
    code, out, err = cli("runs", "show", run_id, "--timeline")
    assert code == 0, err
    run = cli.http.get(f"/v1/runs/{run_id}", headers=A).json()
    assert f"trace:       {run['trace_id']}" in out.splitlines()
    lines = out[out.index("timeline (") :].splitlines()
    assert lines[0].startswith("timeline (# model, = tools; 40 characters = ")
    assert re.fullmatch(r"step   0  [#=]{1,40} +model \d+\.\d{3} s  tools \d+\.\d{3} s  echo", lines[1]), (
        lines
    )
    assert lines[2:4] == ['           -> echo {"text": "tool timed"}', '           <- echo ok: "tool timed"']
    assert re.fullmatch(r"step   1  [#=]{0,40} +model \d+\.\d{3} s  tools \d+\.\d{3} s", lines[4]), lines
    assert len(lines) == 5


def test_runs_list_pages_with_after(idle: Cli) -> None:
    ids = [idle("run", f"r{n}", "--no-follow")[1].split()[0] for n in range(3)]
    code, out, err = idle("runs", "list", "--limit", "2")
    assert [line.split()[0] for line in out.splitlines()[1:]] == [ids[2], ids[1]]
    assert err == f"more: caduceus runs list --after {ids[1]}\n"
    code, out, err = idle("runs", "list", "--after", ids[1], "--json")
    page = json.loads(out)
    assert ([run["id"] for run in page["data"]], page["has_more"]) == ([ids[0]], False)
    code, _, err = idle("runs", "list", "--limit", "500")
    assert (
        code == 3
        and err.startswith("caduceus: error: query.limit: ")
        and "(HTTP 422, validation_error)" in err
    )


def test_cancel_a_queued_run(idle: Cli) -> None:
    run_id = idle("run", "never", "--no-follow")[1].split()[0]
    assert idle("runs", "cancel", run_id)[:2] == (0, f"{run_id} cancelled\n")
    assert "status:      cancelled" in idle("runs", "show", run_id)[1]


def test_cancel_a_run_in_progress(cli: Cli) -> None:
    body = {"input": "slow", "tools": ["pause"], "limits": {"max_steps": 1000}}
    run_id = cli.http.post("/v1/runs", json=body, headers=A).json()["id"]
    wait_for(cli.http, run_id, "in_progress")
    code, out, _ = cli("runs", "cancel", run_id)
    assert (code, out) == (0, f"{run_id} in_progress: cancellation requested\n")
    assert wait_for(cli.http, run_id, "cancelled")["stop_reason"] == "cancelled"


def test_an_unknown_id_is_one_clear_line_and_exit_3(idle: Cli) -> None:
    for action in ("show", "cancel"):
        code, out, err = idle("runs", action, "run_nope")
        assert (code, out) == (3, "")
        assert err == "caduceus: error: no run 'run_nope' (HTTP 404, run_not_found)\n"
    # An id is one path segment, whatever it holds: this one must not reach GET /v1/tools.
    code, out, err = idle("runs", "show", "../tools")
    assert (code, out) == (3, "") and "(HTTP 404, " in err


def test_a_missing_or_wrong_key_is_refused(idle: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CADUCEUS_API_KEY", raising=False)
    code, _, err = idle("tools", "list", key=None)
    assert code == 3 and "(HTTP 401, missing_api_key)" in err
    code, _, err = idle("run", "hi", key="nope")
    assert code == 3 and err == "caduceus: error: the API key is not valid (HTTP 401, invalid_api_key)\n"


def test_the_url_and_key_come_from_the_environment(idle: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CADUCEUS_URL", idle.url)
    monkeypatch.setenv("CADUCEUS_API_KEY", "key-b")
    assert main(["tools", "list"]) == 0
    out = idle.capsys.readouterr().out
    assert out.splitlines() == ["echo   Repeat text.", "pause  Wait a while."]
    assert main(["tools", "list", "--json"]) == 0
    tools = json.loads(idle.capsys.readouterr().out)
    assert [tool["name"] for tool in tools] == ["echo", "pause"]


def test_an_unreachable_service_says_so_and_how_to_start_it(idle: Cli) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    for argv in (("run", "hi"), ("runs", "list"), ("tools", "list")):
        code, out, err = idle(*argv, url=url)
        assert (code, out) == (4, "")
        assert err == (
            f"caduceus: error: the service is not reachable at {url}; is it running? "
            "(start it with `caduceus serve`)\n"
        )


def test_tenants_see_only_their_own_runs_through_the_cli(cli: Cli) -> None:
    code, out, _ = cli("run", "mine", "--json")
    run_id = json.loads(out)["id"]
    assert cli("runs", "list", key="key-b")[1:] == ("", "no runs\n")
    for action in ("show", "cancel"):
        code, _, err = cli("runs", action, run_id, key="key-b")
        assert code == 3 and "(HTTP 404, run_not_found)" in err
    code, out, _ = cli("runs", "list", "--json", key="key-b")
    assert json.loads(out)["data"] == []
    assert cli("runs", "list")[1].splitlines()[1].split()[0] == run_id


class DroppingProxy:
    """A TCP proxy in front of the API that cuts the first event stream through it right after the
    stream's first event, as a flaky network would; everything else passes untouched."""

    def __init__(self, upstream: str) -> None:
        host, port = upstream.removeprefix("http://").rsplit(":", 1)
        self._upstream = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}"
        self.event_requests: list[str] = []
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()

    def __enter__(self) -> DroppingProxy:
        threading.Thread(target=self._accept, daemon=True).start()
        return self

    def __exit__(self, *_: object) -> None:
        self._listener.close()
        for sock in self._sockets:
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return  # closed
            upstream = socket.create_connection(self._upstream)
            self._sockets += [client, upstream]
            cut = threading.Event()
            threading.Thread(target=self._requests, args=(client, upstream, cut), daemon=True).start()
            threading.Thread(target=self._responses, args=(upstream, client, cut), daemon=True).start()

    def _requests(self, client: socket.socket, upstream: socket.socket, cut: threading.Event) -> None:
        for data in _received(client):
            if b"/events " in data:
                with self._lock:
                    if not self.event_requests:
                        cut.set()  # the response to this request is the stream to cut
                    self.event_requests.append(data.decode())
            upstream.sendall(data)

    def _responses(self, upstream: socket.socket, client: socket.socket, cut: threading.Event) -> None:
        held = b""
        for data in _received(upstream):
            if not cut.is_set():
                client.sendall(data)
                continue
            held += data  # the stream's head and its first event, up to the blank line that ends it
            start = held.find(b"data:")  # comment lines (the stream's first line) are not events
            end = held.find(b"\n\n", start) if start >= 0 else -1
            if end >= 0:
                client.sendall(held[: end + 2])
                for sock in (client, upstream):
                    sock.shutdown(socket.SHUT_RDWR)
                return


def _received(sock: socket.socket) -> Iterator[bytes]:
    while True:
        try:
            data = sock.recv(65536)
        except OSError:
            return
        if not data:
            return
        yield data


def test_a_dropped_event_stream_is_resumed_with_last_event_id(cli: Cli) -> None:
    with DroppingProxy(cli.url) as proxy:
        code, out, err = cli("run", "tool again", "--tools", "echo", url=proxy.url)
    assert (code, out) == (0, "echo: tool again\n"), err
    first, second = proxy.event_requests
    assert "last-event-id" not in first.lower()
    resumed_after = next(
        line.split(":", 1)[1].strip()
        for line in second.splitlines()
        if line.lower().startswith("last-event-id")
    )
    assert resumed_after  # the id of the one event the first stream carried
    # Each event was shown once: none lost with the first connection, none repeated by the second.
    assert err.count("  -> echo ") == 1 and err.count("  <- echo ok") == 1
    assert err.count("step 1:") == 1 and err.count("step 2:") == 1
