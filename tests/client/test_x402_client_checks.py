"""A client never pays more than the chain says, to anyone but the asset's vault (issue 12 §6, x402), both backends.

A fake gateway (``tests/helpers/fake_gateway.py``: a real HTTP server on 127.0.0.1 that serves the real
deployment manifest and steals whatever authorization it receives) answers 402 with requirements
that lie in one field at a time. The SDK (model call and download), and an agent wallet through it,
refuse with a typed error naming the field, the server's value and the chain's; no signature leaves
the client and no authorization is used on chain. The same fake, paid by a stock x402 client with
no checks, does steal (so the harness has teeth), and the honest server is still paid.
"""

from __future__ import annotations

import asyncio
import hashlib
from dataclasses import dataclass

import httpx
import pytest
from pydantic import SecretStr
from web3 import Web3
from x402 import x402ClientSync
from x402.http.utils import encode_payment_signature_header
from x402.schemas import NoMatchingRequirementsError, PaymentRequired

from agents import AgentError, AgentWallet, AuditLedger, Budget, PaymentRefused
from marketplace.api import Settings, create_app
from marketplace.chain.contracts import TestUSD
from marketplace.chain.deployment import DeploymentError
from marketplace.chain.records import AssetKind
from marketplace.chain.units import caip2, to_units
from marketplace.client import MarketplaceClient
from marketplace.client.checks import X402Terms, X402TermsRefused
from marketplace.client.sdk import X402DeliveryError, x402_payer
from marketplace.content import ContentStore
from tests.helpers.fake_gateway import FakeGateway
from tests.helpers.servers import serving
from tests.helpers.x402 import LIES, TEN_YEARS, altered, forged_deployment, scale_amount, stock_client

PRICE = to_units("0.01")
DATA_PRICE = to_units("0.25")
CONTENT = b"label,feature\n" + b"1,0.5\n" * 2000
GENEROUS = Budget(run_cap=to_units(100), asset_cap=to_units(50), call_ceiling=to_units(10))


def counter(payload):
    """A stand-in model: counts its inputs."""
    return {"count": len(payload)}


@dataclass(frozen=True)
class Assets:
    model: int
    dataset: int


@pytest.fixture
def assets(market, bob) -> Assets:
    """A model (0.01 tUSD a call) and a dataset (0.25 tUSD a download, content CONTENT), both bob's."""

    def publish(kind: AssetKind, price: int, content_hash: bytes) -> int:
        return market.marketplace.publish(
            bob, kind=kind, content_hash=content_hash, uri="ipfs://x", price=price, token=market.token.address,
            payees=[(bob.address, 10_000)],
        )  # fmt: skip

    return Assets(publish(AssetKind.MODEL, PRICE, b"\x09" * 32),
                  publish(AssetKind.DATASET, DATA_PRICE, hashlib.sha256(CONTENT).digest()))  # fmt: skip


@pytest.fixture
def thief(chain):
    """The fake gateway's owner: submits stolen authorizations and wants them paid to itself."""
    return chain.accounts[6]


@dataclass(frozen=True)
class Money:
    """Everything a theft or an overpayment would change."""

    payer: int
    payer_other: int
    thief: int
    vaults: int
    authorizations_used: int

    @classmethod
    def read(cls, market, payer, thief, assets: Assets, other: TestUSD, from_block: int) -> Money:
        token = market.token
        used = token.contract.events.AuthorizationUsed.get_logs(
            from_block=from_block, argument_filters={"authorizer": payer.address}
        )
        vaults = sum(token.balance_of(market.marketplace.vault_of(a)) for a in (assets.model, assets.dataset))
        return cls(token.balance_of(payer.address), other.balance_of(payer.address),
                   token.balance_of(thief.address), vaults, len(used))  # fmt: skip


def _other_token(chain, admin, payer) -> TestUSD:
    """A second token, in which the payer holds 100 units too."""
    token = TestUSD(chain, chain.deploy("TestUSD", admin.address, sender=admin).address)
    token.mint(admin, payer.address, to_units(100))
    return token


