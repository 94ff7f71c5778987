"""Request limits: what one HTTP request may cost the server, checked before the app sees it.

:class:`RequestLimits` is a pure ASGI middleware that ``create_app`` adds: it runs for every
request, before routing. Per request it bounds

- the head: at most ``max_headers`` header lines and ``max_header_bytes`` of request target plus
  header names and values (431 ``headers_too_large``);
- JSON nesting depth, before any ``json.loads`` runs: in the body (422 ``json_too_deep``) and in
  the headers that carry base64 JSON, ``X-Payment-Channel`` and ``PAYMENT-SIGNATURE`` (400
  ``json_too_deep``). Python's C JSON decoder recurses once per level and, once an imported
  library (py_ecc) has raised the recursion limit to 100,000, overflows the C stack on deep input
  instead of raising: the process dies. A non-recursive scan runs first
  (:func:`marketplace.protocol.jsonlimits.too_deep`, shared with the SDK, which reads responses the same way);
- body size: ``Content-Length`` is checked before a byte is read and streamed bytes are counted
  (413 ``body_too_large``; ``content_too_large`` on the upload route, whose limit is
  ``max_upload_bytes`` and whose body stays streaming). Every other body is read whole (it is
  small) and scanned, then replayed to the app;
- body time: each wait for the next piece is at most ``body_timeout`` seconds, and the time spent
  waiting may not exceed ``body_timeout + received / body_min_rate`` (408 ``body_timeout``). A
  body the HTTP server marks as already received (:data:`BODY_BUFFERED`) is read without a timer.

A refusal is answered right away (JSON ``{"error", "detail"}``); the app, if it was reading, is
then told the client disconnected, and whatever it sends afterwards is dropped. An exception the
app does not handle becomes a JSON 500 (``internal``), and the log gets its type and stack frames
but not its message, which may quote request data (tokens, signatures).

Connection-level limits (half-sent heads, the connection cap, stalled responses) are in
:mod:`marketplace.api.server`: they act before a request reaches ASGI.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from marketplace.api.errors import error_body, log_unexpected
from marketplace.api.settings import Settings
from marketplace.payments.channels import HEADER as CHANNEL_HEADER
from marketplace.payments.x402 import PAYMENT_SIGNATURE_HEADER
from marketplace.protocol.jsonlimits import header_too_deep, too_deep

#: Headers whose value is base64 JSON that a route decodes (lower case, as ASGI gives them).
JSON_HEADERS = (CHANNEL_HEADER.lower().encode(), PAYMENT_SIGNATURE_HEADER.lower().encode())

#: Scope key an HTTP server may set (``marketplace.api.server`` does) when the whole request body
#: arrived with its head: then reading it cannot wait on the client, and is not timed.
BODY_BUFFERED = "agentmarket.body_buffered"


@dataclass(frozen=True)
class Limits:
    """The per-request limits (sizes in bytes, times in seconds, rates in bytes per second;
    defaults: :class:`Settings`)."""

    max_body_bytes: int
    max_upload_bytes: int
    max_json_depth: int
    max_header_bytes: int
    max_headers: int
    body_timeout: float
    body_min_rate: int

    @classmethod
    def from_settings(cls, settings: Settings) -> Limits:
        """The limits ``settings`` name (``AGENTMARKET_MAX_BODY_BYTES`` and the rest)."""
        return cls(
            max_body_bytes=settings.max_body_bytes,
            max_upload_bytes=settings.max_upload_bytes,
            max_json_depth=settings.max_json_depth,
            max_header_bytes=settings.max_header_bytes,
            max_headers=settings.max_headers,
            body_timeout=settings.body_timeout,
            body_min_rate=settings.body_min_rate,
        )


class Refusal(Exception):
    """A request refused by a limit: status, machine code, human sentence."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


