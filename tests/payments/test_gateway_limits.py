"""The gateway survives hostile input (issue 12 §5), attacked over raw sockets on 127.0.0.1.

A real ``agentmarket serve`` process runs against anvil with one-second timeouts (set through the
``AGENTMARKET_*`` variables its settings read) and a small connection cap. Each test sends an
attack, checks the answer (a JSON ``{"error", "detail"}`` with the right status, or a closed
connection), then that the same process still answers ``/healthz`` to another client. The module
ends by checking that the process never died, that its memory did not balloon, and that its log
holds no traceback text, token, key or secret.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount

from marketplace.api.relayer import SETTLEMENT_KEY_FILE
from marketplace.chain import connect
from marketplace.chain.deployment import deploy_all
from marketplace.chain.market import Market
from marketplace.chain.records import AssetKind
from marketplace.chain.units import to_units
from marketplace.payments.channels import HEADER, Voucher
from tests.helpers.cli import AGENTMARKET, free_port
from tests.helpers.raw_http import json_error, read_all, response_parts

pytestmark = pytest.mark.backend("anvil")

REPO = Path(__file__).resolve().parents[2]
PRICE = to_units("0.01")
MAX_CONNECTIONS = 24
MAX_UPLOAD = 2 * 1024 * 1024
#: The limits the server runs with (seconds kept short so the tests are quick).
LIMITS_ENV = {
    "AGENTMARKET_HEAD_TIMEOUT": "1",
    "AGENTMARKET_BODY_TIMEOUT": "1",
    "AGENTMARKET_SEND_TIMEOUT": "1",
    "AGENTMARKET_MAX_CONNECTIONS": str(MAX_CONNECTIONS),
    "AGENTMARKET_MAX_UPLOAD_BYTES": str(MAX_UPLOAD),
    "AGENTMARKET_SETTLE_INTERVAL": "3600",
}
SECRET = "model-secret-3f9c1e"  # what the exploding model's exception says: must never reach a caller or the log
DEEP = 100_000


def exploding_model(_payload: Any) -> Any:
    """A served model whose code fails in a way the route does not expect."""
    raise RuntimeError(f"database password is {SECRET}")


@dataclass
class Gateway:
    """The server under attack and what the tests need to reach past its gates."""

    port: int
    process: subprocess.Popen
    log: Path
    market: Market
    model: int
    channel: int
    session_key: LocalAccount
    token: str
    relayer_key: str
    dataset: int
    owner_token: str
    vouchers: int = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def rss_kib(self) -> int:
        """The server's resident memory, in KiB."""
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")))

    def assert_serving(self) -> None:
        """The process is alive and answers another client."""
        assert self.process.poll() is None, f"the server died\n{self.log.read_text()[-3000:]}"
        health = httpx.get(f"{self.url}/healthz", timeout=10)
        assert health.status_code == 200 and health.json()["status"] == "ok", health.text

    def next_voucher(self) -> str:
        self.vouchers += 1
        amount = self.vouchers * PRICE
        signature = self.market.channels.sign_voucher(self.session_key, self.channel, amount)
        return Voucher(self.channel, amount, signature).to_header()