def test_sdk_and_agent_wallet_refuse_a_lying_gateway(chain, deployment, market, admin, alice, thief, assets,
                                                      tmp_path):  # fmt: skip
    """Each lie in turn (one fake gateway, one SDK client: the fixtures cost more than the checks)."""
    other = _other_token(chain, admin, alice)
    vault = market.marketplace.vault_of(assets.model)
    values = {  # field: (the server's value, the chain's) in the refusal of a model call
        "amount": (str(950 * PRICE), str(PRICE)),
        "payTo": (thief.address, vault),
        "asset": (other.address, market.token.address),
        "network": (caip2(8453), caip2(chain.chain_id)),
        "scheme": ("upto", "exact"),
        "maxTimeoutSeconds": (str(TEN_YEARS), "900"),
        "extra.name": ("Tether USD", "Test USD"),
        "extra.assetTransferMethod": ("permit2", "absent"),
        "x402Version": ("1", "2"),
    }
    start = chain.block_number()
    before = Money.read(market, alice, thief, assets, other, start)
    with FakeGateway(chain, deployment, thief, lambda required: required) as fake:
        wallet = AgentWallet.connect(alice, GENEROUS, AuditLedger(tmp_path / "ledger.jsonl"), fake.url, chain)
        client = wallet.client
        for case, (make_lie, field) in LIES.items():
            fake.lie = make_lie(thief.address, other.address)
            with pytest.raises(X402TermsRefused) as call:
                client.invoke(assets.model, [1, 2])
            with pytest.raises(X402TermsRefused) as download:
                client.download_x402(assets.dataset)
            with pytest.raises(PaymentRefused) as agent:
                wallet.buy_over_x402(assets.dataset)

            # One line naming the field, the server's value and the chain's.
            offered, on_chain = values[field]
            for refused, asset_id in ((call.value, assets.model), (download.value, assets.dataset)):
                assert (refused.field, refused.asset_id) == (field, asset_id), case
                message = str(refused)
                assert "\n" not in message and message.endswith("nothing was signed"), message
                assert f"asks {field} " in message, message
            message = str(call.value)
            assert f"asks {field} {offered}, but " in message, message
            assert message.split(", but ")[1].split(" is ", 1)[1].startswith(on_chain + ";"), message
            cause = agent.value.__cause__
            assert isinstance(cause, X402TermsRefused) and cause.field == field, case
            assert wallet.ledger.entries() == [] and wallet.guard.spent == 0, case
            assert fake.signatures == [] and fake.stolen == [], case  # nothing left the client
    assert Money.read(market, alice, thief, assets, other, start) == before  # no nonce used, no token moved


def test_the_fake_gateway_robs_a_client_that_does_not_check(chain, deployment, market, alice, thief, assets):
    """The attack of issue 12 §6, as a stock x402 client (spend controls allowing the token) suffers it."""
    before_thief = market.token.balance_of(thief.address)
    lie = altered("payTo", thief.address)

    def robbery(required: dict) -> dict:
        return scale_amount(lie(required))

    with FakeGateway(chain, deployment, thief, robbery) as fake:
        required = PaymentRequired.model_validate(fake.honest_required(assets.model, fake.url))
        required = PaymentRequired.model_validate(robbery(required.model_dump(by_alias=True, exclude_none=True)))
        payload = stock_client(alice, market.token.address, x402ClientSync).create_payment_payload(required)
        httpx.post(f"{fake.url}/v1/models/{assets.model}/invoke", json={"input": [1]},
                   headers={"PAYMENT-SIGNATURE": encode_payment_signature_header(payload)})  # fmt: skip
    assert len(fake.stolen) == 1
    assert market.token.balance_of(thief.address) - before_thief == 950 * PRICE


def test_a_payment_that_moved_without_the_content_is_still_counted(chain, deployment, market, alice, thief, assets,
                                                                    tmp_path):  # fmt: skip
    """A gateway that asks honestly, settles the authorization itself and sends no content: the SDK says
    the money moved (X402DeliveryError, from the chain's authorizationState) and the agent wallet counts
    it against its caps and its ledger, so such a gateway cannot drain the wallet past its run cap."""
    vault = market.marketplace.vault_of(assets.dataset)
    before = (market.token.balance_of(alice.address), market.token.balance_of(vault))
    with FakeGateway(chain, deployment, thief, lambda required: required) as fake:
        wallet = AgentWallet.connect(alice, GENEROUS, AuditLedger(tmp_path / "ledger.jsonl"), fake.url, chain)
        client = wallet.client
        with pytest.raises(X402DeliveryError) as undelivered:
            client.download_x402(assets.dataset)
        with pytest.raises(AgentError) as agent:
            wallet.buy_over_x402(assets.dataset)
    assert len(fake.stolen) == 2
    payment = undelivered.value.payment
    assert (payment.amount, payment.pay_to, payment.payer) == (DATA_PRICE, vault, alice.address)
    assert "is used on chain" in str(undelivered.value) and "PAYMENT-RESPONSE" in str(undelivered.value)
    assert isinstance(agent.value.__cause__, X402DeliveryError)
    (entry,) = wallet.ledger.entries()
    assert (entry.kind, entry.amount, entry.ref) == ("x402", DATA_PRICE, "x402:" + agent.value.__cause__.nonce)
    assert wallet.guard.spent == DATA_PRICE
    assert (before[0] - market.token.balance_of(alice.address), market.token.balance_of(vault) - before[1]) == (
        2 * DATA_PRICE, 2 * DATA_PRICE,
    )  # fmt: skip


def test_a_gateway_following_another_deployment_is_refused_when_the_client_trusts_its_own(
    chain, deployment, market, alice, thief, assets
):
    """The chain checks are relative to the deployment the server names; a client that pins the one it
    trusts (``trusted=``, the CLI's $AGENTMARKET_MANIFEST) refuses a server serving a copy."""
    forged, asset_id = forged_deployment(chain, deployment, thief)
    before = market.token.balance_of(alice.address)
    with FakeGateway(chain, forged, thief, lambda required: required) as fake:
        with pytest.raises(DeploymentError) as refused:
            MarketplaceClient.connect(fake.url, alice, chain, trusted=deployment)
        assert fake.signatures == []
        # Without a pin, the server's manifest is the trust anchor: the copy's prices and vaults are paid.
        MarketplaceClient.connect(fake.url, alice, chain).invoke(asset_id, [1])
    message = str(refused.value)
    assert "follows another deployment than your manifest" in message
    assert forged.contracts["AgentRegistry"].address in message  # the first contract (by name) that differs
    assert before - market.token.balance_of(alice.address) == 950 * PRICE


