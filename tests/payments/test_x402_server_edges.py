"""x402 edges on the server (issue 12 §7), over both backends and a real socket.

- An authorization valid for longer than the advertised ``maxTimeoutSeconds`` (plus a small clock
  skew) is refused; one not valid yet is refused (the SDK's facilitator); the window the server
  advertises is accepted.
- One authorization pays for one request: sent with concurrent requests, it runs the model once and
  moves the price once; the others get a JSON 409 (in flight) or 402 (already used), never the output.
- A payer's authorizations in flight are held against its balance together: sent at once, only what the
  balance covers runs (402 for the rest, before any model runs or any byte is sent).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from collections import Counter

import httpx
import pytest
from pydantic import SecretStr
from web3 import Web3
from x402 import x402ClientSync
from x402.http.utils import decode_payment_required_header, encode_payment_signature_header
from x402.mechanisms.evm.constants import ERR_INSUFFICIENT_BALANCE
from x402.schemas import PaymentPayload, PaymentRequired

from marketplace.api import Settings, create_app
from marketplace.chain.eip712 import random_nonce
from marketplace.chain.records import AssetKind
from marketplace.chain.units import to_units
from marketplace.content import ContentStore
from marketplace.payments.x402 import (
    DEFAULT_MAX_TIMEOUT_SECONDS,
    ERR_VALIDITY_TOO_LONG,
    VALIDITY_SKEW_SECONDS,
    Shortfall,
)
from marketplace.payments.x402 import _Reservations as Reservations
from tests.helpers.models import SlowModel
from tests.helpers.servers import serving
from tests.helpers.x402 import stock_client

PRICE = to_units("0.01")
DATA_PRICE = to_units("0.25")
CONTENT = b"rows\n" * 4000
CALLERS = 6


@pytest.fixture
def model(market, bob) -> int:
    return market.marketplace.publish(
        bob, kind=AssetKind.MODEL, content_hash=b"\x0c" * 32, uri="ipfs://m", price=PRICE,
        token=market.token.address, payees=[(bob.address, 10_000)],
    )  # fmt: skip


@pytest.fixture
def dataset(market, bob) -> int:
    return market.marketplace.publish(
        bob, kind=AssetKind.DATASET, content_hash=hashlib.sha256(CONTENT).digest(), uri="ipfs://d", price=DATA_PRICE,
        token=market.token.address, payees=[(bob.address, 10_000)],
    )  # fmt: skip


@pytest.fixture
def counting() -> SlowModel:
    return SlowModel(0.3, lambda _payload: {"ran": True})


@pytest.fixture
def url(chain, deployment, tmp_path, relayer, model, dataset, counting, bob):
    """The real server on a socket: serving the counting model, holding the dataset's content."""

    async def once():
        yield CONTENT

    data_dir = tmp_path / "server"
    store = ContentStore.for_chain(data_dir / "content", chain, deployment.address("Marketplace"))
    asyncio.run(store.put(once(), asset_id=dataset, version=1, sha256="0x" + hashlib.sha256(CONTENT).hexdigest(),
                          uploader=bob.address, max_bytes=len(CONTENT)))  # fmt: skip
    settings = Settings(manifest=deployment.save(tmp_path / "deployment.json"), data_dir=data_dir,
                        relayer_key=SecretStr(Web3.to_hex(relayer.key)), settle_interval=3600)  # fmt: skip
    with serving(create_app(settings, chain=chain, model_handlers={model: counting})) as base_url:
        yield base_url


def _required(url: str, method: str, path: str) -> PaymentRequired:
    unpaid = httpx.request(method, url + path, json={"input": [1]} if method == "POST" else None)
    assert unpaid.status_code == 402, unpaid.text
    return decode_payment_required_header(unpaid.headers["payment-required"])


