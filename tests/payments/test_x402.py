"""x402 v2 per-request payments, over both backends.

A stock x402 client (the x402 PyPI package's httpx transport, EthAccountSigner, TestUSD allowed in
its spend controls — no agentmarket code) pays an asset's price into the asset's vault and gets
exactly the content; the in-process facilitator settles with the relayer's gas. Unpaid, refused,
malformed and replayed payments never get the content.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import hashlib
import json
import os
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from web3 import Web3
from x402 import x402ClientSync
from x402.http.clients.httpx import x402_httpx_transport, x402HttpxClient
from x402.http.utils import (
    decode_payment_required_header,
    decode_payment_response_header,
    encode_payment_signature_header,
)

from marketplace.api import Settings, create_app
from marketplace.chain.records import AssetKind
from marketplace.chain.units import to_units
from marketplace.content import ContentStore
from tests.helpers.servers import serving
from tests.helpers.x402 import NETWORK, stock_client

CONTENT = os.urandom(150_000)  # three 64 KiB frames in the store
CONTENT_HASH = hashlib.sha256(CONTENT).digest()
PRICE = to_units("0.25")


# ---------------------------------------------------------------------- fixtures and helpers


@pytest.fixture
def asset_id(market, bob) -> int:
    """A dataset bob sells per request, whose on-chain content hash is CONTENT's."""
    return market.marketplace.publish(
        bob, kind=AssetKind.DATASET, content_hash=CONTENT_HASH, uri="ipfs://per-request", price=PRICE,
        token=market.token.address, payees=[(bob.address, 10_000)],
    )  # fmt: skip


async def _once(data: bytes) -> AsyncIterator[bytes]:
    yield data


@pytest.fixture
def app(chain, deployment, tmp_path, relayer, asset_id, bob):
    """The API with the x402 route, CONTENT uploaded by its owner, settling with the ``relayer`` fixture's key."""
    data_dir = tmp_path / "server"
    store = ContentStore.for_chain(data_dir / "content", chain, deployment.address("Marketplace"))
    upload = store.put(_once(CONTENT), asset_id=asset_id, version=1, sha256="0x" + CONTENT_HASH.hex(),
                       uploader=bob.address, max_bytes=len(CONTENT))  # fmt: skip
    asyncio.run(upload)
    settings = Settings(
        manifest=deployment.save(tmp_path / "deployment.json"),
        data_dir=data_dir,
        relayer_key=SecretStr(Web3.to_hex(relayer.key)),
    )
    return create_app(settings, chain=chain)


@pytest.fixture
def http(app) -> Iterator[TestClient]:
    """A plain HTTP client (no x402 support) for hand-made requests."""
    with TestClient(app) as client:
        yield client


def path_of(asset: int) -> str:
    return f"/v1/assets/{asset}/x402"


@dataclass(frozen=True)
class Balances:
    """Who holds what, before and after a request."""

    vault: int
    payer: int
    payer_eth: int
    relayer_eth: int

    @classmethod
    def read(cls, market, vault: str, payer, relayer) -> Balances:
        token, chain = market.token, market.chain
        return cls(token.balance_of(vault), token.balance_of(payer.address), chain.balance(payer.address),
                   chain.balance(relayer.address))  # fmt: skip


def assert_paid_download(response: httpx.Response, market, asset: int, payer, relayer, before: Balances) -> None:
    """The content came back whole, the vault got exactly the price from the payer, the relayer paid the gas."""
    assert response.status_code == 200, response.text
    assert response.content == CONTENT
    assert response.headers["x-content-sha256"] == "0x" + CONTENT_HASH.hex()
    settlement = decode_payment_response_header(response.headers["payment-response"])
    assert (settlement.success, settlement.network, settlement.payer) == (True, NETWORK, payer.address)

    vault = market.marketplace.vault_of(asset)
    after = Balances.read(market, vault, payer, relayer)
    assert after.vault - before.vault == PRICE
    assert before.payer - after.payer == PRICE
    assert after.payer_eth == before.payer_eth  # the payer only signed

    receipt = market.chain.w3.eth.get_transaction_receipt(settlement.transaction)
    assert receipt["status"] == 1 and receipt["from"] == relayer.address
    gas_cost = receipt["gasUsed"] * receipt["effectiveGasPrice"]
    assert gas_cost > 0 and before.relayer_eth - after.relayer_eth == gas_cost


