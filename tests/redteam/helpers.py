"""Shared pieces of the red-team tests: a real anvil node with the contracts, the real server app under
uvicorn on 127.0.0.1 (what `agentmarket serve` runs), funded fresh accounts, and a tiny HTTP server for
hostile gateways (plain http.server, so nothing of the product runs on the attacker's side)."""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI

from marketplace.api import Settings, create_app
from marketplace.chain import Chain
from marketplace.chain.deployment import Deployment
from marketplace.chain.market import Market
from marketplace.chain.records import AssetKind
from marketplace.chain.units import to_units
from marketplace.protocol import wire
from marketplace.protocol.vouchers import HEADER, Voucher
from tests.test_x402 import serving  # noqa: F401  (re-exported: uvicorn with the server's own limits)


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


def fund(chain: Chain, market: Market, tusd: str | int = 100) -> LocalAccount:
    """A fresh account with 1 ETH for gas and ``tusd`` TestUSD."""
    account = Account.create()
    chain.send_eth(chain.accounts[0], account.address, 10**18)
    if tusd:
        market.token.mint(chain.accounts[0], account.address, to_units(tusd))
    return account


def owned_agent(chain: Chain, market: Market, owner: LocalAccount, wallet: LocalAccount, allowance: int) -> int:
    """Register an agent of ``owner`` acting from ``wallet`` (bound by its signature), allowed to pull ``allowance``
    base units of tUSD a day from the owner (approved); returns its agent id."""
    agent_id = market.agents.register(owner, "")
    deadline = chain.timestamp() + 120
    binding = market.agents.sign_wallet_binding(wallet, agent_id, owner.address, deadline)
    market.agents.set_agent_wallet(owner, agent_id, wallet.address, deadline, binding.packed)
    market.agents.grant_spend_permission(owner, agent_id, market.token.address, allowance, 86_400,
                                         wallet=wallet.address)  # fmt: skip
    market.token.approve(owner, market.agents.address, max(allowance, to_units(100)))
    return agent_id


def publish_model(market: Market, owner: LocalAccount, price: int) -> int:
    return market.marketplace.publish(owner, kind=AssetKind.MODEL, content_hash=os.urandom(32), uri="model",
                                      price=price, token=market.token.address,
                                      payees=[(owner.address, 10_000)])  # fmt: skip


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
