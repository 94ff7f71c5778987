"""The HTTP server that runs the API: uvicorn (h11) with connection-level limits, configured in one place.

:func:`server_config` builds the ``uvicorn.Config`` that ``agentmarket serve``, the demo, the
benchmark and the tests run, so every one of them gets the same limits. What it adds to uvicorn
(whose own defaults hold a connection forever while it sends nothing, or half a request head):

- **head timeout**: a connection has ``head_timeout`` seconds, from its opening or from the end of
  its previous response, to send a whole request head; then it is answered 408 ``head_timeout``
  (if it sent part of one) and closed. The deadline is not pushed back by each byte, so a head
  trickled slowly (slowloris) is cut off as surely as a silent one. The head's size is bounded
  too (``max_header_bytes``: 431 ``headers_too_large``, even while it is still arriving).
- **connection cap, and each client's share of it**: at most ``max_connections`` connections, and at
  most ``max_connections_per_client`` from one client (its IP address; for IPv6, its /64 network: the
  peer's address, never ``X-Forwarded-For``). A new connection over either cap makes room by closing,
  first, the connection that has waited longest for a request head (idle), else the connection whose
  request body is arriving slowest (answered 503 ``too_many_connections``: no work was done for it yet)
  — among the new client's own connections when its share is full, else among those of the client
  holding the most. A request whose body has arrived is never closed for room; when there is nothing
  else to close, the new connection is answered 503 ``too_many_connections`` and closed. So one client
  holding slow bodies on every connection it may open (each one byte, then silence) takes its share at
  most, and every new connection, even from the same address, is served before its bodies are.
- **unread bodies**: after an answer sent before the request body was read (a refusal, a 401),
  the rest of the body is read and discarded for at most ``body_timeout`` seconds, then the
  connection is closed.
- **stalled responses**: a response whose client reads nothing for ``send_timeout`` seconds (the
  transport's buffer stays full) has its connection dropped.
- **errors as JSON**: malformed HTTP gets 400 ``bad_request`` (431 for an oversized head) as JSON
  ``{"error", "detail"}`` instead of uvicorn's plain text, and a parser failure uvicorn does not
  expect is answered the same way rather than logged as a crash.

Per-request limits (bodies, JSON depth, header counts, body time) are the app's own middleware:
:mod:`marketplace.api.limits`.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import ipaddress
import socket
import struct
from dataclasses import dataclass
from typing import Any

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from marketplace.api.errors import error_body, log_unexpected
from marketplace.api.limits import BODY_BUFFERED
from marketplace.api.settings import Settings


@dataclass(frozen=True)
class ConnectionLimits:
    """The connection-level limits (sizes in bytes, times in seconds; defaults: :class:`Settings`)."""

    max_header_bytes: int
    head_timeout: float
    body_timeout: float
    send_timeout: float
    max_connections: int
    max_connections_per_client: int

    @classmethod
    def from_settings(cls, settings: Settings) -> ConnectionLimits:
        """The limits ``settings`` name (``AGENTMARKET_HEAD_TIMEOUT`` and the rest)."""
        return cls(
            max_header_bytes=settings.max_header_bytes,
            head_timeout=settings.head_timeout,
            body_timeout=settings.body_timeout,
            send_timeout=settings.send_timeout,
            max_connections=settings.max_connections,
            max_connections_per_client=settings.max_connections_per_client,
        )


class GatewayConfig(uvicorn.Config):
    """A ``uvicorn.Config`` that carries the :class:`ConnectionLimits` its protocol enforces."""

    def __init__(self, app: Any, *, connection_limits: ConnectionLimits, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self.connection_limits = connection_limits


def server_config(app: FastAPI, *, port: int | None = None, **overrides: Any) -> GatewayConfig:
    """The uvicorn configuration to serve ``app`` (made by ``create_app``) with its settings' limits.

    Host and port come from the app's settings (``port`` overrides the port; 0 picks a free one).
    One process, the h11 parser with :class:`GatewayProtocol`, no WebSocket upgrades (the API has
    none), no trust in ``X-Forwarded-For``, access log off (warnings and errors only), requests still
    in flight cancelled ``shutdown_timeout`` seconds after a shutdown began.
    ``overrides`` go to ``uvicorn.Config`` last.
    Raises ``ValueError`` for an app that ``create_app`` did not make.
    """
    settings = getattr(app.state, "settings", None)
    if not isinstance(settings, Settings):
        raise ValueError("serve an app made by marketplace.api.create_app (its settings hold the limits)")
    options: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port if port is None else port,
        "http": GatewayProtocol,
        "ws": "none",
        "lifespan": "on",
        "log_level": "warning",
        # X-Forwarded-For is not trusted (uvicorn trusts it from 127.0.0.1 by default): a local client
        # could otherwise pose as any address and slip past the per-client login-nonce cap.
        "proxy_headers": False,
        "h11_max_incomplete_event_size": settings.max_header_bytes,
        "timeout_graceful_shutdown": settings.shutdown_timeout,
        **overrides,
    }
    return GatewayConfig(app, connection_limits=ConnectionLimits.from_settings(settings), **options)


def client_network(host: str | None) -> str:
    """Who a peer is, for per-client limits: its IP address; for IPv6 its /64 network (an IPv4-mapped
    address: the IPv4 address); anything that is no IP address (a Unix socket): itself, or ``"unknown"``."""
    try:
        ip = ipaddress.ip_address(host or "")
    except ValueError:
        return (host or "")[:64] or "unknown"
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class _Connection(h11.Connection):
    """h11's connection state, remembering the last protocol error it raised (for its status)."""

    last_error: h11.RemoteProtocolError | None = None

    def next_event(self) -> Any:
        try:
            return super().next_event()
        except h11.RemoteProtocolError as exc:
            self.last_error = exc
            raise


