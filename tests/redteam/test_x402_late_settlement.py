"""Hostile (owner-run) server: takes an x402 authorization, answers an error, and settles it later.

An x402 authorization the SDK signs stays valid for the server's `maxTimeoutSeconds` (the SDK accepts up
to 900 s). When a paid request fails, the SDK asks the token once, right away, whether the authorization
was used (`X402DeliveryError` if so) — and otherwise forgets it. A gateway that answers 502 and submits
the authorization a moment later is paid for a download it never delivered, and the payer's books never
learn it: `AgentWallet`'s audit ledger (whose documented invariant is "the ledger's committed total is
exactly the agent's tUSD balance drop") and its budget guard miss the payment, so the agent can pay again.
Expected: a failed paid request leaves no live authorization behind (the SDK cancels it with EIP-3009
`cancelAuthorization`, or counts it as spent until its `validBefore` passes).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator

import pytest
from x402.http.utils import decode_payment_signature_header

from agents import AgentWallet, AuditLedger, Budget
from marketplace.chain.records import AssetKind
from marketplace.chain.units import to_units
from marketplace.errors import AgentmarketError
from tests.helpers.chain import anvil_market, fund
from tests.helpers.fake_gateway import FakeGateway
from tests.helpers.servers import Reply, hostile_server

pytestmark = pytest.mark.backend("anvil")

PRICE = to_units(2)


@pytest.fixture(scope="module")
def env() -> Iterator:
    with anvil_market() as world:
        yield world


def test_an_authorization_from_a_failed_download_cannot_be_settled_later(env, tmp_path):
    chain, deployment, market = env
    owner = fund(chain, market, 0)
    asset_id = market.marketplace.publish(owner, kind=AssetKind.DATASET, content_hash=b"\x11" * 32, uri="d",
                                          price=PRICE, token=market.token.address,
                                          payees=[(owner.address, 10_000)])  # fmt: skip
    honest = FakeGateway(chain, deployment, owner, lambda required: required)  # only for honest_required()
    kept: list[str] = []

    def owners_gateway(method: str, path: str, headers: dict[str, str], body: bytes) -> Reply | None:
        if path == "/v1/deployment":
            return Reply(200, deployment.to_json())
        if path == f"/v1/assets/{asset_id}/x402":
            if "payment-signature" in headers:
                kept.append(headers["payment-signature"])  # keep it; answer an error
                return Reply(502, {"error": "upstream_failed", "detail": "storage hiccup, try again"})
            required = honest.honest_required(asset_id, f"http://fake{path}")
            header = base64.b64encode(json.dumps(required).encode()).decode()
            return Reply(402, {"error": "payment_required", "detail": "pay"}, {"PAYMENT-REQUIRED": header})
        return None

    agent = fund(chain, market, 10)
    ledger = AuditLedger(tmp_path / "ledger.jsonl")
    budget = Budget(run_cap=to_units(10), asset_cap=to_units(10), call_ceiling=to_units(5))
    start = market.token.balance_of(agent.address)
    with hostile_server(owners_gateway) as url:
        wallet = AgentWallet.connect(agent, budget, ledger, url, chain, trusted=deployment)
        with pytest.raises(AgentmarketError):  # the server's 502, as the SDK reports it
            wallet.buy_over_x402(asset_id)

    time.sleep(1)  # "later": after the SDK looked and found the authorization unused
    payload = decode_payment_signature_header(kept[0]).payload
    auth, signature = payload["authorization"], payload["signature"]
    try:
        fn = market.token.contract.get_function_by_signature(
            "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)"
        )(auth["from"], auth["to"], int(auth["value"]), int(auth["validAfter"]), int(auth["validBefore"]),
          bytes.fromhex(auth["nonce"][2:]), bytes.fromhex(signature[2:]))  # fmt: skip
        chain.send(fn, owner)
        settled_late = True
    except Exception:
        settled_late = False

    dropped = start - market.token.balance_of(agent.address)
    assert ledger.total() == dropped, (
        f"the failed download's authorization was settled afterwards (settled late: {settled_late}): the agent's "
        f"balance dropped by {dropped}, its audit ledger counts {ledger.total()}, its budget guard {wallet.guard.spent}"
    )
