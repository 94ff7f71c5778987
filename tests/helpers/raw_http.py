"""HTTP/1.1 over raw sockets: what a server sent, taken apart by hand (no client library smoothing it over)."""

from __future__ import annotations

import contextlib
import json
import socket


def read_all(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (or the socket's timeout)."""
    data = b""
    with contextlib.suppress(TimeoutError, ConnectionResetError):
        while chunk := sock.recv(65536):
            data += chunk
    return data


def response_parts(raw: bytes) -> tuple[int, dict[str, str], bytes]:
    """Status, headers and body of the first response in ``raw`` (bodies with Content-Length only)."""
    assert raw.startswith(b"HTTP/1.1 "), raw[:200]
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, rest[: int(headers.get("content-length", len(rest)))]


def json_error(raw: bytes, *secrets: str) -> tuple[int, str]:
    """Status and error code of a JSON error answer (and that it is one, without a traceback or any of ``secrets``)."""
    status, headers, body = response_parts(raw)
    assert headers.get("content-type", "").startswith("application/json"), (status, headers, body[:300])
    payload = json.loads(body)
    assert set(payload) == {"error", "detail"} and payload["detail"], payload
    assert "Traceback" not in payload["detail"] and not any(secret in payload["detail"] for secret in secrets)
    return status, payload["error"]
