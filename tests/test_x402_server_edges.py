"""x402 edges on the server (issue 12 §7), over both backends and a real socket.

- An authorization valid for longer than the advertised ``maxTimeoutSeconds`` (plus a small clock
  skew) is refused; one not valid yet is refused (the SDK's facilitator); the window the server
  advertises is accepted.
- One authorization pays for one request: sent with concurrent requests, it runs the model once and
  moves the price once; the others get a JSON 409 (in flight) or 402 (already used), never the output.
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
from x402.schemas import PaymentPayload, PaymentRequired

from marketplace.api import Settings, create_app
from marketplace.chain.eip712 import random_nonce
from marketplace.chain.market import AssetKind
from marketplace.chain.token import to_units
from marketplace.content import ContentStore
from marketplace.payments.x402 import DEFAULT_MAX_TIMEOUT_SECONDS, ERR_VALIDITY_TOO_LONG, VALIDITY_SKEW_SECONDS
from marketplace.payments.x402 import _Reservations as Reservations
from tests.test_x402 import serving, stock_client

PRICE = to_units("0.01")
DATA_PRICE = to_units("0.25")
CONTENT = b"rows\n" * 4000
CALLERS = 6


class CountingModel:
    """A model that takes a while and counts how often it ran."""

    def __init__(self) -> None:
        self.runs = 0
        self._lock = threading.Lock()

    def __call__(self, payload):
        with self._lock:
            self.runs += 1
        time.sleep(0.3)
        return {"ran": True}


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
def counting() -> CountingModel:
    return CountingModel()


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
