"""Payer: a model answer the gateway cannot send is charged anyway.

A paid call is committed (channel: debited in the ledger; x402: settled on chain) once the model returned,
and only then is the answer serialized. An output pydantic cannot serialize — the numpy values a
scikit-learn model returns (`model.predict(X)` is an `ndarray`, `predict(X)[0]` a `numpy.int64`), bytes,
any object — fails *after* the payment: the caller gets HTTP 500 `internal` and no answer, and pays, on
both payment paths. README: "a call whose model fails is not settled, so it costs nothing".
Expected: an answer that cannot be sent is a failed call (502 `model_failed`, not charged): serialize
(or check) the output before committing the payment.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import numpy as np
import pytest

from marketplace.protocol.vouchers import HEADER, VoucherHasher
from tests.helpers.chain import anvil_market, fund, publish_model
from tests.helpers.servers import server_app, serving

pytestmark = pytest.mark.backend("anvil")

PRICE = 10_000


def sklearn_style(payload):
    """A model written the usual scikit-learn way: predictions come back as a numpy array."""
    return np.asarray(payload) * 2


@pytest.fixture(scope="module")
def env(tmp_path_factory) -> Iterator:
    with anvil_market() as (chain, deployment, market):
        owner = fund(chain, market, 0)
        model_id = publish_model(market, owner, PRICE)
        app = server_app(deployment, chain, tmp_path_factory.mktemp("nan"), {model_id: sklearn_style})
        with serving(app) as url:
            yield chain, market, model_id, app, url


def test_an_answer_that_cannot_be_sent_is_not_charged(env):
    chain, market, model_id, app, url = env
    payer = fund(chain, market, 1)
    market.token.approve(payer, market.channels.address, 10 * PRICE)
    receiver = httpx.get(f"{url}/v1/payments").json()["payment_channel"]["receiverAuthorizer"]
    channel_id = market.channels.open(payer, model_id, market.token.address, 10 * PRICE, chain.timestamp() + 3600,
                                      payer.address, receiver_authorizer=receiver)  # fmt: skip
    header = {HEADER: VoucherHasher(market.channels.domain).voucher(payer, channel_id, PRICE).to_header()}
    reply = httpx.post(f"{url}/v1/models/{model_id}/invoke", json={"input": [1, 2]}, headers=header,
                       timeout=30)  # fmt: skip
    app.state.services.settler.settle_once()
    claimed = market.channels.channel(channel_id).claimed
    assert reply.status_code == 200 or claimed == 0, (
        f"the call answered HTTP {reply.status_code} {reply.text[:100]!r} with no output, and {claimed} was claimed "
        "for it from the payer's channel"
    )


def test_an_x402_answer_that_cannot_be_sent_is_not_settled(env):
    from x402.http.utils import decode_payment_required_header
    from x402.schemas import PaymentRequired

    from marketplace.client.checks import X402Terms
    from marketplace.client.sdk import x402_payer

    chain, market, model_id, _app, url = env
    payer = fund(chain, market, 1)
    path = f"{url}/v1/models/{model_id}/invoke"
    required = decode_payment_required_header(httpx.post(path, json={"input": [1]}).headers["PAYMENT-REQUIRED"])
    terms = X402Terms.from_chain(market, model_id)
    signer = x402_payer(payer, terms)
    payload = signer.create_payment_payload(
        PaymentRequired(x402_version=2, accepts=[terms.select(required)], resource=required.resource)
    )
    before = market.token.balance_of(payer.address)
    reply = httpx.post(
        path, json={"input": [1, 2]}, headers=signer.encode_payment_signature_header(payload), timeout=30
    )
    paid = before - market.token.balance_of(payer.address)
    assert reply.status_code == 200 or paid == 0, (
        f"the call answered HTTP {reply.status_code} {reply.text[:100]!r} with no output, and the payer paid {paid}"
    )
