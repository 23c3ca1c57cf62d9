"""What the sync and the async client share: settings, request bodies, reading answers and event streams.
Plain functions of data, no I/O."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import httpx

from orchestrator.client._errors import APIConnectionError, APIError, APITimeoutError, api_error
from orchestrator.client._types import Event, Run, RunPage, Tool

DEFAULT_URL = "http://127.0.0.1:8000"
#: The service sends a keep-alive comment after about 15 idle seconds: a minute of silence is a dead link.
STREAM_TIMEOUT = httpx.Timeout(60.0, connect=5.0)


def base_url(given: str | None) -> str:
    return (given or os.environ.get("CADUCEUS_URL") or DEFAULT_URL).rstrip("/")


def headers(api_key: str | None) -> dict[str, str]:
    key = api_key if api_key is not None else os.environ.get("CADUCEUS_API_KEY")
    return {"Authorization": f"Bearer {key}"} if key else {}


def run_body(
    text: str | Sequence[Mapping[str, str]], tools: Sequence[str], options: Mapping[str, Any]
) -> dict[str, Any]:
    """A ``POST /v1/runs`` body: the input, the tools, and the options that are set."""
    body: dict[str, Any] = {"input": text if isinstance(text, str) else [dict(m) for m in text]}
    body["tools"] = list(tools)
    body |= {key: value for key, value in options.items() if value is not None}
    if "tool_choice" in body:
        body["tool_choice"] = list(body["tool_choice"])
    return body


def check(response: httpx.Response) -> None:
    """Nothing for a success; the ``APIError`` the envelope (or the bare status) says, else."""
    if response.is_success:
        return
    try:
        error = response.json()["error"]
        code, message, param = str(error["code"]), str(error["message"]), error.get("param")
    except (ValueError, KeyError, TypeError):  # not the API's envelope: a proxy, or not our service
        code, message, param = (
            "http_error",
            f"HTTP {response.status_code} {response.reason_phrase}".strip(),
            None,
        )
    raise api_error(response.status_code, code, message, param, response.headers.get("Retry-After"))


def decoded(response: httpx.Response) -> Any:
    check(response)
    try:
        return response.json()
    except ValueError:
        message = f"{response.url} did not answer JSON; is that a Caduceus service?"
        raise APIError(response.status_code, "not_json", message) from None


def unreachable(exc: httpx.TransportError, url: str) -> APIConnectionError:
    """A transport failure as the client's error, with a sentence that says what to do."""
    if isinstance(exc, httpx.TimeoutException):
        return APITimeoutError(f"the service at {url} did not answer in time")
    if isinstance(exc, httpx.ConnectError):
        hint = "is it running? (start it with `caduceus serve`)"
        return APIConnectionError(f"the service is not reachable at {url}; {hint}")
    return APIConnectionError(f"the connection to {url} failed: {exc}")


def page(data: Mapping[str, Any]) -> RunPage:
    return RunPage(tuple(Run.of(run) for run in data["data"]), bool(data["has_more"]), dict(data))


def tools(data: Mapping[str, Any]) -> list[Tool]:
    return [Tool(t["name"], t["description"], t["parameters"]) for t in data["data"]]


def in_time(deadline: float | None, run_id: str) -> None:
    if deadline is not None and time.monotonic() > deadline:
        raise APITimeoutError(f"run {run_id} did not end in time")


def pause_s(failures: int) -> float:
    """How long to wait before reconnecting after ``failures`` failures in a row."""
    return min(0.1 * 2.0 ** min(failures, 8), 2.0)


def read_sse(lines: Iterable[str]) -> Iterator[dict[str, str]]:
    """The frames of an SSE stream, each as its fields (``data`` lines joined by newlines). Comment lines
    (keep-alives) are skipped, and so is a frame cut off by the end of the stream, as the SSE standard
    says: a client that resumes after the last whole frame gets it again, whole."""
    frames = Frames()
    for line in lines:
        frame = frames.line(line)
        if frame is not None:
            yield frame


class Frames:
    """An SSE stream's frames, read a line at a time."""

    def __init__(self) -> None:
        self._frame: dict[str, str] = {}

    def line(self, line: str) -> dict[str, str] | None:
        """The frame that ``line`` ends (an empty line ends one), else ``None``."""
        if not line:
            frame, self._frame = self._frame, {}
            return frame or None
        if not line.startswith(":"):
            name, _, value = line.partition(":")
            value = value.removeprefix(" ")
            held = self._frame.get(name)
            self._frame[name] = f"{held}\n{value}" if name == "data" and held is not None else value
        return None


def event_of(frame: Mapping[str, str]) -> Event:
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