class GatewayProtocol(H11Protocol):
    """uvicorn's h11 protocol with the connection-level limits of the module docstring."""

    def __init__(self, config: uvicorn.Config, *args: Any, **kwargs: Any) -> None:
        super().__init__(config, *args, **kwargs)
        limits = getattr(config, "connection_limits", None)  # (a plain uvicorn.Config: the settings' defaults)
        self.limits: ConnectionLimits = limits or ConnectionLimits.from_settings(Settings())
        self.conn = _Connection(h11.SERVER, self.limits.max_header_bytes)
        self._deadline: asyncio.TimerHandle | None = None
        self._deadline_kind: str | None = None
        self._stall: asyncio.TimerHandle | None = None
        #: Since when this connection has waited for a request head (the eviction order).
        self.waiting_since = self.loop.time()
        #: The client it belongs to (see :func:`client_network`), set when the connection is made.
        self.peer_network = "unknown"
        self._refused = False
        #: The request whose body is being counted, since when, and the body bytes received so far.
        self._counted_cycle: Any = None
        self._body_since = 0.0
        self._body_bytes = 0

    # ------------------------------------------------------------------ asyncio.Protocol

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        peer = transport.get_extra_info("peername")
        self.peer_network = client_network(peer[0] if isinstance(peer, tuple) and peer else None)
        others = [c for c in self.connections if c is not self and isinstance(c, GatewayProtocol) and c.open()]
        own = [c for c in others if c.peer_network == self.peer_network]
        share = self.limits.max_connections_per_client
        if len(own) >= share:  # room within its own share (the server's total does not grow)
            if not self._make_room(own):
                self._refuse_connection(
                    f"this client already has {len(own)} connections open, its share of the server "
                    f"(AGENTMARKET_MAX_CONNECTIONS_PER_CLIENT = {share}), each with a request in flight; retry when "
                    f"one is answered"
                )
                return
        elif len(others) >= self.limits.max_connections and not self._make_room(others):
            self._refuse_connection("the server has too many connections open; retry in a moment")
            return
        self._watch()

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        counting = self.cycle is not None and self.cycle is self._counted_cycle
        try:
            super().data_received(data)
        except Exception as exc:  # a parser failure uvicorn does not catch would be logged as a crash
            log_unexpected(exc, "the HTTP parser")
            self._answer_and_close(400, "bad_request", "the request is not valid HTTP/1.1")
            return
        cycle = self.cycle
        if counting:
            self._body_bytes += len(data)
        elif cycle is not None and cycle is not self._counted_cycle:  # a new request: its body starts now
            self._counted_cycle, self._body_since, self._body_bytes = cycle, self.loop.time(), 0
        if cycle is not None and not cycle.more_body and not cycle.response_started:
            cycle.scope[BODY_BUFFERED] = True  # type: ignore[literal-required]  # (read by the limits middleware)
        self._watch()

    def connection_lost(self, exc: Exception | None) -> None:
        self._set_deadline(None)
        self._cancel_stall()
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        super().pause_writing()
        if self._stall is None:
            self._stall = self.loop.call_later(self.limits.send_timeout, self._stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._cancel_stall()

    # ------------------------------------------------------------------ uvicorn hooks

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self.waiting_since = self.loop.time()
        self._watch()

    def send_400_response(self, msg: str) -> None:
        error = getattr(self.conn, "last_error", None)
        if error is not None and error.error_status_hint == 431:
            detail = f"the request head (request line and headers) is larger than {self.limits.max_header_bytes} bytes"
            self._answer_and_close(431, "headers_too_large", detail)
            return
        reason = str(error)[:200] if error is not None else msg
        self._answer_and_close(400, "bad_request", f"the request is not valid HTTP/1.1: {reason}")

    def _unsupported_upgrade_warning(self) -> None:
        pass  # the API has no WebSocket routes: an Upgrade header is ignored and the request served as HTTP

    # ------------------------------------------------------------------ limits

    def open(self) -> bool:
        """True unless the connection is being closed (or was refused)."""
        return not (self._refused or self.transport.is_closing())

    def idle(self) -> bool:
        """True if no request is in flight: the connection waits for a head (or has part of one), or
        discards the unread rest of a body already answered."""
        return (self.cycle is None or self.cycle.response_complete) and self.open()

    def receiving(self) -> bool:
        """True if a request's body is still arriving and nothing was answered yet: the app waits for the
        body, so no work was done for the request (the invoke route runs a model only on a whole body)."""
        cycle = self.cycle
        return cycle is not None and cycle.more_body and not cycle.response_started and self.open()

    def body_rate(self) -> float:
        """Bytes per second of the body arriving (see :meth:`receiving`), since its request head."""
        return self._body_bytes / max(self.loop.time() - self._body_since, 1e-3)

    def _make_room(self, candidates: list[GatewayProtocol]) -> bool:
        """Close one of ``candidates`` (open connections) to make room: the one that has waited longest for a
        head, else the slowest body of the client holding most of them (answered 503); False if every one has
        a request in flight."""
        waiting = [c for c in candidates if c.idle()]
        if waiting:
            min(waiting, key=lambda c: c.waiting_since).transport.close()
            return True
        receiving = [c for c in candidates if c.receiving()]
        if not receiving:
            return False
        held: dict[str, int] = {}
        for connection in candidates:
            held[connection.peer_network] = held.get(connection.peer_network, 0) + 1
        hog = max(receiving, key=lambda c: held[c.peer_network]).peer_network
        slowest = min((c for c in receiving if c.peer_network == hog), key=lambda c: (c.body_rate(), c._body_since))
        slowest._refused = True
        slowest._answer_and_close(
            503,
            "too_many_connections",
            "this connection was closed to make room for another: its request body was arriving slowest while the "
            "server, or this client's share of it, was full; send the body at once and retry",
        )
        return True

    def _refuse_connection(self, detail: str) -> None:
        self._refused = True
        self._answer_and_close(503, "too_many_connections", detail)

    def _watch(self) -> None:
        """Arm the deadline the connection's state calls for: a whole head within ``head_timeout``
        while waiting for one, the rest of an unread body within ``body_timeout`` after an answer;
        none while a request is in flight (the app's middleware times bodies)."""
        kind = None
        if not self.transport.is_closing():
            their_state = self.conn.their_state
            if their_state is h11.IDLE:
                kind = "head"
            elif their_state is h11.SEND_BODY and self.cycle is not None and self.cycle.response_complete:
                kind = "drain"
        if kind != self._deadline_kind:
            self._set_deadline(kind)

    def _set_deadline(self, kind: str | None) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
        self._deadline, self._deadline_kind = None, kind
        if kind is not None:
            delay = self.limits.head_timeout if kind == "head" else self.limits.body_timeout
            self._deadline = self.loop.call_later(delay, self._deadline_passed, kind)

    def _deadline_passed(self, kind: str) -> None:
        self._deadline, self._deadline_kind = None, None
        if self.transport.is_closing():
            return
        if kind == "head" and self.conn.their_state is h11.IDLE and self.idle() and self.conn.trailing_data[0]:
            detail = f"the request head did not arrive within {self.limits.head_timeout:g} s"
            self._answer_and_close(408, "head_timeout", detail)
        else:  # idle (nothing sent: closed quietly, as on a keep-alive timeout), or an unread body
            self.transport.close()

    def _stalled(self) -> None:
        self._stall = None
        sock = self.transport.get_extra_info("socket")
        if sock is not None:  # reset, so that the kernel does not keep sending the buffered answer either
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.transport.abort()  # close() would wait for the client to read what is buffered

    def _cancel_stall(self) -> None:
        if self._stall is not None:
            self._stall.cancel()
            self._stall = None

    def _answer_and_close(self, status: int, code: str, detail: str) -> None:
        """Write a whole JSON error response (whatever h11's state) and close the connection."""
        body = error_body(code, detail)
        head = (
            f"HTTP/1.1 {status} {http.HTTPStatus(status).phrase}\r\ncontent-type: application/json\r\n"
            f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
        )
        if not self.transport.is_closing():
            self.transport.write(head.encode("ascii") + body)
            self.transport.close()
