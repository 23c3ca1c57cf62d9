"""The CLI's client of the Caduceus REST API: JSON requests over httpx, the API's error envelope, and a
run's event stream (Server-Sent Events) that reconnects with ``Last-Event-ID`` when the connection drops.

It speaks the API's wire format only and imports nothing of the service. Its failures are
``ClientError``s, each with the exit code that the CLI returns for it::

    ClientError
    ├── ApiRefusedError    the API answered with an error: its envelope's code and message    exit 3
    └── UnreachableError   no answer: refused, timed out, or the stream dropped for good      exit 4
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
#: The kinds of event that end a run's stream (the service sends nothing after one).
FINAL = frozenset({"finished", "failed"})
#: The run statuses that do not change any more.
TERMINAL = frozenset({"completed", "failed", "cancelled", "incomplete"})
# The service sends a keep-alive comment after about 15 idle seconds: a minute of silence is a dead link.
_STREAM_TIMEOUT = httpx.Timeout(60.0, connect=5.0)


class ClientError(Exception):
    """Base of the client's failures; ``exit_code`` is what the CLI exits with."""

    exit_code = 1


class ApiRefusedError(ClientError):
    """The API answered with an error envelope (or, from something in front of it, a bare error)."""

    exit_code = 3

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{message} (HTTP {status}, {code})")
        self.status, self.code, self.message = status, code, message


class UnreachableError(ClientError):
    """The service did not answer."""

    exit_code = 4


@dataclass(frozen=True)
class Event:
    """One event of a run's stream: its id (to resume after), kind and data."""

    id: str
    kind: str
    data: dict[str, Any]


class ApiClient:
    """Calls the API at ``url`` with ``api_key`` (sent as a bearer token when given)."""

    def __init__(
        self, url: str, api_key: str | None, *, timeout_s: float = 30.0, reconnects: int = 5
    ) -> None:
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        timeout = httpx.Timeout(timeout_s, connect=5.0)
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)
        self._reconnects = reconnects

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *_: object) -> None:
        self._http.close()

    def get(self, path: str, **params: Any) -> Any:
        return self._send("GET", path, params={k: v for k, v in params.items() if v is not None})

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._send("POST", path, json=body)

    def _send(self, method: str, path: str, **options: Any) -> Any:
        with self._guard():
            response = self._http.request(method, path, **options)
        check(response)
        try:
            return response.json()
        except ValueError:
            message = f"{self.url}{path} did not answer JSON; is that a Caduceus service?"
            raise ApiRefusedError(response.status_code, "not_json", message) from None

    @contextmanager
    def _guard(self) -> Iterator[None]:
        """Transport failures become ``UnreachableError``, each with a message that says what to do."""
        try:
            yield
        except httpx.ConnectError:
            raise UnreachableError(
                f"the service is not reachable at {self.url}; is it running? (start it with `caduceus serve`)"
            ) from None
        except httpx.TimeoutException:
            raise UnreachableError(f"the service at {self.url} did not answer in time") from None
        except httpx.TransportError as exc:
            raise UnreachableError(f"the connection to {self.url} failed: {exc}") from None

    def events(self, run_id: str) -> Iterator[Event]:
        """The run's events from its first, as they come, up to its final one. A dropped connection is
        reopened with ``Last-Event-ID`` (so no event is seen twice or missed), up to ``reconnects`` times
        in a row with a growing pause; then ``UnreachableError``."""
        last: str | None = None
        failures = 0
        while True:
            try:
                for event in self._stream(run_id, last):
                    last, failures = event.id, 0
                    yield event
                    if event.kind in FINAL:
                        return
                if self.get(f"/v1/runs/{run_id}")["status"] in TERMINAL:
                    return  # the stream ended cleanly after the run did: its final event expired
            except (httpx.TransportError, _ServerError):
                pass
            failures += 1
            if failures > self._reconnects:
                raise UnreachableError(f"lost the event stream of run {run_id} from {self.url}")
            time.sleep(min(0.1 * 2**failures, 2.0))

    def _stream(self, run_id: str, last: str | None) -> Iterator[Event]:
        headers = {"Last-Event-ID": last} if last else {}
        path = f"/v1/runs/{run_id}/events"
        with self._http.stream("GET", path, headers=headers, timeout=_STREAM_TIMEOUT) as response:
            if response.status_code >= 500:
                raise _ServerError  # the service or its store is down for a moment: try again
            if response.status_code != 200:
                response.read()
                check(response)
            for frame in read_sse(response.iter_lines()):
                yield _event(frame)


class _ServerError(Exception):
    """The event stream answered with a server error: reconnect as for a dropped connection."""


def _event(frame: dict[str, str]) -> Event:
    raw = frame.get("data", "")
    try:
        data = json.loads(raw or "{}")
    except ValueError:
        data = {"text": raw}
    if not isinstance(data, dict):
        data = {"value": data}
    kind = frame.get("event") or str(data.get("kind", "message"))
    data.pop("kind", None)
    return Event(frame.get("id", ""), kind, data)


def check(response: httpx.Response) -> None:
    """Nothing for a success; ``ApiRefusedError`` with the envelope's code and message for an error."""
    if response.is_success:
        return
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):  # not the API's envelope: a proxy, or not our service
        code, message = "http_error", f"HTTP {response.status_code} {response.reason_phrase}".strip()
    raise ApiRefusedError(response.status_code, code, message)


def read_sse(lines: Iterable[str]) -> Iterator[dict[str, str]]:
    """The frames of an SSE stream, each as its fields (``data`` lines joined by newlines). Comment lines
    (keep-alives) are skipped, and so is a frame cut off by the end of the stream, as the SSE standard
    says: a client that resumes after the last whole frame gets it again, whole."""
    frame: dict[str, str] = {}
    for line in lines:
        if not line:
            if frame:
                yield frame
            frame = {}
            continue
        if line.startswith(":"):
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        frame[name] = f"{frame[name]}\n{value}" if name == "data" and "data" in frame else value
