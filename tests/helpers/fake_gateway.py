"""A hostile marketplace gateway: a real HTTP server on 127.0.0.1 that serves the real deployment
manifest (so a client connects to it as to the real thing) and answers every paid route with a 402
whose x402 requirements it rewrites as it likes.

Whatever PAYMENT-SIGNATURE a client sends, it records and, like a thief, submits at once to the
token's ``transferWithAuthorization`` from its own account; then it answers 200. So a client that
signs anything it should not loses real tokens on chain, and a test sees it.
"""

from __future__ import annotations

import base64
import json
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from eth_account.signers.local import LocalAccount
from x402.http.utils import decode_payment_signature_header

from marketplace.chain import Chain
from marketplace.chain.contracts import TestUSD
from marketplace.chain.deployment import Deployment
from marketplace.chain.units import caip2

_PAID_ROUTE = re.compile(r"^/v1/(?:models/(\d+)/invoke|assets/(\d+)/x402)$")
_TRANSFER_WITH_AUTHORIZATION = "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)"

#: Rewrites the honest PAYMENT-REQUIRED JSON (x402 v2 wire form) into what the fake answers.
Lie = Callable[[dict[str, Any]], dict[str, Any]]


def settlement_body(header: str, transaction: list[str] = ()) -> dict[str, str]:  # type: ignore[assignment]
    """The x402 payment a paid answer names, as the API's body does (``X402Settlement``): what the
    PAYMENT-SIGNATURE ``header`` authorized, settled in ``transaction`` (its one element, if any); {} for a header
    that is no authorization."""
    try:
        payload = decode_payment_signature_header(header)
        auth = payload.payload["authorization"]
        return {"scheme": "exact", "network": payload.accepted.network, "transaction": "".join(transaction),
                "payer": auth["from"], "payTo": auth["to"], "amount": str(auth["value"])}  # fmt: skip
    except Exception:  # not an authorization: an answer that names no payment
        return {}


class FakeGateway:
    """Serve ``deployment``'s manifest and 402s rewritten by ``lie`` until stopped.

    ``signatures`` holds every PAYMENT-SIGNATURE received; ``stolen`` the transaction hashes of the
    authorizations the thief managed to submit.
    """

    def __init__(self, chain: Chain, deployment: Deployment, thief: LocalAccount, lie: Lie) -> None:
        self.chain, self.deployment, self.thief, self.lie = chain, deployment, thief, lie
        self.market = deployment.market(chain)
        self.signatures: list[str] = []
        self.stolen: list[str] = []
        self._chain_lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == "/v1/deployment":
                    self._send(200, fake.deployment.to_json())
                else:
                    self._paid_route()

            def do_POST(self) -> None:
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                self._paid_route()

            def _paid_route(self) -> None:
                match = _PAID_ROUTE.match(self.path)
                if not match:
                    self._send(404, {"error": "not_found", "detail": self.path})
                    return
                signature = self.headers.get("PAYMENT-SIGNATURE")
                if signature:
                    fake.signatures.append(signature)
                    fake._steal(signature)
                    self._send(200, {"output": "thanks", "payment": settlement_body(signature, fake.stolen[-1:])})
                    return
                asset_id = int(match.group(1) or match.group(2))
                required = fake.lie(fake.honest_required(asset_id, f"http://testserver{self.path}"))
                header = base64.b64encode(json.dumps(required).encode()).decode()
                self._send(402, {"error": "payment_required", "detail": "pay me"}, {"PAYMENT-REQUIRED": header})

            def _send(self, status: int, payload: dict[str, Any], headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), name="fake-gateway",
                                       daemon=True)  # fmt: skip

    @property
    def url(self) -> str:
        """The fake's base URL."""
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def honest_required(self, asset_id: int, url: str) -> dict[str, Any]:
        """What an honest gateway answers: the asset's price, token and vault, as the chain says."""
        asset = self.market.marketplace.asset(asset_id)
        return {
            "x402Version": 2,
            "resource": {"url": url, "description": f"asset {asset_id}", "mimeType": "application/json"},
            "accepts": [
                {
                    "scheme": "exact",
                    "network": caip2(self.chain.chain_id),
                    "amount": str(asset.price),
                    "asset": self.market.token.address,
                    "payTo": self.market.marketplace.vault_of(asset_id),
                    "maxTimeoutSeconds": 300,
                    "extra": {"name": "Test USD", "version": "1"},
                }
            ],
        }

    def _steal(self, header: str) -> None:
        """Submit the received authorization to the token it names, from the thief's account."""
        try:
            payload = decode_payment_signature_header(header)
            auth, signature = payload.payload["authorization"], payload.payload["signature"]
            token = TestUSD(self.chain, payload.accepted.asset)
            fn = token.contract.get_function_by_signature(_TRANSFER_WITH_AUTHORIZATION)(
                auth["from"], auth["to"], int(auth["value"]), int(auth["validAfter"]), int(auth["validBefore"]),
                bytes.fromhex(auth["nonce"].removeprefix("0x")), bytes.fromhex(signature.removeprefix("0x")),
            )  # fmt: skip
            with self._chain_lock:
                receipt = self.chain.send(fn, self.thief)
            self.stolen.append("0x" + bytes(receipt["transactionHash"]).hex())
        except Exception:  # a signature the chain refuses is no theft
            pass

    def __enter__(self) -> FakeGateway:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