def _crafted(required: PaymentRequired, market, payer, *, valid_after: int, valid_before: int) -> str:
    """A PAYMENT-SIGNATURE for the server's requirement, with a validity window of our choosing,
    signed with our own EIP-712 code (not the x402 SDK's)."""
    accepted = required.accepts[0]
    auth = market.token.sign_transfer(payer, accepted.pay_to, int(accepted.amount), valid_after=valid_after,
                                      valid_before=valid_before, nonce=random_nonce())  # fmt: skip
    inner = {
        "authorization": {"from": payer.address, "to": accepted.pay_to, "value": accepted.amount,
                          "validAfter": str(valid_after), "validBefore": str(valid_before),
                          "nonce": "0x" + auth.nonce.hex()},
        "signature": "0x" + auth.signature.packed.hex(),
    }  # fmt: skip
    return encode_payment_signature_header(PaymentPayload(payload=inner, accepted=accepted, resource=required.resource))


def test_authorizations_valid_longer_than_advertised_are_refused(url, market, alice, model, dataset, counting):
    invoke, download = f"/v1/models/{model}/invoke", f"/v1/assets/{dataset}/x402"
    vaults = [market.marketplace.vault_of(a) for a in (model, dataset)]
    before = [market.token.balance_of(v) for v in (*vaults, alice.address)]
    for method, path in (("POST", invoke), ("GET", download)):
        required = _required(url, method, path)
        assert required.accepts[0].max_timeout_seconds == DEFAULT_MAX_TIMEOUT_SECONDS
        now = int(time.time())
        for lifetime in (10 * 365 * 86_400, DEFAULT_MAX_TIMEOUT_SECONDS + VALIDITY_SKEW_SECONDS + 30):
            header = _crafted(required, market, alice, valid_after=0, valid_before=now + lifetime)
            refused = httpx.request(method, url + path, json={"input": [1]}, headers={"PAYMENT-SIGNATURE": header})
            assert refused.status_code == 402, refused.text
            body = refused.json()
            assert (body["error"], ERR_VALIDITY_TOO_LONG in body["detail"]) == ("payment_invalid", True), body
            assert f"longer than the {DEFAULT_MAX_TIMEOUT_SECONDS} s this server allows" in body["detail"]
            assert decode_payment_required_header(refused.headers["payment-required"]).error == ERR_VALIDITY_TOO_LONG
        not_yet = _crafted(required, market, alice, valid_after=now + 120, valid_before=now + 200)
        early = httpx.request(method, url + path, json={"input": [1]}, headers={"PAYMENT-SIGNATURE": not_yet})
        assert (early.status_code, early.json()["error"]) == (402, "payment_invalid")
        assert "not valid yet" in early.json()["detail"]
    assert counting.runs == 0
    assert [market.token.balance_of(v) for v in (*vaults, alice.address)] == before

    # The window the server advertises is accepted, for a call and for a download.
    for method, path, vault, price in (("POST", invoke, vaults[0], PRICE), ("GET", download, vaults[1], DATA_PRICE)):
        now = int(time.time())
        header = _crafted(_required(url, method, path), market, alice, valid_after=0,
                          valid_before=now + DEFAULT_MAX_TIMEOUT_SECONDS)  # fmt: skip
        held = market.token.balance_of(vault)
        paid = httpx.request(method, url + path, json={"input": [1]}, headers={"PAYMENT-SIGNATURE": header})
        assert paid.status_code == 200, paid.text
        assert market.token.balance_of(vault) - held == price
    assert counting.runs == 1
    assert market.token.balance_of(alice.address) == before[2] - PRICE - DATA_PRICE


def _concurrently(requests) -> list[httpx.Response]:
    """Send every request at once (threads lined up on a barrier); the responses, in order."""
    barrier = threading.Barrier(len(requests))
    responses: list[httpx.Response | None] = [None] * len(requests)

    def send(index: int) -> None:
        method, target, kwargs = requests[index]
        with httpx.Client(timeout=60) as client:
            barrier.wait()
            responses[index] = client.request(method, target, **kwargs)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert all(r is not None for r in responses)
    return responses  # type: ignore[return-value]


