"""Live servers on 127.0.0.1: the real server app (``server_app``, what `agentmarket serve` builds) under
uvicorn (``serving``), a tiny HTTP server for hostile gateways (``hostile_server``: plain http.server, so
nothing of the product runs on the attacker's side) and the bodies an honest gateway answers with."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import uvicorn
from fastapi import FastAPI

from marketplace.api import Settings, create_app
from marketplace.api.server import server_config
from marketplace.chain import Chain
from marketplace.chain.deployment import Deployment
from marketplace.chain.market import Market
from marketplace.protocol import wire
from marketplace.protocol.vouchers import HEADER, Voucher
from marketplace.siwe import SiweMessage, format_time


@contextmanager
def serving(app, port: int = 0) -> Iterator[str]:
    """Run ``app`` under uvicorn on ``port`` (default: a free one) of 127.0.0.1; yields its base URL; always stops it.

    An app made by ``create_app`` runs with the limits `agentmarket serve` has; any other (a test's
    fake gateway) under uvicorn's defaults."""
    if hasattr(app.state, "settings"):
        config = server_config(app, port=port)
    else:
        config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="uvicorn-x402-test", daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 15
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        assert not thread.is_alive(), "uvicorn did not stop"


def terms_body(market: Market, receiver: str, models: list[int]) -> dict[str, Any]:
    """``GET /v1/payments`` as an honest gateway answers it: this deployment's channels contract, claimed by
    ``receiver``, for ``models``."""
    domain = market.channels.domain.as_dict()
    terms = wire.ChannelTerms(
        scheme="payment-channel", header=HEADER, header_format="base64(JSON {channelId, maxClaimableAmount, sig})",
        network=f"eip155:{market.chain.chain_id}", chain_id=market.chain.chain_id, channels=market.channels.address,
        receiver_authorizer=receiver, claim_window_seconds=900, min_seconds_to_expiry=60,
        voucher=wire.VoucherTerms(primary_type="Voucher", domain=domain, types={}, max_claimable_amount="a ceiling"),
    )  # fmt: skip
    return wire.PaymentTerms(payment_channel=terms, models=models).model_dump(mode="json", by_alias=True)


def receipt_body(output: Any, voucher: Voucher, asset_id: int, price: int) -> dict[str, Any]:
    """A channel call's 200 as an honest gateway answers it: ``output`` and a receipt of one call at ``price``
    paid by ``voucher`` (a deposit of the voucher's ceiling)."""
    ceiling = voucher.max_claimable_amount
    receipt = wire.ChannelReceipt(
        channel_id=voucher.channel_id, asset_id=asset_id, price=price, max_claimable_amount=ceiling,
        highest_voucher=ceiling, debited=price, calls=1, deposit=ceiling, deposit_left=ceiling - price, calls_left=0,
    )  # fmt: skip
    return wire.InvokeResponse(output=output, payment=receipt).model_dump(mode="json", by_alias=True)


def server_app(deployment: Deployment, chain: Chain, data_dir: Path, handlers: dict[int, Any] | None = None,
               **settings: Any) -> FastAPI:  # fmt: skip
    """The real server (create_app, as `agentmarket serve` builds it) over ``chain``."""
    options = {"settle_interval": 3600, "chain_poll_interval": 0.2, **settings}
    config = Settings(manifest=deployment.save(data_dir / "deployment.json"), data_dir=data_dir, **options)
    return create_app(config, chain=chain, model_handlers=handlers or {})


@dataclass
class Reply:
    status: int
    body: Any = None  # dict -> JSON; bytes; or an iterator of bytes (streamed, no Content-Length)
    headers: dict[str, str] = field(default_factory=dict)


Route = Callable[[str, str, dict[str, str], bytes], Reply | None]


@contextmanager
def hostile_server(route: Route) -> Iterator[str]:
    """A plain HTTP server on 127.0.0.1 answering every request with ``route(method, path, headers, body)``
    (None: 404). Yields its base URL."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _any(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            headers = {k.lower(): v for k, v in self.headers.items()}
            reply = route(self.command, self.path, headers, body) or Reply(404, {"error": "not_found"})
            self.send_response(reply.status)
            for name, value in reply.headers.items():
                self.send_header(name, value)
            payload = reply.body
            if isinstance(payload, dict | list):
                payload = json.dumps(payload).encode()
                self.send_header("Content-Type", "application/json")
            if isinstance(payload, bytes | type(None)):
                data = payload or b""
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                return
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            try:
                for chunk in payload:
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass
            self.close_connection = True

        do_GET = do_POST = do_PUT = _any

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def login_message(host: str, address: str, chain_id: int) -> str:
    """The EIP-4361 message an honest server at ``host`` (its 127.0.0.1:port) asks ``address`` to sign."""
    now = int(time.time())
    return SiweMessage(domain=host, address=address, uri=f"http://{host}", chain_id=chain_id, nonce="n0nce1234",
                       issued_at=format_time(now), expiration_time=format_time(now + 300),
                       statement="Sign in to agentmarket.").to_text()  # fmt: skip


def sealed_gateway(deployment, asset_id: int, content) -> Route:
    def route(method: str, path: str, headers: dict[str, str], body: bytes) -> Reply | None:
        if path == "/v1/deployment":
            return Reply(200, deployment.to_json())
        if path == "/v1/auth/nonce":  # a login the SDK signs: for this very server, account and chain, short-lived
            message = login_message(headers["host"], json.loads(body)["address"], deployment.chain_id)
            return Reply(200, {"nonce": "n0nce1234", "message": message, "expires_at": int(time.time()) + 300})
        if path == "/v1/auth/verify":
            address = json.loads(body)["message"].splitlines()[1]  # the login the SDK signed (EIP-4361 line 2)
            return Reply(200, {"token": "t", "address": address, "expires_at": int(time.time()) + 900})
        if path.startswith(f"/v1/assets/{asset_id}/content"):
            return Reply(200, content(), {"X-Content-Encryption": "x25519-sealedbox-frames",
                                          "Content-Type": "application/vnd.agentmarket.sealed-frames"})  # fmt: skip
        return None

    return route