def test_the_sdks_x402_client_refuses_on_its_own_what_the_chain_does_not_say(market, alice, assets):
    """``x402_payer`` is bound to one payment's terms: its spend controls and its before-payment hook
    refuse a lying requirement even when handed one directly."""
    terms = X402Terms.from_chain(market, assets.model)
    honest = {"scheme": "exact", "network": terms.network, "amount": str(PRICE), "asset": terms.asset,
              "payTo": terms.pay_to, "maxTimeoutSeconds": 300,
              "extra": {"name": "Test USD", "version": "1"}}  # fmt: skip

    def required(**changes) -> PaymentRequired:
        return PaymentRequired.model_validate({"x402Version": 2, "accepts": [{**honest, **changes}]})

    payer = x402_payer(alice, terms)
    with pytest.raises(X402TermsRefused) as hooked:
        payer.create_payment_payload(required(payTo=alice.address))
    assert hooked.value.field == "payTo"
    with pytest.raises(NoMatchingRequirementsError):  # spend controls: over the price, or another token
        payer.create_payment_payload(required(amount=str(PRICE + 1)))
    with pytest.raises(X402TermsRefused) as long_lived:
        payer.create_payment_payload(required(maxTimeoutSeconds=TEN_YEARS))
    assert long_lived.value.field == "maxTimeoutSeconds"
    signed = payer.create_payment_payload(required())
    assert signed.payload["authorization"]["to"] == terms.pay_to
    assert signed.payload["authorization"]["value"] == str(PRICE)


# ---------------------------------------------------------------------- the honest server still works


@pytest.fixture
def honest_url(chain, deployment, tmp_path, relayer, assets, bob):
    """The real server, over a socket, serving the model and holding the dataset's content."""

    async def once():
        yield CONTENT

    data_dir = tmp_path / "server"
    store = ContentStore.for_chain(data_dir / "content", chain, deployment.address("Marketplace"))
    asyncio.run(store.put(once(), asset_id=assets.dataset, version=1, sha256="0x" + hashlib.sha256(CONTENT).hexdigest(),
                          uploader=bob.address, max_bytes=len(CONTENT)))  # fmt: skip
    settings = Settings(manifest=deployment.save(tmp_path / "deployment.json"), data_dir=data_dir,
                        relayer_key=SecretStr(Web3.to_hex(relayer.key)), settle_interval=3600)  # fmt: skip
    with serving(create_app(settings, chain=chain, model_handlers={assets.model: counter})) as url:
        yield url


def test_the_honest_gateway_is_paid_through_the_same_checks(chain, market, alice, assets, honest_url, tmp_path):
    model_vault, data_vault = (market.marketplace.vault_of(a) for a in (assets.model, assets.dataset))
    before = market.token.balance_of(alice.address)
    client = MarketplaceClient.connect(honest_url, alice, chain)

    called = client.invoke(assets.model, [1, 2, 3])
    assert called.output == {"count": 3}
    assert (called.payment.amount, called.payment.pay_to) == (PRICE, model_vault)

    paid = client.download_x402(assets.dataset, tmp_path / "data.csv")
    assert (tmp_path / "data.csv").read_bytes() == CONTENT and paid.content == b""
    assert (paid.payment.amount, paid.payment.pay_to, paid.payment.payer) == (DATA_PRICE, data_vault, alice.address)
    assert chain.w3.eth.get_transaction_receipt(paid.payment.transaction)["status"] == 1

    wallet = AgentWallet.connect(alice, GENEROUS, AuditLedger(tmp_path / "ledger.jsonl"), honest_url, chain)
    content, entry = wallet.buy_over_x402(assets.dataset)
    assert content == CONTENT
    assert (entry.kind, entry.amount, wallet.guard.spent) == ("x402", DATA_PRICE, DATA_PRICE)
    assert chain.w3.eth.get_transaction_receipt(entry.ref)["status"] == 1

    assert market.token.balance_of(model_vault) == PRICE
    assert market.token.balance_of(data_vault) == 2 * DATA_PRICE
    assert before - market.token.balance_of(alice.address) == PRICE + 2 * DATA_PRICE


def test_a_price_above_the_callers_limit_is_refused_before_signing(chain, market, alice, assets, honest_url):
    client = MarketplaceClient.connect(honest_url, alice, chain)
    before = market.token.balance_of(alice.address)
    with pytest.raises(X402TermsRefused) as refused:
        client.download_x402(assets.dataset, max_amount=DATA_PRICE - 1)
    assert refused.value.field == "amount" and "your limit (max_amount)" in str(refused.value)
    assert market.token.balance_of(alice.address) == before