def _outcomes(responses: list[httpx.Response]) -> Counter:
    return Counter((r.status_code, r.json()["error"] if r.status_code != 200 else "paid") for r in responses)


def test_one_authorization_sent_with_concurrent_calls_runs_the_model_once(url, market, alice, model, counting):
    vault = market.marketplace.vault_of(model)
    before = (market.token.balance_of(vault), market.token.balance_of(alice.address))
    path = f"/v1/models/{model}/invoke"
    payload = stock_client(alice, market.token.address, x402ClientSync).create_payment_payload(
        _required(url, "POST", path)
    )
    header = {"PAYMENT-SIGNATURE": encode_payment_signature_header(payload)}

    responses = _concurrently([("POST", url + path, {"json": {"input": [i]}, "headers": header})
                               for i in range(CALLERS)])  # fmt: skip

    outcomes = _outcomes(responses)
    assert outcomes[(200, "paid")] == 1, outcomes
    assert set(outcomes) <= {(200, "paid"), (409, "payment_in_flight"), (402, "payment_invalid")}, outcomes
    assert outcomes[(409, "payment_in_flight")] >= 1, outcomes  # the model sleeps: the others came while it ran
    for response in responses:
        if response.status_code != 200:
            assert set(response.json()) >= {"error", "detail"} and "output" not in response.json()
    in_flight = next(r for r in responses if r.status_code == 409).json()["detail"]
    assert "sign a new one" in in_flight
    assert counting.runs == 1
    assert market.token.balance_of(vault) - before[0] == PRICE
    assert before[1] - market.token.balance_of(alice.address) == PRICE

    # Once settled, the same authorization is "already used" and the model does not run again.
    replay = httpx.post(url + path, json={"input": [9]}, headers=header)
    assert (replay.status_code, replay.json()["error"]) == (402, "payment_invalid")
    assert "already used" in replay.json()["detail"] and counting.runs == 1


def test_one_authorization_sent_with_concurrent_downloads_sends_the_content_once(url, market, alice, dataset):
    vault = market.marketplace.vault_of(dataset)
    before = market.token.balance_of(vault)
    path = f"/v1/assets/{dataset}/x402"
    payload = stock_client(alice, market.token.address, x402ClientSync).create_payment_payload(
        _required(url, "GET", path)
    )
    header = {"PAYMENT-SIGNATURE": encode_payment_signature_header(payload)}

    responses = _concurrently([("GET", url + path, {"headers": header}) for _ in range(CALLERS)])

    outcomes = _outcomes(responses)
    assert outcomes[(200, "paid")] == 1, outcomes
    assert set(outcomes) <= {(200, "paid"), (409, "payment_in_flight"), (402, "payment_invalid")}, outcomes
    assert [r.content for r in responses if r.status_code == 200] == [CONTENT]
    assert all(CONTENT[:64] not in r.content for r in responses if r.status_code != 200)
    assert market.token.balance_of(vault) - before == DATA_PRICE


def test_reservations_forget_a_settled_authorization_once_it_expired():
    reservations = Reservations()
    first, second = ("0xaa", b"\x01" * 32), ("0xaa", b"\x02" * 32)
    assert reservations.reserve(first, now=1_000) is None
    assert reservations.reserve(first, now=1_000) == "in_flight"
    reservations.release(first)
    assert reservations.reserve(first, now=1_001) is None  # released after a failure: it may pay again
    reservations.settled(first, valid_before=1_300)
    assert reservations.reserve(first, now=1_300) == "settled"
    reservations.release(first)  # a settled one is never released
    assert reservations.reserve(first, now=1_300) == "settled"
    assert reservations.reserve(second, now=1_301) is None  # first expired: forgotten
    assert len(reservations) == 1