def _login(url: str, account: LocalAccount) -> str:
    issued = httpx.post(f"{url}/v1/auth/nonce", json={"address": account.address}, timeout=10).json()
    signature = Account.sign_message(encode_defunct(text=issued["message"]), account.key).signature
    verified = httpx.post(f"{url}/v1/auth/verify", timeout=10,
                          json={"message": issued["message"], "signature": "0x" + signature.hex()})  # fmt: skip
    assert verified.status_code == 200, verified.text
    return verified.json()["token"]


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    home = tmp_path_factory.mktemp("gateway")
    with contextlib.closing(connect("anvil")) as chain:
        admin, payer, provider, session_key = (chain.accounts[i] for i in (0, 1, 2, 6))
        deployment = deploy_all(chain, admin)
        market = deployment.market(chain)
        model = market.marketplace.publish(
            provider, kind=AssetKind.MODEL, content_hash=b"\x09" * 32, uri="ipfs://boom", price=PRICE,
            token=market.token.address, payees=[(provider.address, 10_000)],
        )  # fmt: skip
        dataset = market.marketplace.publish(
            provider, kind=AssetKind.DATASET, content_hash=b"\x0a" * 32, uri="ipfs://data", price=PRICE,
            token=market.token.address, payees=[(provider.address, 10_000)],
        )  # fmt: skip
        market.token.mint(admin, payer.address, to_units(10))
        market.token.approve(payer, market.channels.address, to_units(10))
        port, log = free_port(), home / "server.log"
        command = [*AGENTMARKET, "serve", "--rpc", chain.rpc_url, "--manifest", str(deployment.save(home / "d.json")),
                   "--port", str(port), "--data-dir", str(home / "server"),
                   "--model", f"{model}=tests.payments.test_gateway_limits:exploding_model"]  # fmt: skip
        env = {**os.environ, **LIMITS_ENV, "PYTHONPATH": str(REPO)}
        with log.open("wb") as out:
            process = subprocess.Popen(command, cwd=home, env=env, stdout=out, stderr=subprocess.STDOUT)
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                with contextlib.suppress(httpx.HTTPError):
                    if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                        break
                time.sleep(0.1)
            # The gateway settles with its own key, made in its data directory (it must never reach the log).
            settlement_key = "0x" + (home / "server" / SETTLEMENT_KEY_FILE).read_bytes().hex()
            receiver = httpx.get(f"{url}/v1/payments", timeout=10).json()["payment_channel"]["receiverAuthorizer"]
            assert receiver == Account.from_key(settlement_key).address
            channel = market.channels.open(payer, model, market.token.address, to_units(10),
                                           chain.timestamp() + 86_400, session_key.address,
                                           receiver_authorizer=receiver)  # fmt: skip
            yield Gateway(port=port, process=process, log=log, market=market, model=model, channel=channel,
                          session_key=session_key, token=_login(url, payer), relayer_key=settlement_key,
                          dataset=dataset, owner_token=_login(url, provider))  # fmt: skip
        finally:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)


# ---------------------------------------------------------------------- raw HTTP


def _connect(gateway: Gateway, timeout: float = 10) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", gateway.port), timeout=timeout)
    sock.settimeout(timeout)
    return sock


def _read_response(sock: socket.socket) -> bytes:
    """One whole response (head and Content-Length body), leaving the connection open."""
    data = b""
    while b"\r\n\r\n" not in data or len(data) < _expected_length(data):
        chunk = sock.recv(65536)
        assert chunk, f"the server closed the connection after {data!r}"
        data += chunk
    return data


def _expected_length(data: bytes) -> int:
    head, _, _ = data.partition(b"\r\n\r\n")
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(head) + 4 + int(value)
    return len(head) + 4


def _error(raw: bytes) -> tuple[int, str]:
    """Status and error code of a JSON error answer (that it is one, without a traceback or the model's secret)."""
    return json_error(raw, SECRET)


def _exchange(gateway: Gateway, request: bytes, timeout: float = 10) -> bytes:
    """Send ``request`` on a fresh connection; the server's first whole answer (or all it sent
    before closing the connection)."""
    with _connect(gateway, timeout) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        data = b""
        with contextlib.suppress(ConnectionResetError):
            while b"\r\n\r\n" not in data or len(data) < _expected_length(data):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        return data


