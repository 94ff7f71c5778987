"""A scriptable gateway: a real HTTP server on 127.0.0.1 whose answers a test writes by hand (lies, JSON
nested too deep, bodies that never end), with plain http.server so nothing of the product runs on its side."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

#: JSON nested 100,000 levels deep (200 KB).
DEEP = b"[" * 100_000 + b"]" * 100_000
#: Sent until the client hangs up (or this many bytes: 1 GiB).
HUGE = 1 << 30


Script = Callable[[BaseHTTPRequestHandler], None]


class Scripted:
    """A real HTTP server on 127.0.0.1 answering ``"METHOD /path"`` with the script a test gives (else
    ``fallback``, else 404 JSON); a script finds the request's body in ``handler.body``. ``requests`` lists
    what it received: (method, path, headers, body)."""

    def __init__(self, routes: dict[str, Script], fallback: Script | None = None) -> None:
        self.routes, self.fallback = routes, fallback
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.sent_bytes = 0
        gateway = self

        class Handler(BaseHTTPRequestHandler):
            def _any(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                path = self.path.split("?", 1)[0]
                gateway.requests.append((self.command, path, dict(self.headers), body))
                self.body = body
                script = gateway.routes.get(f"{self.command} {path}", gateway.fallback)
                if script is None:
                    answer(404, b'{"error": "not_found", "detail": "no such route"}')(self)
                else:
                    script(self)

            do_GET = do_POST = do_PUT = _any

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def received(self, method: str, path: str) -> list[bytes]:
        """The bodies of the requests received on ``method path``."""
        return [body for m, p, _, body in self.requests if (m, p) == (method, path)]

    def __enter__(self) -> Scripted:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def answer(status: int, body: bytes, headers: dict[str, str] | None = None) -> Script:
    """A whole answer: ``status``, JSON ``body``, ``headers``."""

    def script(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)

    return script


def endless(gateway: Scripted, *, announce: bool) -> Script:
    """A 200 whose body is 1 GiB of JSON-ish bytes (``announce``: with that Content-Length; else read until
    the connection closes), written until the client hangs up; counts what it managed to send."""

    def script(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        if announce:
            handler.send_header("Content-Length", str(HUGE))
        handler.end_headers()
        chunk = b"[" + b"0," * 32_767 + b"0"
        try:
            while gateway.sent_bytes < HUGE:
                handler.wfile.write(chunk)
                gateway.sent_bytes += len(chunk)
        except OSError:  # the client hung up
            pass
        handler.close_connection = True

    return script