def payment_required(http: TestClient, asset: int):
    """Ask without paying; the decoded PAYMENT-REQUIRED of the 402."""
    response = http.get(path_of(asset))
    assert response.status_code == 402, response.text
    return decode_payment_required_header(response.headers["payment-required"])


# ---------------------------------------------------------------------- paying with the stock client


def test_stock_client_pays_the_vault_and_gets_the_content(app, market, asset_id, alice, relayer):
    before = Balances.read(market, market.marketplace.vault_of(asset_id), alice, relayer)

    async def fetch() -> httpx.Response:
        async with app.router.lifespan_context(app):
            transport = x402_httpx_transport(stock_client(alice, market.token.address), httpx.ASGITransport(app=app))
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
                return await client.get(path_of(asset_id))

    assert_paid_download(asyncio.run(fetch()), market, asset_id, alice, relayer, before)


def test_stock_client_pays_over_a_real_socket(app, market, asset_id, alice, relayer):
    before = Balances.read(market, market.marketplace.vault_of(asset_id), alice, relayer)

    async def fetch(base_url: str) -> httpx.Response:
        async with x402HttpxClient(stock_client(alice, market.token.address), timeout=30) as client:
            return await client.get(base_url + path_of(asset_id))

    with serving(app) as base_url:
        response = asyncio.run(fetch(base_url))
    assert_paid_download(response, market, asset_id, alice, relayer, before)


# ---------------------------------------------------------------------- what is refused


def test_no_payment_gets_402_naming_the_price_and_the_vault(http, market, asset_id):
    response = http.get(path_of(asset_id))
    assert response.status_code == 402
    assert response.json()["error"] == "payment_required"
    assert "0.250000 tUSD" in response.json()["detail"]
    assert CONTENT[:64] not in response.content
    wire = json.loads(base64.b64decode(response.headers["payment-required"]))
    assert wire["x402Version"] == 2
    assert wire["resource"]["url"] == f"http://testserver{path_of(asset_id)}"
    assert wire["accepts"] == [
        {
            "scheme": "exact",
            "network": NETWORK,
            "amount": str(PRICE),
            "asset": market.token.address,
            "payTo": market.marketplace.vault_of(asset_id),
            "maxTimeoutSeconds": 300,
            "extra": {"name": "Test USD", "version": "1"},
        }
    ]


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


MALFORMED_HEADERS = {
    "not base64": "certainly not base64 !!!",
    "not JSON": _b64("not json"),
    "not an object": _b64("[1, 2, 3]"),
    "no payment fields": _b64('{"x402Version": 2}'),
}


def test_malformed_payment_header_gets_400_json(http, market, asset_id, alice):
    payload = stock_client(alice, market.token.address, x402ClientSync).create_payment_payload(
        payment_required(http, asset_id)
    )
    broken = copy.deepcopy(payload.payload)
    broken["authorization"]["value"] = "a lot"  # a real envelope whose authorization cannot be parsed
    cases = {**MALFORMED_HEADERS, "unparsable authorization": encode_payment_signature_header(
        payload.model_copy(update={"payload": broken}))}  # fmt: skip
    for case, header in cases.items():
        response = http.get(path_of(asset_id), headers={"PAYMENT-SIGNATURE": header})
        assert response.status_code == 400, case
        body = response.json()
        assert set(body) == {"error", "detail"} and body["error"] == "malformed_payment", case
        assert "Traceback" not in response.text, case


def _tampered(required, payer, token_address: str, case: str):
    """A payment signed by the stock client, then spoiled as ``case`` says; it still claims to accept
    the server's requirements (except for "mismatch"), so it reaches the facilitator's verify."""
    real = required.accepts[0]
    changes = {"wrong_amount": {"amount": str(PRICE - 1)}, "wrong_pay_to": {"pay_to": payer.address},
               "expired": {"max_timeout_seconds": 1}, "mismatch": {"amount": str(PRICE - 1)}}.get(case, {})  # fmt: skip
    signed_for = required.model_copy(update={"accepts": [real.model_copy(update=changes)]})
    payload = stock_client(payer, token_address, x402ClientSync).create_payment_payload(signed_for)
    if case != "mismatch":
        payload = payload.model_copy(update={"accepted": real})
    if case == "bad_signature":
        inner = copy.deepcopy(payload.payload)
        signature = bytearray(bytes.fromhex(inner["signature"].removeprefix("0x")))
        signature[5] ^= 0xFF
        inner["signature"] = "0x" + signature.hex()
        payload = payload.model_copy(update={"payload": inner})
    return payload


