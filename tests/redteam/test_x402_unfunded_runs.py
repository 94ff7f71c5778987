"""Hostile payer: x402 model calls run the model for authorizations that cannot all be paid.

The server verifies an x402 authorization (signature, amount, the payer's balance *now*), runs the model,
and settles afterwards. Verification reserves the authorization's nonce but not the payer's money, so a
payer holding the price of ONE call signs N authorizations (fresh nonces) and sends them at once: each
verifies against the same balance, the model runs N times, one settles and N-1 fail (no output, 402).
For a resold upstream (`openai+http://…`) every run is an upstream completion the operator pays for:
one call's price buys N runs of the operator's compute. Expected: the model runs only for what can be
paid (e.g. count in-flight authorizations against the payer's balance, or settle before running).
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from x402.http.utils import decode_payment_required_header
from x402.schemas import PaymentRequired

from marketplace.client.checks import X402Terms
from marketplace.client.sdk import x402_payer
from tests.helpers.chain import anvil_market, fund, publish_model
from tests.helpers.models import SlowModel
from tests.helpers.servers import server_app, serving

pytestmark = pytest.mark.backend("anvil")

PRICE = 10_000  # 0.01 tUSD
ATTEMPTS = 4


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator:
    with anvil_market() as (chain, deployment, market):
        owner = fund(chain, market, 0)
        model_id = publish_model(market, owner, PRICE)
        slow = SlowModel(1.5, lambda payload: {"echo": payload})
        app = server_app(deployment, chain, tmp_path_factory.mktemp("x402-runs"), {model_id: slow})
        with serving(app) as url:
            yield chain, market, model_id, slow, url


def test_concurrent_authorizations_beyond_the_balance_do_not_run_the_model(env):
    chain, market, model_id, slow, url = env
    payer = fund(chain, market, 0)
    market.token.mint(chain.accounts[0], payer.address, PRICE)  # enough for exactly one call
    path = f"{url}/v1/models/{model_id}/invoke"

    unpaid = httpx.post(path, json={"input": [1]}, timeout=30)
    assert unpaid.status_code == 402
    required = decode_payment_required_header(unpaid.headers["PAYMENT-REQUIRED"])
    terms = X402Terms.from_chain(market, model_id)
    requirement = terms.select(required)  # honest server: the chain's terms
    signer = x402_payer(payer, terms)
    headers = []
    for _ in range(ATTEMPTS):  # distinct EIP-3009 nonces, each for exactly the price
        payload = signer.create_payment_payload(
            PaymentRequired(x402_version=2, accepts=[requirement], resource=required.resource)
        )
        headers.append(signer.encode_payment_signature_header(payload))

    before = slow.runs
    with ThreadPoolExecutor(ATTEMPTS) as pool:
        answers = list(pool.map(lambda h: httpx.post(path, json={"input": [1]}, headers=h, timeout=60), headers))
    statuses = sorted(a.status_code for a in answers)
    paid = statuses.count(200)
    runs = slow.runs - before
    vault = market.token.balance_of(market.marketplace.vault_of(model_id))

    assert paid == 1 and vault == PRICE, (statuses, vault)
    assert runs <= paid, (
        f"the payer held the price of one call, sent {ATTEMPTS} authorizations at once, and the model ran "
        f"{runs} times (answers {statuses}): {runs - paid} unpaid runs of the operator's model"
    )
