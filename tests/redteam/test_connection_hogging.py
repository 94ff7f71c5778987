"""Hostile payer (who pays nothing): one client holds every connection slot of the gateway.

The gateway caps connections (`AGENTMARKET_MAX_CONNECTIONS`, 512) and, when full, evicts an *idle*
connection or answers 503 `too_many_connections` if every one has a request in flight. A request whose
body is still arriving counts as in flight, and a body may pause up to `AGENTMARKET_BODY_TIMEOUT` (10 s)
before its rate is judged. So one unauthenticated client opens 512 connections, sends on each the head
of a `POST /v1/auth/nonce` announcing a 1 MB body and one byte of it, and then nothing: for ten seconds
every other client gets 503, and reconnecting every ten seconds keeps it so — about 50 new connections a
second and no bandwidth. There is no per-client share of the connection cap (the login-nonce cap has one).
Expected: one peer cannot take every slot (a per-client connection cap, or evicting the slowest body of
the client holding most); another client is served while it tries.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator

import httpx
import pytest

from marketplace.api import Settings
from tests.helpers.chain import anvil_market
from tests.helpers.servers import server_app, serving

pytestmark = pytest.mark.backend("anvil")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory) -> Iterator[str]:
    with (
        anvil_market() as (chain, deployment, _market),
        serving(server_app(deployment, chain, tmp_path_factory.mktemp("hog"))) as url,
    ):
        yield url


def test_one_client_cannot_take_every_connection(gateway):
    host, port = gateway.removeprefix("http://").split(":")
    slots = Settings().max_connections  # the default the server runs with
    held: list[socket.socket] = []
    head = (f"POST /v1/auth/nonce HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            "Content-Length: 1000000\r\n\r\n{").encode()  # fmt: skip
    try:
        for _ in range(slots):
            sock = socket.create_connection((host, int(port)))
            sock.sendall(head)
            held.append(sock)
        time.sleep(0.5)
        try:
            answer = httpx.get(f"{gateway}/healthz", timeout=5)
            outcome = f"HTTP {answer.status_code} {answer.text[:120]}"
        except httpx.HTTPError as exc:
            answer, outcome = None, f"{type(exc).__name__}: {exc}"
    finally:
        for sock in held:
            sock.close()
    assert answer is not None and answer.status_code == 200, (
        f"one client holding {slots} half-sent request bodies (one byte each) locks everyone else out: {outcome}"
    )