REFUSALS = {  # case: (error code, SDK reason named in the detail)
    "wrong_amount": ("payment_invalid", "invalid_exact_evm_payload_authorization_value_mismatch"),
    "wrong_pay_to": ("payment_invalid", "invalid_exact_evm_payload_recipient_mismatch"),
    "expired": ("payment_invalid", "invalid_exact_evm_payload_authorization_valid_before"),
    "bad_signature": ("payment_invalid", "invalid_exact_evm_payload_signature"),
    "insufficient_balance": ("payment_invalid", "invalid_exact_evm_insufficient_balance"),
    "mismatch": ("payment_mismatch", None),
}


def test_refused_payments_get_402_with_a_reason_and_move_nothing(http, market, asset_id, alice, carol, relayer):
    vault = market.marketplace.vault_of(asset_id)
    required = payment_required(http, asset_id)
    for case, (code, reason) in REFUSALS.items():
        payer = carol if case == "insufficient_balance" else alice  # carol holds no tUSD
        payload = _tampered(required, payer, market.token.address, case)
        before = Balances.read(market, vault, payer, relayer)

        response = http.get(path_of(asset_id), headers={"PAYMENT-SIGNATURE": encode_payment_signature_header(payload)})

        assert response.status_code == 402, (case, response.text)
        assert response.json()["error"] == code, case
        assert reason is None or reason in response.json()["detail"], (case, response.json())
        assert CONTENT[:64] not in response.content, case
        again = decode_payment_required_header(response.headers["payment-required"])
        assert (again.accepts[0].amount, again.accepts[0].pay_to) == (str(PRICE), vault), case
        assert Balances.read(market, vault, payer, relayer) == before, case


def test_replayed_payment_gets_the_content_once(http, market, asset_id, alice, relayer):
    vault = market.marketplace.vault_of(asset_id)
    before = Balances.read(market, vault, alice, relayer)
    payload = stock_client(alice, market.token.address, x402ClientSync).create_payment_payload(
        payment_required(http, asset_id)
    )
    header = {"PAYMENT-SIGNATURE": encode_payment_signature_header(payload)}

    first = http.get(path_of(asset_id), headers=header)
    replayed = http.get(path_of(asset_id), headers=header)

    assert first.status_code == 200 and first.content == CONTENT
    assert replayed.status_code == 402
    assert replayed.json()["error"] == "payment_invalid"
    assert "already used" in replayed.json()["detail"]
    assert CONTENT[:64] not in replayed.content
    after = Balances.read(market, vault, alice, relayer)
    assert (after.vault - before.vault, before.payer - after.payer) == (PRICE, PRICE)


def test_unknown_delisted_or_not_uploaded_assets_are_refused_before_any_payment(http, market, asset_id, bob):
    unknown = http.get(path_of(999))
    assert (unknown.status_code, unknown.json()["error"]) == (404, "asset_not_found")
    not_uploaded = market.marketplace.publish(
        bob, kind=AssetKind.DATASET, content_hash=hashlib.sha256(b"never uploaded").digest(), uri="ipfs://none",
        price=PRICE, token=market.token.address, payees=[(bob.address, 10_000)],
    )  # fmt: skip
    missing = http.get(path_of(not_uploaded))
    assert (missing.status_code, missing.json()["error"]) == (404, "content_not_uploaded")
    market.marketplace.set_listed(bob, asset_id, False)
    delisted = http.get(path_of(asset_id))
    assert (delisted.status_code, delisted.json()["error"]) == (409, "asset_delisted")
    for response in (unknown, missing, delisted):
        assert set(response.json()) == {"error", "detail"} and "payment-required" not in response.headers
