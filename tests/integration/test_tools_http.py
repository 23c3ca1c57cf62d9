"""``http_get`` against real HTTP(S) servers on loopback, with name resolution under the test's control
(``toolbox.tools.http.resolve``): the checked address is the one connected to, ports are limited, names
that resolve to private addresses are refused, and TLS carries the name."""

from __future__ import annotations

import http.server
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from toolbox.tools import context
from toolbox.tools import http as http_tool
from toolbox.tools.http import http_get

pytestmark = pytest.mark.integration


class _Server:
    """A loopback HTTP server that records the Host header of each request it gets."""

    def __init__(self, address: str, port: int = 0, tls: ssl.SSLContext | None = None) -> None:
        hosts: list[str] = []
        self.hosts = hosts

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                hosts.append(self.headers.get("Host", ""))
                body = f"served by {address}".encode()
                self.send_response(200)
                self.send_header("content-type", "text/plain")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer((address, port), Handler)
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def good() -> Iterator[_Server]:
    server = _Server("127.0.0.1")
    yield server
    server.stop()


@pytest.fixture
def allow() -> Iterator[Callable[..., None]]:
    """Sets the tool's allow-list, as the sandbox host does from the operator's configuration."""
    tokens = []

    def use(*entries: str) -> None:
        tokens.append(context.use(context.ToolContext(egress=entries)))

    yield use
    for token in reversed(tokens):
        context.reset(token)


def _resolver(monkeypatch: pytest.MonkeyPatch, answers: dict[str, list[list[str]]]) -> list[str]:
    """Each name answers its lists in turn (the last one again and again); returns the names asked."""
    asked: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        asked.append(host)
        queue = answers[host]
        return queue.pop(0) if len(queue) > 1 else queue[0]

    monkeypatch.setattr(http_tool, "resolve", resolve)
    return asked


def test_a_name_is_resolved_once_and_the_checked_address_is_the_one_connected_to(
    good: _Server, allow: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    """DNS rebinding: the name resolves to an allowed address for the check and to another one after;
    the request still goes to the checked address, with the name in the Host header."""
    evil = _Server("127.0.0.2", good.port)
    try:
        asked = _resolver(monkeypatch, {"service.test": [["127.0.0.1"], ["127.0.0.2"]]})
        allow(f"service.test:{good.port}", "127.0.0.1/32")
        result = http_get(f"http://service.test:{good.port}/page")
    finally:
        evil.stop()
    assert result == {"status": 200, "content_type": "text/plain", "body": "served by 127.0.0.1"}
    assert asked == ["service.test"]
    assert good.hosts == [f"service.test:{good.port}"] and evil.hosts == []


@pytest.mark.parametrize("address", ["10.1.2.3", "127.0.0.1", "169.254.169.254", "::1", "fd00::1"])
def test_an_allowed_name_that_resolves_to_a_private_address_is_refused(
    address: str, allow: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    _resolver(monkeypatch, {"api.test": [[address]]})
    allow("api.test")
    with pytest.raises(context.DeniedError, match="not a public address nor in an allowed network"):
        http_get("http://api.test/")


def test_only_ports_80_and_443_unless_the_entry_names_a_port(
    good: _Server, allow: Callable[..., None]
) -> None:
    allow("127.0.0.1")
    with pytest.raises(context.DeniedError, match=f"port {good.port} is not allowed"):
        http_get(f"http://127.0.0.1:{good.port}/")
    allow("127.0.0.1", f"127.0.0.1:{good.port}")
    assert http_get(f"http://127.0.0.1:{good.port}/")["status"] == 200


def test_redirects_are_checked_like_the_first_request(
    good: _Server, allow: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    class Redirect(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(302)
            self.send_header("location", self.path[1:])
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    redirector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Redirect)
    threading.Thread(target=redirector.serve_forever, daemon=True).start()
    try:
        _resolver(monkeypatch, {"inside.test": [["10.0.0.7"]]})
        port = redirector.server_address[1]
        allow(f"127.0.0.1:{port}", f"127.0.0.1:{good.port}", "inside.test")
        followed = http_get(f"http://127.0.0.1:{port}/http://127.0.0.1:{good.port}/")
        with pytest.raises(context.DeniedError, match="not a public address"):
            http_get(f"http://127.0.0.1:{port}/http://inside.test/")
        with pytest.raises(context.DeniedError, match="not on this tool's allow-list"):
            http_get(f"http://127.0.0.1:{port}/http://elsewhere.test/")
    finally:
        redirector.shutdown()
        redirector.server_close()
    assert followed["body"] == "served by 127.0.0.1"


def _certificate(directory: Path, name: str) -> tuple[Path, Path]:
    key, cert = directory / "key.pem", directory / "cert.pem"
    request = ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}"]
    subprocess.run(
        [
            "openssl",
            *request,
            "-addext",
            f"subjectAltName=DNS:{name}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return key, cert


def test_https_goes_to_the_checked_address_with_the_name_as_tls_server_name(
    tmp_path: Path, allow: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> None:
    key, cert = _certificate(tmp_path, "secure.test")
    names: list[str | None] = []
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    tls.sni_callback = lambda sock, name, ctx: names.append(name)  # type: ignore[assignment,misc]
    server = _Server("127.0.0.1", tls=tls)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # the client trusts this one certificate
    try:
        _resolver(monkeypatch, {"secure.test": [["127.0.0.1"], ["127.0.0.2"]]})
        allow(f"secure.test:{server.port}", "127.0.0.0/8")
        result = http_get(f"https://secure.test:{server.port}/")
    finally:
        server.stop()
    assert result["body"] == "served by 127.0.0.1"
    assert names == ["secure.test"] and server.hosts == [f"secure.test:{server.port}"]