def _request(method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in (headers or {}).items()]
    if body or method in ("POST", "PUT"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


# ---------------------------------------------------------------------- deep JSON


def _deep(levels: int) -> bytes:
    return b'{"address": ' + b"[" * levels + b"]" * levels + b"}"


def test_deep_json_body_is_refused_on_every_json_endpoint_and_the_process_lives(gateway: Gateway):
    paths = [("POST", "/v1/auth/nonce"), ("POST", "/v1/auth/verify"), ("POST", f"/v1/models/{gateway.model}/invoke"),
             ("GET", "/v1/assets"), ("POST", "/v1/no-such-route")]  # fmt: skip
    for method, path in paths:
        answer = _exchange(gateway, _request(method, path, _deep(DEEP), {"Content-Type": "application/json"}))
        assert _error(answer) == (422, "json_too_deep"), (method, path)
        gateway.assert_serving()
    # the same document in another encoding json.loads detects, and without a content type
    utf16 = _deep(DEEP).decode().encode("utf-16-le")
    assert _error(_exchange(gateway, _request("POST", "/v1/auth/nonce", utf16))) == (422, "json_too_deep")
    # brackets inside strings are text, not nesting: a shallow body full of them is a normal request
    shallow = json.dumps({"address": "[" * 5_000}).encode()
    answer = _exchange(gateway, _request("POST", "/v1/auth/nonce", shallow, {"Content-Type": "application/json"}))
    assert _error(answer) == (422, "invalid_request")
    # 64 levels (the default limit) pass the gate: the model route gets the call and asks for payment
    nested = json.dumps({"input": json.loads("[" * 63 + "]" * 63)}).encode()
    answer = _exchange(gateway, _request("POST", f"/v1/models/{gateway.model}/invoke", nested,
                                         {"Content-Type": "application/json"}))  # fmt: skip
    assert response_parts(answer)[0] == 402
    gateway.assert_serving()


def test_deep_json_in_payment_headers_is_refused(gateway: Gateway):
    deep = b"[" * 5_000 + b"]" * 5_000
    invoke = f"/v1/models/{gateway.model}/invoke"
    body = json.dumps({"input": [1]}).encode()
    for header, value in [
        (HEADER, base64.b64encode(deep).decode()),
        (HEADER, base64.urlsafe_b64encode(deep).decode().rstrip("=")),  # as the voucher parser also reads it
        ("PAYMENT-SIGNATURE", base64.b64encode(deep).decode()),
        ("PAYMENT-SIGNATURE", "!".join(base64.b64encode(deep).decode())),  # the x402 SDK skips non-base64 chars
    ]:
        answer = _exchange(gateway, _request("POST", invoke, body, {header: value, "Content-Type": "application/json"}))
        assert _error(answer) == (400, "json_too_deep"), header
    answer = _exchange(gateway, _request("GET", f"/v1/assets/{gateway.dataset}/x402", b"",
                                         {"PAYMENT-SIGNATURE": base64.b64encode(deep).decode()}))  # fmt: skip
    assert _error(answer) == (400, "json_too_deep")
    # a real voucher still pays: the gate lets the call through to the model (which explodes: see below)
    paid = httpx.post(
        f"{gateway.url}{invoke}", json={"input": [1]}, headers={HEADER: gateway.next_voucher()}, timeout=10
    )
    assert paid.status_code == 502
    gateway.assert_serving()


def test_a_failing_handler_answers_json_502_without_its_message(gateway: Gateway):
    answer = httpx.post(f"{gateway.url}/v1/models/{gateway.model}/invoke", json={"input": [1]},
                        headers={HEADER: gateway.next_voucher()}, timeout=10)  # fmt: skip
    assert answer.status_code == 502  # the model failed, not the gateway: model_failed, and not charged
    assert answer.json() == {
        "error": "model_failed",
        "detail": f"model {gateway.model} failed on this input; its operator's log says why; the call was not charged",
    }
    assert SECRET not in answer.text and "Traceback" not in answer.text
    gateway.assert_serving()


# ---------------------------------------------------------------------- body size


def test_declared_oversized_bodies_are_refused_before_a_byte_is_read(gateway: Gateway):
    head = "POST /v1/auth/nonce HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n"
    with _connect(gateway) as sock:
        sock.sendall(head.format(500 * 1024 * 1024).encode())  # 500 MB announced, none sent
        status, code = _error(_read_response(sock))
    assert (status, code) == (413, "body_too_large")
    # Expect: 100-continue: refused without the go-ahead, so the client never sends the body
    with _connect(gateway) as sock:
        sock.sendall(head.format(10**9).replace("\r\n\r\n", "\r\nExpect: 100-continue\r\n\r\n").encode())
        answer = _read_response(sock)
    assert b"100 Continue" not in answer and _error(answer) == (413, "body_too_large")
    # the upload route has its own, larger limit (no login needed to be refused)
    upload = f"PUT /v1/assets/{gateway.dataset}/content HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_UPLOAD + 1}\r\n\r\n"
    with _connect(gateway) as sock:
        sock.sendall(upload.encode())
        assert _error(_read_response(sock)) == (413, "content_too_large")
    gateway.assert_serving()


def _stream_chunked(gateway: Gateway, head: str, seconds: float) -> tuple[bytes, float]:
    """Send a chunked body as fast as the server takes it, for up to ``seconds``; what the server
    answered, and how long it kept taking the body."""
    chunk = b"[1," * 21_845 + b"1]"  # 64 KiB of shallow JSON-ish bytes
    framed = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    with _connect(gateway, timeout=5) as sock:
        sock.sendall(head.encode())
        started = time.monotonic()
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, TimeoutError):
            while time.monotonic() - started < seconds:
                sock.sendall(framed)
        return read_all(sock), time.monotonic() - started


