"""Paid model calls, by payment channel or by x402 per call, through the HTTP API and the SDK, over both backends."""

from __future__ import annotations

import asyncio
import base64
import json
import sqlite3

import httpx
import pytest
from fastapi.testclient import TestClient
from x402 import x402ClientSync
from x402.http.clients.httpx import x402_httpx_transport
from x402.http.utils import (
    decode_payment_required_header,
    decode_payment_response_header,
    encode_payment_signature_header,
)

from marketplace.api import Settings, create_app
from marketplace.chain.records import AssetKind
from marketplace.chain.units import to_units
from marketplace.client import ApiClientError, MarketplaceClient
from marketplace.errors import AgentmarketError
from marketplace.payments import voucher_ledger as ledger_module
from marketplace.payments.channels import HEADER
from tests.helpers.x402 import NETWORK, stock_client

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
            assert result.output == {"sum": i + 1.0}
        assert result.payment.debited == 5 * PRICE
        assert market.token.balance_of(market.marketplace.vault_of(model)) == 0  # not settled yet
    # leaving the app stops the settler, which claims every voucher answered
    assert market.token.balance_of(market.marketplace.vault_of(model)) == 5 * PRICE
    assert market.channels.channel(channel).claimed == 5 * PRICE


def test_a_client_signs_its_own_count_never_the_servers(app_factory, chain, alice, model):
    """A client that did not see the first call (its count starts at what the chain says was claimed: 0)
    is asked for 2 calls' worth: it refuses, naming both numbers, instead of re-signing the server's number."""
    with app_factory() as server:
        first = MarketplaceClient.connect("http://testserver", alice, chain, http=server)
        channel = first.open_channel(model, to_units(1))
        first.invoke(model, [1], channel_id=channel)
        second = MarketplaceClient.connect("http://testserver", alice, chain, http=server)  # counted nothing
        with pytest.raises(AgentmarketError) as refused:
            second.invoke(model, [2], channel_id=channel)
        assert str(refused.value) == (
            f"the server asks for a voucher of {2 * PRICE} on channel {channel}, but this client counted 0 answered "
            f"+ {PRICE} for this call = {PRICE}: refusing to sign more"
        )
        shared = MarketplaceClient.connect("http://testserver", alice, chain, http=server,
                                           voucher_book=first.voucher_book)  # fmt: skip
        assert shared.invoke(model, [2], channel_id=channel).payment.debited == 2 * PRICE


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


# ---------------------------------------------------------------------- paid per call with x402


@pytest.fixture
def app(chain, deployment, tmp_path, model):
    settings = Settings(manifest=deployment.save(tmp_path / "deployment.json"), data_dir=tmp_path / "server",
                        siwe_domain="testserver", settle_interval=3600)  # fmt: skip
    return create_app(settings, chain=chain, model_handlers={model: total})


def _pay_with_stock_client(app, market, payer, model: int, payload) -> httpx.Response:
    """One invoke through the x402 package's own httpx client (402, sign EIP-3009, retry), in process."""

    async def call() -> httpx.Response:
        async with app.router.lifespan_context(app):
            transport = x402_httpx_transport(stock_client(payer, market.token.address), httpx.ASGITransport(app=app))
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                return await client.post(f"/v1/models/{model}/invoke", json={"input": payload})

    return asyncio.run(call())


def test_stock_x402_client_pays_per_call_into_the_vault(app, market, alice, model):
    vault = market.marketplace.vault_of(model)
    before_vault, before_payer = market.token.balance_of(vault), market.token.balance_of(alice.address)

    response = _pay_with_stock_client(app, market, alice, model, [2, 3])

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["output"] == {"sum": 5.0}
    assert (body["payment"]["scheme"], body["payment"]["amount"]) == ("exact", str(PRICE))
    assert (body["payment"]["payer"], body["payment"]["payTo"]) == (alice.address, vault)
    settlement = decode_payment_response_header(response.headers["payment-response"])
    assert (settlement.success, settlement.network, settlement.transaction) == (
        True, NETWORK, body["payment"]["transaction"],
    )  # fmt: skip
    assert market.token.balance_of(vault) - before_vault == PRICE  # settled before the answer, not at shutdown
    assert before_payer - market.token.balance_of(alice.address) == PRICE


def test_unpaid_call_offers_x402_and_channel_requirements(app_factory, market, model):
    with app_factory() as server:
        response = server.post(f"/v1/models/{model}/invoke", json={"input": [1]})
    assert response.status_code == 402
    vault = market.marketplace.vault_of(model)
    required = decode_payment_required_header(response.headers["payment-required"])
    assert required.x402_version == 2
    assert required.resource.url == f"http://testserver/v1/models/{model}/invoke"
    (accepted,) = required.accepts
    assert (accepted.scheme, accepted.network, accepted.amount) == ("exact", NETWORK, str(PRICE))
    assert (accepted.asset, accepted.pay_to) == (market.token.address, vault)
    assert accepted.extra == {"name": "Test USD", "version": "1"}
    body = response.json()
    assert (body["error"], body["reason"]) == ("payment_required", "payment_missing")
    assert "x402" in body["detail"] and HEADER in body["detail"]
    assert body["x402"] == json.loads(base64.b64decode(response.headers["payment-required"]))
    assert (body["requirements"]["scheme"], body["requirements"]["payTo"]) == ("payment-channel", vault)
    assert body["requirements"]["price"] == str(PRICE)


