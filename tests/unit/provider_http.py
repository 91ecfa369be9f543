"""HTTP plumbing of the provider tests: requests as a provider sends them, run through Flask as
the webhook view gets them, and a fake provider API on loopback that records what it is sent.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar
from urllib.parse import parse_qs, quote, urlencode

import flask
from werkzeug.datastructures import MultiDict

T = TypeVar("T")
_app = flask.Flask(__name__)


@dataclass(frozen=True)
class WebhookRequest:
    """A request as the provider would send it."""

    path: str
    method: str = "POST"
    data: bytes | dict[str, str] | None = None
    query_string: dict[str, str] | str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str | None = None


@dataclass(frozen=True)
class RawRequest:
    """A request as bytes on the wire: what the cross-cutting suites build, then have signed.

    ``query`` is the raw query string as a WSGI server hands it over (bytes as Latin-1), so it
    can hold anything a client put on the wire.
    """

    path: str
    method: str = "POST"
    query: str = ""
    body: bytes = b""
    content_type: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def with_query(self, pairs: dict[str, str]) -> RawRequest:
        """The same request with ``pairs`` appended to its query string."""
        extra = urlencode(pairs, quote_via=quote)
        return replace(self, query=f"{self.query}&{extra}" if self.query else extra)

    def with_headers(self, headers: dict[str, str]) -> RawRequest:
        return replace(self, headers={**self.headers, **headers})

    def webhook_request(self) -> WebhookRequest:
        return WebhookRequest(
            self.path,
            method=self.method,
            data=self.body,
            query_string=self.query or None,
            headers=dict(self.headers),
            content_type=self.content_type,
        )


def call(request: WebhookRequest, action: Callable[[flask.Request], T], remote_addr: str) -> T:
    """Run ``action`` on ``request`` as Flask would hand it to the webhook view."""
    with _app.test_request_context(
        request.path,
        method=request.method,
        data=request.data,
        query_string=request.query_string,
        headers=request.headers,
        content_type=request.content_type,
        environ_base={"REMOTE_ADDR": remote_addr},
    ) as ctx:
        return action(ctx.request)


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: bytes

    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.body.decode(), keep_blank_values=True, strict_parsing=True)

    def json(self) -> Any:
        return json.loads(self.body)


class FakeProviderServer:
    """A provider's API on 127.0.0.1: records each request and gives the answer it is told to."""

    def __init__(self) -> None:
        self.requests: list[RecordedRequest] = []
        self.status, self.body, self.content_type = 200, "", "text/plain"
        self.headers: dict[str, str] = {}
        self.delay = 0.0
        self._closing = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def answer(
        self,
        status: int,
        body: str = "",
        content_type: str = "text/plain",
        headers: dict[str, str] | None = None,
    ) -> None:
        self.status, self.body, self.content_type = status, body, content_type
        self.headers = dict(headers or {})

    def close(self) -> None:
        self._closing.set()  # releases handlers still sleeping out a delay
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                fake.requests.append(
                    RecordedRequest(
                        method=self.command,
                        path=self.path,
                        headers={k.lower(): v for k, v in self.headers.items()},
                        body=self.rfile.read(length),
                    )
                )
                if fake.delay and fake._closing.wait(fake.delay):
                    return  # the client gave up long ago: writing would only break the pipe
                payload = fake.body.encode()
                self.send_response(fake.status)
                self.send_header("Content-Type", fake.content_type)
                self.send_header("Content-Length", str(len(payload)))
                for name, value in fake.headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST  # Kannel's sendsms takes the MT as a GET query

            def log_message(self, format: str, *args: object) -> None:
                pass  # keep test output quiet

        return Handler


def on_request(request: RawRequest, action: Callable[[flask.Request], T]) -> T:
    """Run ``action`` on ``request`` (byte for byte) as Flask hands it to the webhook view."""
    headers = {**request.headers, "Content-Length": str(len(request.body))}
    if request.content_type:
        headers["Content-Type"] = request.content_type
    with _app.test_request_context(
        request.path,
        method=request.method,
        input_stream=io.BytesIO(request.body),
        headers=headers,
        environ_overrides={"QUERY_STRING": request.query},
    ) as ctx:
        return action(ctx.request)


def parsed(request: RawRequest) -> tuple[Any, Any]:
    """The request's form and query as Flask will hand them to the webhook view (a query that
    is not UTF-8 reads as empty: the view refuses it before any signature counts)."""
    headers = {**request.headers, "Content-Length": str(len(request.body))}
    if request.content_type:
        headers["Content-Type"] = request.content_type
    with _app.test_request_context(
        request.path,
        method=request.method,
        input_stream=io.BytesIO(request.body),  # byte for byte, whatever the content type
        headers=headers,
        environ_overrides={"QUERY_STRING": request.query},
    ) as ctx:
        try:
            args = ctx.request.args
        except UnicodeDecodeError:
            args = MultiDict()
        return ctx.request.form, args


def open_raw(client: Any, request: RawRequest) -> Any:
    """Send ``request`` byte for byte through a Flask test client."""
    headers = {**request.headers, "Content-Length": str(len(request.body))}
    if request.content_type:
        headers["Content-Type"] = request.content_type
    return client.open(
        request.path,
        method=request.method,
        input_stream=io.BytesIO(request.body),
        headers=headers,
        environ_overrides={"QUERY_STRING": request.query},
    )


def public_url(base_url: str, request: RawRequest) -> str:
    """The URL the provider called, as it saw it (what URL-signing providers sign)."""
    url = base_url.rstrip("/") + request.path
    return f"{url}?{request.query}" if request.query else url