def test_streamed_bodies_stop_at_the_limit_and_memory_stays_flat(gateway: Gateway):
    before = gateway.rss_kib()
    chunked = (
        "POST /v1/auth/nonce HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    )
    upload = (f"PUT /v1/assets/{gateway.dataset}/content HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n"
              f"Authorization: Bearer {gateway.owner_token}\r\n\r\n")  # fmt: skip
    for head, code in [(chunked, "body_too_large"), (chunked, "body_too_large"), (upload, "content_too_large")]:
        answer, took = _stream_chunked(gateway, head, seconds=8)
        assert _error(answer) == (413, code)
        # the server answered at the limit, discarded the rest for body_timeout (1 s), then hung up
        assert took < 5
    grown = gateway.rss_kib() - before
    assert grown < 64 * 1024, f"the server grew by {grown} KiB"
    gateway.assert_serving()


# ---------------------------------------------------------------------- Authorization


@pytest.mark.parametrize(
    "value",
    [
        b"Bearer 0xabc.123.\xe9",
        b"Bearer \xff\xfe",
        "Bearer 0xabc.².mac".encode(),  # a Unicode digit where the expiry goes
        b"Bearer 0xabc." + b"9" * 5_000 + b".mac",  # an expiry too long to be a number
        b"Bearer " + b"A" * 10_000,
        b"Bearer",
        b"Basic dXNlcjpwYXNz",
        b"bearer 0x0000000000000000000000000000000000000000.99999999999.AAAA",
    ],
)
def test_malformed_authorization_is_401(gateway: Gateway, value: bytes):
    request = (f"GET /v1/assets/{gateway.dataset}/content HTTP/1.1\r\nHost: x\r\nAuthorization: ").encode()
    answer = _exchange(gateway, request + value + b"\r\n\r\n")
    assert _error(answer) == (401, "unauthorized")


def test_a_valid_token_still_logs_in_whatever_the_scheme_case(gateway: Gateway):
    answer = httpx.get(f"{gateway.url}/v1/assets/{gateway.dataset}/content", timeout=10,
                       headers={"Authorization": f"bearer {gateway.token}"})  # fmt: skip
    assert (answer.status_code, answer.json()["error"]) == (402, "license_required")  # past the login


# ---------------------------------------------------------------------- time


def test_a_half_sent_head_is_answered_408_and_closed(gateway: Gateway):
    started = time.monotonic()
    with _connect(gateway) as sock:
        sock.sendall(b"POST /v1/auth/nonce HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
        answer = read_all(sock)
    assert _error(answer) == (408, "head_timeout")
    assert 0.8 < time.monotonic() - started < 5
    with _connect(gateway) as sock:  # silent: closed without a word
        started = time.monotonic()
        assert read_all(sock) == b""
        assert 0.8 < time.monotonic() - started < 5


def test_a_trickled_head_is_cut_off_at_the_deadline(gateway: Gateway):
    started = time.monotonic()
    with _connect(gateway) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 100:  # one byte every 0.1 s
                sock.sendall(bytes([byte]))
                time.sleep(0.1)
                if time.monotonic() - started > 4:
                    break
        answer = read_all(sock)
    assert _error(answer) == (408, "head_timeout")
    assert time.monotonic() - started < 5


def test_a_body_that_stops_or_trickles_is_answered_408(gateway: Gateway):
    with _connect(gateway) as sock:  # announces 100 bytes, sends 10
        sock.sendall(_request("POST", "/v1/auth/nonce", b"x" * 100)[:-90])
        assert _error(read_all(sock)) == (408, "body_timeout")
    started = time.monotonic()
    with _connect(gateway) as sock:  # an upload that trickles below the minimum rate
        sock.sendall(f"PUT /v1/assets/{gateway.dataset}/content HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n"
                     f"Authorization: Bearer {gateway.owner_token}\r\n\r\n".encode())  # fmt: skip
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while time.monotonic() - started < 6:
                sock.sendall(b"z" * 10)
                time.sleep(0.2)
                sock.settimeout(0.01)
                with contextlib.suppress(TimeoutError):
                    if sock.recv(1, socket.MSG_PEEK):
                        break
        sock.settimeout(5)
        assert _error(read_all(sock)) == (408, "body_timeout")
    assert time.monotonic() - started < 5
    gateway.assert_serving()


def test_an_unread_body_after_an_early_answer_is_drained_then_cut(gateway: Gateway):
    started = time.monotonic()
    with _connect(gateway) as sock:
        sock.sendall(b"POST /v1/auth/nonce HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
        assert _error(_read_response(sock)) == (413, "body_too_large")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            while time.monotonic() - started < 6:  # keep trickling the refused body
                sock.sendall(b"x")
                time.sleep(0.05)
        assert read_all(sock) == b""
    assert time.monotonic() - started < 5


def test_a_client_that_never_reads_its_answers_is_dropped(gateway: Gateway):
    with _connect(gateway) as sock:
        request = b"GET /openapi.json HTTP/1.1\r\nHost: x\r\n\r\n"
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, TimeoutError):
            sock.sendall(request * 2_000)  # pipelined, never read: ~100 MB of answers
        time.sleep(3)  # the server's buffer stays full for longer than send_timeout (1 s): it resets
        started = time.monotonic()
        with pytest.raises(ConnectionResetError):
            while sock.recv(65536):
                pass
    assert time.monotonic() - started < 5
    gateway.assert_serving()


# ---------------------------------------------------------------------- many connections


def test_slowloris_on_many_sockets_does_not_lock_others_out(gateway: Gateway):
    attackers = []
    try:
        for _ in range(3 * MAX_CONNECTIONS):
            sock = _connect(gateway)
            with contextlib.suppress(OSError):
                sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            attackers.append(sock)
        for _ in range(5):  # others are served all along
            gateway.assert_serving()
        time.sleep(1.5)
        for sock in attackers:  # every attacker was evicted or timed out
            sock.settimeout(3)
            answer = read_all(sock)
            assert answer == b"" or _error(answer) == (408, "head_timeout")
    finally:
        for sock in attackers:
            sock.close()
    gateway.assert_serving()


def test_when_every_connection_holds_a_slow_body_a_new_one_takes_the_slowests_place(gateway: Gateway):
    # (Every connection in the middle of a body used to mean 503 for everyone else; a body still arriving has cost
    # no work yet, so the slowest makes room now. Requests in flight are never closed: test_connection_shares.)
    busy = []
    try:
        for _ in range(MAX_CONNECTIONS):  # each one in the middle of a body
            sock = _connect(gateway)
            sock.sendall(_request("POST", "/v1/auth/nonce", b"x" * 100)[:-50])
            busy.append(sock)
            time.sleep(0.01)
        time.sleep(0.3)  # (all of them reading their bodies by now)
        gateway.assert_serving()  # a new connection is served ...
        assert _error(read_all(busy[0])) == (503, "too_many_connections")  # ... in the oldest slow body's place
        for sock in busy[1:]:  # the others run out of time
            assert _error(read_all(sock)) == (408, "body_timeout")
    finally:
        for sock in busy:
            sock.close()
    gateway.assert_serving()


# ---------------------------------------------------------------------- malformed HTTP


@pytest.mark.parametrize(
    ("request_bytes", "status", "code"),
    [
        (b"GET /\xe9 HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request"),  # non-ASCII target
        (b"GET /healthz?q=\xff HTTP/1.1\r\nHost: x\r\n\r\n", 400, "bad_request"),
        (b"GET /v1/assets/%ff%fe HTTP/1.1\r\nHost: x\r\n\r\n", 422, "invalid_request"),  # invalid UTF-8, escaped
        (b"GET /healthz HTTP/1.1\r\n\r\n", 400, "bad_request"),  # no Host
        (
            b"POST /v1/auth/nonce HTTP/1.1\r\nHost: x\r\nContent-Length: " + b"9" * 5_000 + b"\r\n\r\n",
            400,
            "bad_request",
        ),
        (
            b"POST /v1/auth/nonce HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nabcde",
            400,
            "bad_request",
        ),
        (b"POST /v1/auth/nonce HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", 400, "bad_request"),
        (
            b"POST /v1/auth/nonce HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 4\r\n"
            b"\r\n\xc3\x28\xa0\xa1",  # not UTF-8
            400,
            "http_error",
        ),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\n" + b"X-A: b\r\n" * 20_000 + b"\r\n", 431, "headers_too_large"),
        (b"GET /v1/assets?q=" + b"a" * 200_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 431, "headers_too_large"),
        (b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"b" * 40_000 + b"\r\n\r\n", 431, "headers_too_large"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(range(64)) + b"\r\n\r\n", 400, "bad_request"),  # TLS
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 404, "not_found"),  # an HTTP/2 preface: no such resource
    ],
)
def test_malformed_http_gets_a_json_4xx(gateway: Gateway, request_bytes: bytes, status: int, code: str):
    assert _error(_exchange(gateway, request_bytes)) == (status, code)


def test_a_head_too_big_is_refused_while_it_arrives(gateway: Gateway):
    with _connect(gateway) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            for _ in range(100):
                sock.sendall(b"X-Filler: " + b"f" * 1_000 + b"\r\n")
                time.sleep(0.001)
        assert _error(read_all(sock)) == (431, "headers_too_large")


def test_odd_but_valid_requests_are_served(gateway: Gateway):
    status, _, body = response_parts(_exchange(gateway, b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Odd: \xe9\xff\r\n"
                                                   b"Connection: close\r\n\r\n"))  # fmt: skip
    assert status == 200 and json.loads(body)["status"] == "ok"
    upgrade = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n"
    assert response_parts(_exchange(gateway, upgrade))[0] == 200  # no WebSocket here: served as plain HTTP
    chunked = b'{"address": "0x0000000000000000000000000000000000000001"}'
    request = b"POST /v1/auth/nonce HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
    request += b"Content-Type: application/json\r\n\r\n" + f"{len(chunked):x}\r\n".encode() + chunked + b"\r\n0\r\n\r\n"
    assert response_parts(_exchange(gateway, request))[0] == 200
    expect = _request("POST", "/v1/auth/nonce", chunked, {"Expect": "100-continue", "Connection": "close",
                                                           "Content-Type": "application/json"})  # fmt: skip
    head, _, body = expect.partition(b"\r\n\r\n")
    with _connect(gateway) as sock:
        sock.sendall(head + b"\r\n\r\n")
        assert sock.recv(65536).startswith(b"HTTP/1.1 100 Continue")
        sock.sendall(body)
        assert response_parts(read_all(sock))[0] == 200


def test_many_clients_at_once_are_all_answered(gateway: Gateway):
    results: list[int] = []

    def client() -> None:
        with httpx.Client(base_url=gateway.url, timeout=30) as http:
            results.extend(http.get("/healthz").status_code for _ in range(5))

    threads = [threading.Thread(target=client) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert results == [200] * 60


# ---------------------------------------------------------------------- afterwards


def test_zz_the_log_holds_no_traceback_token_key_or_secret(gateway: Gateway):
    headers = {HEADER: gateway.next_voucher(), "Authorization": f"Bearer {gateway.token}"}  # a token that must not leak
    exploded = httpx.post(f"{gateway.url}/v1/models/{gateway.model}/invoke", json={"input": [1]}, headers=headers)
    assert exploded.status_code == 502
    gateway.assert_serving()
    log = gateway.log.read_text(errors="replace")
    assert "Traceback" not in log
    assert "unhandled RuntimeError" in log  # the exploding model was logged, by type and stack only
    for secret in (SECRET, gateway.token, gateway.owner_token, gateway.relayer_key, gateway.relayer_key[2:]):
        assert secret not in log
