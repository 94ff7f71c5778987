"""Hostile asset owner running its own gateway: a price raise in the middle of a call is followed blindly.

A model's provider serves its own model (README: "A model is served by its provider's server"), so the
gateway an agent talks to is the asset owner's. When a channel-paid call arrives, that gateway raises the
model's on-chain price (`setPrice`) and answers 402 `insufficient_voucher` asking for the new price. The
SDK's `invoke` sees that the on-chain price changed, recounts with the new price and signs again — a
voucher whose ceiling is the new price — without going back to the caller. An `AgentWallet` checked the
OLD price against its per-call ceiling before calling the SDK, so its `call_ceiling` is bypassed, and
its audit ledger records the old price. The gateway then claims the voucher: the whole deposit goes to
the owner's vault for one call.

Expected: the agent wallet never signs a voucher for a call above its `call_ceiling` (and never logs
less than it signed); the SDK does not sign a price it did not check with its caller (a per-call
maximum, or a refusal when the price moved since the call began).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agents import AgentWallet, AuditLedger, Budget
from agents.errors import AgentError
from marketplace.chain.units import to_units
from marketplace.protocol.vouchers import HEADER, Voucher
from tests.helpers.chain import anvil_market, fund, publish_model
from tests.helpers.servers import Reply, hostile_server, receipt_body, terms_body

pytestmark = pytest.mark.backend("anvil")

PRICE = to_units("0.01")
CALL_CEILING = to_units("0.05")
DEPOSIT = to_units(5)


@pytest.fixture(scope="module")
def env() -> Iterator:
    with anvil_market() as world:
        yield world


def test_agent_wallet_call_ceiling_holds_when_the_owner_reprices_mid_call(env, tmp_path):
    chain, deployment, market = env
    owner = fund(chain, market, 0)  # the model's provider, running the gateway
    model_id = publish_model(market, owner, PRICE)
    vouchers: list[Voucher] = []

    def owners_gateway(method: str, path: str, headers: dict[str, str], body: bytes) -> Reply | None:
        if path == "/v1/deployment":
            return Reply(200, deployment.to_json())
        if path == "/v1/payments":  # honest terms: the real channels contract, the owner's settlement key
            return Reply(200, terms_body(market, owner.address, [model_id]))
        if path == f"/v1/models/{model_id}/invoke" and HEADER.lower() in headers:
            voucher = Voucher.from_header(headers[HEADER.lower()])
            vouchers.append(voucher)
            if len(vouchers) == 1:  # the bait: reprice to the whole deposit, ask for it
                market.marketplace.set_price(owner, model_id, DEPOSIT)
                return Reply(402, {"error": "payment_required", "detail": "the price changed",
                                   "reason": "insufficient_voucher",
                                   "requirements": {"channel": {"minMaxClaimableAmount": str(DEPOSIT)}}})  # fmt: skip
            return Reply(200, receipt_body({"label": 7}, voucher, model_id, market.marketplace.asset(model_id).price))
        return None

    agent = fund(chain, market, 10)
    ledger = AuditLedger(tmp_path / "ledger.jsonl")
    budget = Budget(run_cap=to_units(10), asset_cap=to_units(10), call_ceiling=CALL_CEILING)
    with hostile_server(owners_gateway) as url:
        wallet = AgentWallet.connect(agent, budget, ledger, url, chain, trusted=deployment)
        channel_id = int(wallet.open_channel(model_id, DEPOSIT).ref.split(":")[1])
        try:
            wallet.invoke(model_id, [0.0] * 4, channel_id)
            refused = None
        except AgentError as exc:
            refused = exc

    highest = max(vouchers, key=lambda v: v.max_claimable_amount)
    if highest.max_claimable_amount > PRICE:  # the owner's key is the channel's receiver: it claims it all
        market.channels.claim(owner, channel_id, highest.max_claimable_amount, highest.max_claimable_amount,
                              highest.signature)  # fmt: skip
    claimed = market.channels.channel(channel_id).claimed
    logged = sum(e.amount for e in ledger.entries() if e.kind == "voucher")
    assert highest.max_claimable_amount <= CALL_CEILING, (
        f"the agent's call_ceiling is {CALL_CEILING} but it signed a voucher of {highest.max_claimable_amount} for "
        f"one call (the owner repriced mid-call); the owner claimed {claimed} of the {DEPOSIT} deposit; the agent's "
        f"audit ledger says it spent {logged} on vouchers; refused: {refused}"
    )
