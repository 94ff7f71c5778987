"""A model that answers what JSON cannot carry, or fails, costs its caller nothing (issue 12 follow-up).

Attack: a handler that returns NaN or an infinity (or anything not JSON-serialisable) made the answer
fail to serialise *after* the channel debit was committed or the x402 payment settled: the caller was
charged and got a 500. Each call below goes over HTTP to a live server on 127.0.0.1, paid by channel
and by x402, on both backends; after every failure the payer's balance, the model's vault and the
channel's debits show that nothing was charged.
"""

from __future__ import annotations

import math

import httpx
import pytest

from marketplace.api import Settings, create_app
from marketplace.chain.records import AssetKind
from marketplace.chain.units import to_units
from marketplace.client import ApiClientError, MarketplaceClient
from marketplace.inference import InferenceError, openai_handler
from tests.helpers.scripted import DEEP, Scripted, endless
from tests.helpers.scripted import answer as reply
from tests.helpers.servers import serving

PRICE = to_units("0.01")


class _NoJson:
    """An object with no JSON form."""


def moody(payload):
    """A stand-in model whose answer (or failure) the caller picks with ``payload["answer"]``."""
    answer = payload["answer"]  # KeyError (422) without one
    if answer == "ok":
        return {"score": 0.5, "label": "é"}
    if answer == "nan":
        return {"score": math.nan}
    if answer == "inf":
        return [1.0, -math.inf]
    if answer == "object":
        return {"weights": _NoJson()}
    if answer == "surrogate":
        return "\ud800"  # a lone surrogate: no UTF-8 form
    if answer == "deep":
        deep: list = []
        for _ in range(5000):
            deep = [deep]
        return deep
    if answer == "upstream":
        raise InferenceError("the upstream model is down")
    if answer == "value":
        raise ValueError("want a list of four numbers")
    if answer == "type":
        raise TypeError("unsupported operand")
    if answer == "bug":
        raise ZeroDivisionError("division by zero")
    raise AssertionError(answer)


#: What each answer becomes: (status, code). None of them may charge.
FAILURES = {
    "nan": (502, "model_failed"),
    "inf": (502, "model_failed"),
    "object": (502, "model_failed"),
    "surrogate": (502, "model_failed"),
    "deep": (502, "model_failed"),
    "upstream": (502, "model_failed"),
    "bug": (502, "model_failed"),
    "value": (422, "bad_model_input"),
    "type": (422, "bad_model_input"),
    None: (422, "bad_model_input"),  # no "answer" key: the handler's KeyError
}


@pytest.fixture
def model(market, bob) -> int:
    return market.marketplace.publish(
        bob, kind=AssetKind.MODEL, content_hash=b"\x09" * 32, uri="ipfs://moody", price=PRICE,
        token=market.token.address, payees=[(bob.address, 10_000)],
    )  # fmt: skip


@pytest.fixture
def server_url(chain, deployment, tmp_path, model):
    settings = Settings(manifest=deployment.save(tmp_path / "deployment.json"), data_dir=tmp_path / "server",
                        settle_interval=3600)  # fmt: skip
    with serving(create_app(settings, chain=chain, model_handlers={model: moody})) as url:
        yield url


def _payload(answer: str | None) -> dict:
    return {} if answer is None else {"answer": answer}


def test_failed_answers_on_a_channel_are_never_debited(server_url, chain, market, alice, model):
    client = MarketplaceClient.connect(server_url, alice, chain)
    channel = client.open_channel(model, to_units(1))
    for answer, expected in FAILURES.items():
        with pytest.raises(ApiClientError) as failed:
            client.invoke(model, _payload(answer), channel_id=channel)
        assert (failed.value.status, failed.value.code) == expected, answer
        assert failed.value.detail.endswith("the call was not charged"), failed.value.detail
    good = client.invoke(model, _payload("ok"), channel_id=channel)
    assert good.output == {"score": 0.5, "label": "é"}
    assert good.payment.debited == PRICE  # one answered call: the ten failures were not debited
    count = client.channel_count(channel)
    assert count is not None and count.answered == PRICE


def test_failed_answers_over_x402_are_never_settled(server_url, chain, market, alice, model):
    client = MarketplaceClient.connect(server_url, alice, chain)
    vault = market.marketplace.vault_of(model)
    before_vault, before_payer = market.token.balance_of(vault), market.token.balance_of(alice.address)
    for answer, expected in FAILURES.items():
        with pytest.raises(ApiClientError) as failed:
            client.invoke(model, _payload(answer))
        assert (failed.value.status, failed.value.code) == expected, answer
        assert failed.value.detail.endswith("the payment was not settled"), failed.value.detail
        assert market.token.balance_of(alice.address) == before_payer, answer
    assert market.token.balance_of(vault) == before_vault
    paid = client.invoke(model, _payload("ok"))
    assert paid.output == {"score": 0.5, "label": "é"} and paid.payment.amount == PRICE
    assert market.token.balance_of(vault) - before_vault == PRICE


def test_an_upstream_answering_deep_or_endless_json_fails_the_call_not_the_gateway(
    chain, deployment, market, alice, model, tmp_path
):
    """A resold upstream (``openai+URL``) is a peer too: JSON 100,000 levels deep from it would crash the
    gateway's process, and an endless answer fill its memory. Both are 502 ``model_failed``, free, and the
    gateway keeps serving."""
    settings = Settings(manifest=deployment.save(tmp_path / "deployment.json"), data_dir=tmp_path / "server",
                        settle_interval=3600)  # fmt: skip
    with Scripted({"POST /chat/completions": reply(200, DEEP)}) as upstream:
        handler = openai_handler(upstream.url, model="resold")
        with serving(create_app(settings, chain=chain, model_handlers={model: handler})) as url:
            client = MarketplaceClient.connect(url, alice, chain)
            channel = client.open_channel(model, to_units(1))
            chat = {"messages": [{"role": "user", "content": "hi"}]}
            for script in (reply(200, DEEP), endless(upstream, announce=False)):
                upstream.routes["POST /chat/completions"] = script
                with pytest.raises(ApiClientError) as failed:
                    client.invoke(model, chat, channel_id=channel)
                assert (failed.value.status, failed.value.code) == (502, "model_failed")
                assert upstream.url not in failed.value.detail
                assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
            upstream.routes["POST /chat/completions"] = reply(200, b'{"choices": []}')
            assert client.invoke(model, chat, channel_id=channel).payment.debited == PRICE
