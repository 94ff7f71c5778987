"""Paid model calls over payment channels, through the HTTP API and the SDK, over both backends."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient

from marketplace.api import Settings, create_app
from marketplace.chain.market import AssetKind
from marketplace.chain.token import to_units
from marketplace.client import ApiClientError, MarketplaceClient
from marketplace.payments.channels import HEADER

PRICE = to_units("0.01")


def total(payload):
    """A stand-in model: adds its inputs (refuses non-numbers)."""
    return {"sum": sum(float(x) for x in payload)}


@pytest.fixture
def model(market, bob):
    return market.marketplace.publish(
        bob, kind=AssetKind.MODEL, content_hash=b"\x07" * 32, uri="ipfs://adder", price=PRICE,
        token=market.token.address, payees=[(bob.address, 10_000)],
    )  # fmt: skip


@pytest.fixture
def app_factory(chain, deployment, tmp_path, model):
    settings = Settings(manifest=deployment.save(tmp_path / "deployment.json"), data_dir=tmp_path / "server",
                        siwe_domain="testserver", settle_interval=3600)  # fmt: skip
    return lambda: TestClient(create_app(settings, chain=chain, model_handlers={model: total}))


def test_paid_calls_are_answered_and_settled_into_the_vault_at_shutdown(
    app_factory, chain, market, alice, session_key, model
):
    with app_factory() as server:
        client = MarketplaceClient.connect("http://testserver", alice, chain, http=server)
        channel = client.open_channel(model, to_units(1), signer=session_key.address)
        for i in range(5):
            result = client.invoke(model, [i, 1], channel_id=channel, signer=session_key)
            assert result["output"] == {"sum": i + 1.0}
        assert result["payment"]["debited"] == str(5 * PRICE)
        assert market.token.balance_of(market.marketplace.vault_of(model)) == 0  # not settled yet
    # leaving the app stops the settler, which claims every voucher answered
    assert market.token.balance_of(market.marketplace.vault_of(model)) == 5 * PRICE
    assert market.channels.channel(channel).claimed == 5 * PRICE


def test_client_catches_up_with_the_servers_ledger(app_factory, chain, alice, model):
    with app_factory() as server:
        first = MarketplaceClient.connect("http://testserver", alice, chain, http=server)
        channel = first.open_channel(model, to_units(1))
        first.invoke(model, [1], channel_id=channel)
        second = MarketplaceClient.connect("http://testserver", alice, chain, http=server)  # knows nothing yet
        assert second.invoke(model, [2], channel_id=channel)["payment"]["debited"] == str(2 * PRICE)


def test_unpaid_malformed_and_unserved_calls(app_factory, chain, market, alice, bob, model):
    with app_factory() as server:
        unpaid = server.post(f"/v1/models/{model}/invoke", json={"input": [1]})
        assert unpaid.status_code == 402
        body = unpaid.json()
        assert body["error"] == "payment_required" and body["requirements"]["price"] == str(PRICE)
        assert body["requirements"]["payTo"] == market.marketplace.vault_of(model)
        garbage = server.post(f"/v1/models/{model}/invoke", json={"input": [1]},
                              headers={HEADER: base64.b64encode(b"{not json").decode()})  # fmt: skip
        assert (garbage.status_code, garbage.json()["error"]) == (400, "malformed_payment")
        dataset = market.marketplace.publish(
            bob, kind=AssetKind.DATASET, content_hash=b"\x08" * 32, uri="d", price=1,
            token=market.token.address, payees=[(bob.address, 10_000)],
        )  # fmt: skip
        for asset_id in (dataset, 999):
            response = server.post(f"/v1/models/{asset_id}/invoke", json={"input": [1]})
            assert (response.status_code, response.json()["error"]) == (404, "model_not_served")
        client = MarketplaceClient.connect("http://testserver", alice, chain, http=server)
        channel = client.open_channel(model, to_units(1))
        with pytest.raises(ApiClientError) as bad_input:
            client.invoke(model, ["not a number"], channel_id=channel)
        assert (bad_input.value.status, bad_input.value.code) == (422, "bad_model_input")