def test_a_payers_concurrent_authorizations_run_only_what_its_balance_covers(url, market, admin, carol, model, dataset,
                                                                             counting):  # fmt: skip
    """Several authorizations at once, each for a price the payer holds, but not for all of them together: a
    download and three calls from a payer holding the download's price plus one call's. Only what the balance
    covers runs (held per payer across routes and assets); the rest is refused before any model runs or any
    byte is sent, so every run and every download is paid."""
    held = DATA_PRICE + PRICE
    market.token.mint(admin, carol.address, held)
    vaults = {a: market.marketplace.vault_of(a) for a in (model, dataset)}
    before = {a: market.token.balance_of(v) for a, v in vaults.items()}
    invoke, download = f"/v1/models/{model}/invoke", f"/v1/assets/{dataset}/x402"
    payer = stock_client(carol, market.token.address, x402ClientSync)
    requests = [("GET", url + download, {"headers": {"PAYMENT-SIGNATURE": encode_payment_signature_header(
        payer.create_payment_payload(_required(url, "GET", download)))}})]  # fmt: skip
    for i in range(3):
        header = encode_payment_signature_header(payer.create_payment_payload(_required(url, "POST", invoke)))
        requests.append(("POST", url + invoke, {"json": {"input": [i]}, "headers": {"PAYMENT-SIGNATURE": header}}))

    responses = _concurrently(requests)

    received = {a: market.token.balance_of(v) - before[a] for a, v in vaults.items()}
    calls_paid = sum(r.status_code == 200 for r in responses[1:])
    assert received[model] == calls_paid * PRICE and counting.runs == calls_paid, (received, counting.runs)
    assert received[dataset] == (DATA_PRICE if responses[0].status_code == 200 else 0)
    assert 0 < sum(received.values()) <= held
    assert market.token.balance_of(carol.address) == held - sum(received.values())
    refused = [r for r in responses if r.status_code != 200]
    assert refused, [r.status_code for r in responses]  # the four together cost more than the payer holds
    for response in refused:
        assert (response.status_code, response.json()["error"]) == (402, "payment_invalid"), response.text
        assert decode_payment_required_header(response.headers["payment-required"]).error == ERR_INSUFFICIENT_BALANCE
        assert CONTENT[:64] not in response.content and "output" not in response.json()


def test_reservations_hold_a_payers_authorizations_against_its_balance():
    reservations = Reservations()
    token, other_token = "0xT0", "0xT1"
    a, b, c = (("0xaa", bytes([i]) * 32) for i in (1, 2, 3))
    balance = {"now": 200}
    for key in (a, b, c):
        assert reservations.reserve(key, now=1_000) is None
    assert reservations.hold(a, token, 100, lambda: balance["now"]) is None
    assert reservations.hold(b, token, 100, lambda: balance["now"]) is None
    assert reservations.hold(c, token, 100, lambda: balance["now"]) == Shortfall(200, 100, 200, 2)
    assert reservations.hold(c, other_token, 100, lambda: 100) is None  # another token: another balance
    reservations.release(c)
    balance["now"] = 100  # a settled: the balance shows it
    reservations.settled(a, valid_before=1_300)
    assert reservations.held("0xAA", token) == 100  # b only
    assert reservations.reserve(c, now=1_000) is None
    assert reservations.hold(c, token, 100, lambda: balance["now"]) == Shortfall(100, 100, 100, 1)
    reservations.release(b)
    assert reservations.hold(c, token, 100, lambda: balance["now"]) is None

    def unreachable() -> int:
        raise ConnectionError("the chain is down")

    d = ("0xaa", b"\x04" * 32)
    assert reservations.reserve(d, now=1_000) is None
    with pytest.raises(ConnectionError):
        reservations.hold(d, token, 1, unreachable)
    assert reservations.held("0xaa", token) == 100  # nothing held for d
    reservations.settled(c, valid_before=1_300)
    reservations.release(d)
    assert (reservations.held("0xaa", token), reservations.held("0xaa", other_token)) == (0, 0)
    assert reservations._funds == {} and reservations._held_by == {}  # nothing kept for a payer with nothing in flight
