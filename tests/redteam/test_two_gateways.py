"""Hostile payer: the same vouchers spent at two gateways that share a settlement key.

On a local chain every `agentmarket serve` settles with the same default key (the last dev account), and
a channel is bound only to that key (`receiverAuthorizer`), not to one gateway's ledger. An operator who
runs a second gateway for the same model (a replica, a move to a new data directory, a restart with
another `--data-dir` while the first still runs) thus has two ledgers accepting the same channel. A payer
sends each voucher to both: each gateway counts only its own calls against the same ceiling, both answer,
and the chain lets the receiver claim the ceiling once. Issue 12 §2 asked that the vault receive the
prices of the calls answered "across restarts, and whoever holds the ledger"; the fix covers a voucher
already *claimed* on chain, not one that is merely being spent elsewhere.

Expected: two gateways never answer the same credit twice (each gateway its own receiver key, so a
channel belongs to one ledger; or a shared ledger) — the vault receives the price of every answered call.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from marketplace.protocol.vouchers import HEADER, VoucherHasher
from tests.helpers.chain import anvil_market, fund, publish_model
from tests.helpers.servers import server_app, serving

pytestmark = pytest.mark.backend("anvil")

PRICE = 10_000
CALLS = 5


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator:
    with anvil_market() as (chain, deployment, market):
        owner = fund(chain, market, 0)
        model_id = publish_model(market, owner, PRICE)
        home = tmp_path_factory.mktemp("two-gateways")
        handlers = {model_id: lambda x: {"ok": True}}
        first = server_app(deployment, chain, home / "a", handlers)
        second = server_app(deployment, chain, home / "b", handlers)
        with serving(first) as url_a, serving(second) as url_b:
            yield chain, market, model_id, (first, url_a), (second, url_b)


def test_one_voucher_pays_for_calls_at_one_gateway_only(env):
    chain, market, model_id, (first, url_a), (second, url_b) = env
    payer = fund(chain, market, 10)
    receivers = [httpx.get(f"{u}/v1/payments").json()["payment_channel"]["receiverAuthorizer"] for u in (url_a, url_b)]
    # (The red team saw one key here, the local default both gateways shared; each now makes its own.)
    assert receivers[0] != receivers[1]  # each gateway settles with a key of its own
    market.token.approve(payer, market.channels.address, 100 * PRICE)
    channel_id = market.channels.open(payer, model_id, market.token.address, 100 * PRICE,
                                      chain.timestamp() + 3600, payer.address,
                                      receiver_authorizer=receivers[0])  # fmt: skip
    hasher = VoucherHasher(market.channels.domain)
    answered = 0
    for k in range(1, CALLS + 1):
        header = {HEADER: hasher.voucher(payer, channel_id, k * PRICE).to_header()}
        for url in (url_a, url_b):  # the same voucher, at both gateways
            reply = httpx.post(f"{url}/v1/models/{model_id}/invoke", json={"input": [k]}, headers=header, timeout=30)
            answered += reply.status_code == 200
    for app in (first, second):
        app.state.services.settler.settle_once()
    vault = market.token.balance_of(market.marketplace.vault_of(model_id))
    assert vault == answered * PRICE, (
        f"{answered} calls answered at {PRICE} each, the vault received {vault}: "
        f"{answered - vault // PRICE} calls were never paid"
    )