def _signed_payment(server, market, payer, model: int) -> str:
    """A PAYMENT-SIGNATURE the stock client made for the 402 of an unpaid call."""
    unpaid = server.post(f"/v1/models/{model}/invoke", json={"input": [1]})
    required = decode_payment_required_header(unpaid.headers["payment-required"])
    payload = stock_client(payer, market.token.address, x402ClientSync).create_payment_payload(required)
    return encode_payment_signature_header(payload)


def test_replayed_x402_payment_is_refused_and_pays_once(app_factory, market, alice, model):
    vault = market.marketplace.vault_of(model)
    before = market.token.balance_of(vault)
    with app_factory() as server:
        header = {"PAYMENT-SIGNATURE": _signed_payment(server, market, alice, model)}
        first = server.post(f"/v1/models/{model}/invoke", json={"input": [1, 1]}, headers=header)
        replayed = server.post(f"/v1/models/{model}/invoke", json={"input": [1, 1]}, headers=header)
    assert first.status_code == 200 and first.json()["output"] == {"sum": 2.0}
    assert replayed.status_code == 402
    assert replayed.json()["error"] == "payment_invalid" and "already used" in replayed.json()["detail"]
    assert "output" not in replayed.json() and "payment-required" in replayed.headers
    assert replayed.json()["requirements"]["scheme"] == "payment-channel"  # the other way to pay is offered too
    assert market.token.balance_of(vault) - before == PRICE


def test_bad_or_double_payment_headers_get_400(app_factory, market, alice, model):
    with app_factory() as server:
        for bad in ("certainly not base64 !!!", base64.b64encode(b'{"x402Version": 2}').decode()):
            response = server.post(f"/v1/models/{model}/invoke", json={"input": [1]},
                                   headers={"PAYMENT-SIGNATURE": bad})  # fmt: skip
            assert (response.status_code, response.json()["error"]) == (400, "malformed_payment"), bad
            assert set(response.json()) == {"error", "detail"}
        both = server.post(f"/v1/models/{model}/invoke", json={"input": [1]},
                           headers={"PAYMENT-SIGNATURE": _signed_payment(server, market, alice, model),
                                    HEADER: base64.b64encode(b"{}").decode()})  # fmt: skip
        assert (both.status_code, both.json()["error"]) == (400, "ambiguous_payment")


def test_a_failed_call_costs_nothing(app_factory, chain, market, alice, model):
    vault = market.marketplace.vault_of(model)
    before_vault, before_payer = market.token.balance_of(vault), market.token.balance_of(alice.address)
    with app_factory() as server:
        header = {"PAYMENT-SIGNATURE": _signed_payment(server, market, alice, model)}
        failed = server.post(f"/v1/models/{model}/invoke", json={"input": ["not a number"]}, headers=header)
        assert (failed.status_code, failed.json()["error"]) == (422, "bad_model_input")
        assert market.token.balance_of(vault) == before_vault  # verified, never settled
        assert market.token.balance_of(alice.address) == before_payer
        # The same authorization, still unused, pays for a call that works.
        paid = server.post(f"/v1/models/{model}/invoke", json={"input": [4]}, headers=header)
        assert paid.status_code == 200 and market.token.balance_of(vault) - before_vault == PRICE

        # On a channel, a failed call is not charged: its reservation is released, nothing is written.
        client = MarketplaceClient.connect("http://testserver", alice, chain, http=server)
        channel = client.open_channel(model, to_units(1))
        with pytest.raises(ApiClientError) as bad_input:
            client.invoke(model, ["not a number"], channel_id=channel)
        assert bad_input.value.status == 422 and "not charged" in bad_input.value.detail
        assert client.invoke(model, [1], channel_id=channel).payment.debited == PRICE
        with pytest.raises(ApiClientError):  # a failed call, and the payer never calls again
            client.invoke(model, ["not a number"], channel_id=channel)
        before_claim = market.token.balance_of(vault)
    # The server stopped: its settler claimed the one answered call, not the failed ones.
    assert market.channels.channel(channel).claimed == PRICE
    assert market.token.balance_of(vault) - before_claim == PRICE


def test_sdk_pays_per_call_with_x402_when_no_channel_is_named(app_factory, chain, market, alice, model):
    vault = market.marketplace.vault_of(model)
    before = market.token.balance_of(vault)
    with app_factory() as server:
        client = MarketplaceClient.connect("http://testserver", alice, chain, http=server)
        results = [client.invoke(model, [n, 1]) for n in range(2)]
    assert [r.output for r in results] == [{"sum": 1.0}, {"sum": 2.0}]
    assert {(r.payment.scheme, r.payment.payer) for r in results} == {("exact", alice.address)}
    assert market.token.balance_of(vault) - before == 2 * PRICE


def test_an_answer_that_cannot_be_recorded_is_withheld_and_costs_nothing(
    app_factory, chain, market, alice, model, monkeypatch
):
    """A disk that refuses the ledger's write: the model ran, but the answer is not sent (503), nothing is debited."""
    with app_factory() as server:
        client = MarketplaceClient.connect("http://testserver", alice, chain, http=server)
        channel = client.open_channel(model, to_units(1))
        real_write = ledger_module._write

        def disk_full(db, entries):
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(ledger_module, "_write", disk_full)
        with pytest.raises(ApiClientError) as withheld:
            client.invoke(model, [1], channel_id=channel)
        assert (withheld.value.status, withheld.value.code) == (503, "ledger_unavailable")
        assert "sum" not in withheld.value.detail
        monkeypatch.setattr(ledger_module, "_write", real_write)
        assert client.invoke(model, [2], channel_id=channel).payment.debited == PRICE
    assert market.channels.channel(channel).claimed == PRICE