class _Exchange:
    """One request's answer: whether it started, and a refusal sent in the app's place."""

    __slots__ = ("refused", "send", "started")

    def __init__(self, send: Send) -> None:
        self.send, self.started, self.refused = send, False, False

    async def app_send(self, message: Message) -> None:
        """The ``send`` given to the app: passes its messages on unless a refusal was sent."""
        if self.refused:
            return
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)

    async def refuse(self, refusal: Refusal) -> None:
        """Answer with ``refusal`` unless an answer already started (then the app's stands)."""
        if self.started or self.refused:
            return
        self.refused = True
        body = error_body(refusal.code, refusal.detail)
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        await self.send({"type": "http.response.start", "status": refusal.status, "headers": headers})
        await self.send({"type": "http.response.body", "body": body, "more_body": False})


class _MeteredBody:
    """The request body as the app receives it, with the size and time limits applied."""

    __slots__ = ("code", "done", "exchange", "expired", "limit", "limits", "receive", "received", "waited")

    def __init__(self, receive: Receive, limits: Limits, limit: int, code: str, exchange: _Exchange) -> None:
        self.receive, self.limits, self.limit, self.code, self.exchange = receive, limits, limit, code, exchange
        self.received, self.waited, self.done, self.expired = 0, 0.0, False, False

    async def next(self) -> Message:
        """The next body message; raises :class:`Refusal` when a limit is broken."""
        limits = self.limits
        allowance = limits.body_timeout + self.received / limits.body_min_rate - self.waited
        wait = min(limits.body_timeout, allowance)
        if wait <= 0:
            raise self._too_slow()
        loop = asyncio.get_running_loop()
        started = loop.time()
        task = asyncio.current_task()
        assert task is not None
        timer = loop.call_at(started + wait, self._expire, task)
        try:
            message = await self.receive()
        except asyncio.CancelledError:
            if not self.expired or task.uncancel():
                raise  # cancelled from elsewhere
            raise self._too_slow() from None
        finally:
            timer.cancel()
        self.waited += loop.time() - started
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self.limit:
                raise Refusal(413, self.code, f"the request body is larger than the limit of {self.limit} bytes")
            self.done = not message.get("more_body", False)
        else:
            self.done = True  # http.disconnect
        return message

    async def app_receive(self) -> Message:
        """The ``receive`` given to the app (streaming routes): a refusal is answered at once and the
        app is told the client left."""
        if self.exchange.refused:
            return {"type": "http.disconnect"}
        if self.done:  # the whole body arrived: what follows is the disconnect the app may wait for
            return await self.receive()
        try:
            return await self.next()
        except Refusal as refusal:
            await self.exchange.refuse(refusal)
            self.done = True
            return {"type": "http.disconnect"}

    def _expire(self, task: asyncio.Task[Any]) -> None:
        self.expired = True
        task.cancel()

    def _too_slow(self) -> Refusal:
        limits = self.limits
        return Refusal(
            408,
            "body_timeout",
            f"the request body arrived too slowly (after {self.received} bytes): send it without pauses longer "
            f"than {limits.body_timeout:g} s and at {limits.body_min_rate} bytes/s or more",
        )


