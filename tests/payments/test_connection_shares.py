"""Each client's share of the gateway's connections (red team: one client holding every connection).

The real server (``create_app`` under uvicorn with ``server_config``, as ``agentmarket serve`` runs it) on
127.0.0.1 with a small cap (12 connections, 4 per client). Clients are told apart by the peer's address
only, so the tests connect from different loopback addresses (127.0.0.2, 127.0.0.3, …: all of 127/8 is
the loopback on Linux). A connection whose request body arrives slowly holds a slot but costs no work
yet; one whose request has arrived whole is in flight.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import httpx
import pytest

from marketplace.chain.market import Market
from marketplace.protocol.vouchers import HEADER, VoucherHasher
from tests.helpers.chain import anvil_market, fund, publish_model
from tests.helpers.models import SlowModel
from tests.helpers.raw_http import json_error, read_all
from tests.helpers.servers import server_app, serving

pytestmark = pytest.mark.backend("anvil")

SHARE = 4
CAP = 12
PRICE = 10_000
#: What a hostile client sends on each connection: a head announcing a large body, then one byte of it.
SLOW_BODY = (b"POST /v1/auth/nonce HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
             b"Content-Length: 100000\r\n\r\n{")  # fmt: skip


@dataclass
class Gateway:
    host: str
    port: int
    market: Market
    model: int
    slow: SlowModel

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def connect(self, source: str) -> socket.socket:
        sock = socket.create_connection((self.host, self.port), timeout=10, source_address=(source, 0))
        sock.settimeout(10)
        return sock

    def healthz(self, source: str) -> int:
        transport = httpx.HTTPTransport(local_address=source)
        with httpx.Client(transport=transport, timeout=10) as client:
            return client.get(f"{self.url}/healthz").status_code


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    with anvil_market() as (chain, deployment, market):
        model = publish_model(market, fund(chain, market, 0), PRICE)
        slow = SlowModel(3, lambda _payload: {"ok": True})
        app = server_app(deployment, chain, tmp_path_factory.mktemp("shares"), {model: slow}, max_connections=CAP,
                         max_connections_per_client=SHARE, head_timeout=5, body_timeout=5)  # fmt: skip
        with serving(app) as url:
            host, port = url.removeprefix("http://").split(":")
            yield Gateway(host, int(port), market, model, slow)


@contextlib.contextmanager
def slow_bodies(gateway: Gateway, source: str, count: int) -> Iterator[list[socket.socket]]:
    """``count`` connections from ``source``, each sending SLOW_BODY (then nothing); closed on leaving."""
    socks = []
    try:
        for _ in range(count):
            sock = gateway.connect(source)
            sock.sendall(SLOW_BODY)
            socks.append(sock)
            time.sleep(0.02)  # (in order: the earliest is the slowest)
        time.sleep(0.3)
        yield socks
    finally:
        for sock in socks:
            sock.close()
        time.sleep(0.3)  # (the server sees them go)


def _answered(sock: socket.socket) -> bytes | None:
    """What the server sent on ``sock`` and closed with, or None if it is still open and silent."""
    sock.settimeout(0.2)
    try:
        data = sock.recv(65536)
    except TimeoutError:
        return None
    sock.settimeout(2)
    return data + read_all(sock)


def test_one_client_keeps_to_its_share_and_everyone_else_is_served(gateway):
    with slow_bodies(gateway, "127.0.0.2", 3 * SHARE) as hog:
        answers = [_answered(sock) for sock in hog]
        evicted = [a for a in answers if a is not None]
        assert len(evicted) == 2 * SHARE  # each connection beyond its share closed one of its own slowest
        assert all(json_error(a) == (503, "too_many_connections") for a in evicted)
        assert answers[-SHARE:] == [None] * SHARE  # the ones it holds now are its latest
        for source in ("127.0.0.3", "127.0.0.2"):  # another client, and a new connection from the hog's own address
            assert gateway.healthz(source) == 200
        assert sum(_answered(sock) is None for sock in hog) == SHARE - 1  # the last healthz took one of its slots


def test_a_full_server_closes_the_slowest_body_of_the_client_holding_most(gateway):
    held = {"127.0.0.2": SHARE, "127.0.0.3": 3, "127.0.0.4": 3, "127.0.0.5": 2}  # 12: the server is full
    assert sum(held.values()) == CAP
    with contextlib.ExitStack() as stack:
        socks = {source: stack.enter_context(slow_bodies(gateway, source, n)) for source, n in held.items()}
        assert gateway.healthz("127.0.0.6") == 200  # a new client is served...
        answers = {source: [_answered(sock) for sock in s] for source, s in socks.items()}
        # ... in the slot of the biggest holder's oldest, slowest body
        assert json_error(answers["127.0.0.2"][0]) == (503, "too_many_connections")
        assert answers["127.0.0.2"][1:] == [None] * (SHARE - 1)
        for source in ("127.0.0.3", "127.0.0.4", "127.0.0.5"):
            assert answers[source] == [None] * held[source], source


def test_requests_in_flight_are_never_closed_for_room(gateway):
    chain, market = gateway.market.chain, gateway.market
    payer = fund(chain, market, 1)
    receiver = httpx.get(f"{gateway.url}/v1/payments", timeout=10).json()["payment_channel"]["receiverAuthorizer"]
    market.token.approve(payer, market.channels.address, 100 * PRICE)
    channel = market.channels.open(payer, gateway.model, market.token.address, 100 * PRICE, chain.timestamp() + 3600,
                                   payer.address, receiver_authorizer=receiver)  # fmt: skip
    hasher = VoucherHasher(market.channels.domain)
    sources = [f"127.0.0.{7 + i // SHARE}" for i in range(CAP)]  # three clients, each its whole share
    runs = gateway.slow.runs

    def call(k: int) -> int:
        header = {HEADER: hasher.voucher(payer, channel, k * PRICE).to_header()}
        with httpx.Client(transport=httpx.HTTPTransport(local_address=sources[k - 1]), timeout=30) as client:
            return client.post(f"{gateway.url}/v1/models/{gateway.model}/invoke", json={"input": [k]},
                               headers=header).status_code  # fmt: skip

    with ThreadPoolExecutor(CAP) as pool:
        calls = []
        for k in range(1, CAP + 1):  # in order, so that each voucher covers the calls before it
            calls.append(pool.submit(call, k))
            time.sleep(0.05)
        time.sleep(0.5)  # every call is in its model now: the server is full of requests in flight
        for source, why in (("127.0.0.7", "its share of the server"), ("127.0.0.10", "too many connections open")):
            with gateway.connect(source) as sock:
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = read_all(sock)
            assert json_error(answer) == (503, "too_many_connections") and why.encode() in answer, answer
        assert [c.result() for c in calls] == [200] * CAP  # none was closed for a newcomer
    assert gateway.slow.runs - runs == CAP
    assert gateway.healthz("127.0.0.7") == 200  # and once they are answered, there is room again