class RequestLimits:
    """ASGI middleware applying :class:`Limits` to every HTTP request (see the module docstring).

    ``is_upload(method, path)`` names the streaming upload route(s): their body limit is
    ``max_upload_bytes``, their body is not read ahead nor scanned for JSON.
    """

    def __init__(self, app: ASGIApp, *, limits: Limits, is_upload: Callable[[str, str], bool]) -> None:
        self.app, self.limits, self.is_upload = app, limits, is_upload

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = _Exchange(send)
        try:
            app_receive = await self._admit(scope, receive, exchange)
            await self.app(scope, app_receive, exchange.app_send)
        except Refusal as refusal:
            await exchange.refuse(refusal)
        except ClientDisconnect:
            return  # the client left (or was cut off by a refusal, which it has already received)
        except Exception as exc:
            if exchange.refused:
                return  # the app failed because it was cut off: the caller already has its answer
            log_unexpected(exc, f"{scope['method']} {scope['path']}")
            await exchange.refuse(Refusal(500, "internal", "the server failed; see its log"))

    async def _admit(self, scope: Scope, receive: Receive, exchange: _Exchange) -> Receive:
        """Check the head and, for a non-streaming route, read and check the body; the ``receive``
        the app gets. Raises :class:`Refusal`."""
        limits = self.limits
        headers: list[tuple[bytes, bytes]] = scope["headers"]
        self._check_head(scope, headers)
        length: int | None = None
        chunked = False
        for name, value in headers:
            if name == b"content-length":
                length = _content_length(value)
            elif name == b"transfer-encoding":
                chunked = True
            elif name in JSON_HEADERS and header_too_deep(value, limits.max_json_depth):
                raise Refusal(
                    400,
                    "json_too_deep",
                    f"the {name.decode()} header nests JSON deeper than {limits.max_json_depth} levels",
                )
        if not chunked and not length:
            return receive  # no body
        if self.is_upload(scope["method"], scope["path"]):
            _check_length(length, limits.max_upload_bytes, "content_too_large")
            return _MeteredBody(receive, limits, limits.max_upload_bytes, "content_too_large", exchange).app_receive
        _check_length(length, limits.max_body_bytes, "body_too_large")
        if scope.get(BODY_BUFFERED) and length is not None:  # it came with the head: no waiting, no timer
            message = await receive()
            body = message.get("body", b"") if message["type"] == "http.request" else b""
            if len(body) != length or message.get("more_body"):
                raise Refusal(400, "body_incomplete", "the request body is not the length Content-Length announced")
        else:
            body = await _read_whole(_MeteredBody(receive, limits, limits.max_body_bytes, "body_too_large", exchange))
        if too_deep(body, limits.max_json_depth):
            raise Refusal(
                422, "json_too_deep", f"the request body nests JSON deeper than {limits.max_json_depth} levels"
            )
        return _replay(body, receive)

    def _check_head(self, scope: Scope, headers: list[tuple[bytes, bytes]]) -> None:
        limits = self.limits
        if len(headers) > limits.max_headers:
            raise Refusal(431, "headers_too_large", f"the request has more than {limits.max_headers} header lines")
        size = len(scope.get("raw_path") or b"") + len(scope.get("query_string") or b"")
        size += sum(len(name) + len(value) for name, value in headers)
        if size > limits.max_header_bytes:
            raise Refusal(
                431, "headers_too_large", f"the request target and headers exceed {limits.max_header_bytes} bytes"
            )


def _content_length(value: bytes) -> int:
    if not value.isdigit() or len(value) > 18:  # (the HTTP server checked the syntax; this is a backstop)
        raise Refusal(400, "bad_content_length", "Content-Length must be a decimal number of bytes below 10**18")
    return int(value)


def _check_length(length: int | None, limit: int, code: str) -> None:
    if length is not None and length > limit:
        raise Refusal(413, code, f"the request body ({length} bytes) is larger than the limit of {limit} bytes")


async def _read_whole(body: _MeteredBody) -> bytes:
    pieces: list[bytes] = []
    while not body.done:
        message = await body.next()
        if message["type"] != "http.request":
            raise Refusal(400, "body_incomplete", "the client closed the connection before sending the whole body")
        pieces.append(message.get("body", b""))
    return b"".join(pieces)


def _replay(body: bytes, receive: Receive) -> Receive:
    """A ``receive`` that gives the app ``body`` in one message, then the real events (disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        if pending:
            return pending.pop()
        return await receive()

    return replay


def upload_matcher(routes: Iterable[Any], endpoints: Iterable[Callable[..., Any]]) -> Callable[[str, str], bool]:
    """``is_upload(method, path)`` for those of ``routes`` (a router's, included without a further
    prefix) whose endpoint is one of ``endpoints``: matched by the routes' own path patterns and
    methods. Raises ``ValueError`` if no route serves them."""
    wanted = set(endpoints)
    patterns = [
        (frozenset(route.methods or ()), route.path_regex)
        for route in routes
        if getattr(route, "endpoint", None) in wanted
    ]
    if not patterns:
        raise ValueError("no route serves the given upload endpoints")

    def is_upload(method: str, path: str) -> bool:
        return any(method in methods and regex.match(path) for methods, regex in patterns)

    return is_upload
