"""Price bait, the whole kind (red-team finding 2): nothing that re-reads a price after its caller approved one
signs above it.

A model's or dataset's owner runs the gateway a buyer talks to. In the middle of a request it raises the
asset's price on chain (``setPrice``) and asks for the new one: on a channel call with a 402
``insufficient_voucher``, on an x402 payment by answering the unpaid request with a 402 at the new price
(every check against the chain passes: it *is* the price on chain now). The SDK's channel and x402 calls,
its x402 downloads, an agent wallet's x402 download and the CLI's ``invoke``/``download --x402`` (whose
``--max-price`` defaults to the price when the command starts) must refuse with ``PriceChanged`` and sign
nothing more; a change within the caller's ``max_price`` is paid at the new price. Real anvil, real HTTP.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount

from agents import AgentWallet, AuditLedger, Budget
from agents.errors import PaymentRefused
from marketplace.chain import Chain
from marketplace.chain.deployment import Deployment
from marketplace.chain.market import Market
from marketplace.chain.records import AssetKind
from marketplace.chain.units import caip2, to_units
from marketplace.client import MarketplaceClient, PriceChanged
from marketplace.client.vouchers import ChannelCount
from marketplace.protocol.vouchers import HEADER, Voucher
from tests.helpers.chain import anvil_market, fund, publish_model
from tests.helpers.cli import AGENTMARKET, assert_one_line_error
from tests.helpers.fake_gateway import settlement_body
from tests.helpers.servers import Reply, hostile_server, receipt_body, terms_body

pytestmark = pytest.mark.backend("anvil")

PRICE = to_units("0.01")
PASSWORD = "pw"


@pytest.fixture(scope="module")
def env() -> Iterator[tuple[Chain, Deployment, Market]]:
    with anvil_market() as world:
        yield world


def required(chain: Chain, market: Market, asset_id: int, url: str) -> dict:
    """The x402 requirements an honest gateway answers: the asset's price, token and vault as the chain says now."""
    return {
        "x402Version": 2,
        "resource": {"url": url, "description": f"asset {asset_id}", "mimeType": "application/json"},
        "accepts": [{"scheme": "exact", "network": caip2(chain.chain_id),
                     "amount": str(market.marketplace.asset(asset_id).price), "asset": market.token.address,
                     "payTo": market.marketplace.vault_of(asset_id), "maxTimeoutSeconds": 300,
                     "extra": {"name": "Test USD", "version": "1"}}],
    }  # fmt: skip


@dataclass
class OwnersGateway:
    """The asset owner's gateway: honest terms, then ``new_price`` set on chain in the middle of the first paid
    request (a voucher), or before answering an unpaid x402 request; records what it was sent."""

    chain: Chain
    deployment: Deployment
    owner: LocalAccount
    asset_id: int
    new_price: int
    bait: bool = True  # False: every voucher is answered, nothing repriced
    vouchers: list[Voucher] = field(default_factory=list)
    signatures: list[str] = field(default_factory=list)

    @property
    def market(self) -> Market:
        return self.deployment.market(self.chain)

    def reprice(self) -> None:
        if self.market.marketplace.asset(self.asset_id).price != self.new_price:
            self.market.marketplace.set_price(self.owner, self.asset_id, self.new_price)

    def route(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply | None:
        if path == "/v1/deployment":
            return Reply(200, self.deployment.to_json())
        if path == "/v1/payments":
            return Reply(200, terms_body(self.market, self.owner.address, [self.asset_id]))
        if path not in (f"/v1/models/{self.asset_id}/invoke", f"/v1/assets/{self.asset_id}/x402"):
            return None
        if HEADER.lower() in headers:
            self.vouchers.append(Voucher.from_header(headers[HEADER.lower()]))
            if self.bait and len(self.vouchers) == 1:
                self.reprice()
                asked = {"channel": {"minMaxClaimableAmount": str(self.new_price)}}
                return Reply(402, {"error": "payment_required", "detail": "the price changed",
                                   "reason": "insufficient_voucher", "requirements": asked})  # fmt: skip
            price = self.market.marketplace.asset(self.asset_id).price
            return Reply(200, receipt_body({"label": 7}, self.vouchers[-1], self.asset_id, price))
        if "payment-signature" in headers:
            self.signatures.append(headers["payment-signature"])
            return Reply(200, {"output": {"label": 7}, "payment": settlement_body(headers["payment-signature"])})
        self.reprice()
        header = base64.b64encode(json.dumps(required(self.chain, self.market, self.asset_id, path)).encode())
        return Reply(402, {"error": "payment_required", "detail": "pay"}, {"PAYMENT-REQUIRED": header.decode()})


def _dataset(market: Market, owner: LocalAccount, price: int) -> int:
    return market.marketplace.publish(owner, kind=AssetKind.DATASET, content_hash=b"\x5a" * 32, uri="d", price=price,
                                      token=market.token.address, payees=[(owner.address, 10_000)])  # fmt: skip


def test_a_channel_call_signs_nothing_above_the_price_it_began_with(env):
    chain, deployment, market = env
    owner, payer = fund(chain, market, 0), fund(chain, market, 10)
    gateway = OwnersGateway(chain, deployment, owner, publish_model(market, owner, PRICE), new_price=100 * PRICE)
    with hostile_server(gateway.route) as url:
        client = MarketplaceClient.connect(url, payer, chain, trusted=deployment)
        channel = client.open_channel(gateway.asset_id, 200 * PRICE)
        with pytest.raises(PriceChanged) as refused:
            client.invoke(gateway.asset_id, [1], channel_id=channel)
    assert [v.max_claimable_amount for v in gateway.vouchers] == [PRICE]  # the old price, once; never the new one
    assert (refused.value.price, refused.value.approved) == (100 * PRICE, PRICE)
    assert str(refused.value).endswith("nothing was signed") and "\n" not in str(refused.value)
    assert client.channel_count(channel) == ChannelCount(answered=0, signed=PRICE)  # refused: not answered


def test_a_price_change_within_max_price_is_paid_at_the_new_price(env):
    chain, deployment, market = env
    owner, payer = fund(chain, market, 0), fund(chain, market, 10)
    gateway = OwnersGateway(chain, deployment, owner, publish_model(market, owner, PRICE), new_price=2 * PRICE)
    with hostile_server(gateway.route) as url:
        client = MarketplaceClient.connect(url, payer, chain, trusted=deployment)
        channel = client.open_channel(gateway.asset_id, 10 * PRICE)
        answer = client.invoke(gateway.asset_id, [1], channel_id=channel, max_price=3 * PRICE)
    assert answer.output == {"label": 7}
    assert [v.max_claimable_amount for v in gateway.vouchers] == [PRICE, 2 * PRICE]
    assert client.channel_count(channel) == ChannelCount(answered=2 * PRICE, signed=2 * PRICE)


def test_a_price_lowered_between_calls_is_paid_at_the_new_price(env, tmp_path):
    """The price is read at every call: an agent wallet that checked the lowered price is not refused."""
    chain, deployment, market = env
    owner, payer = fund(chain, market, 0), fund(chain, market, 10)
    gateway = OwnersGateway(chain, deployment, owner, publish_model(market, owner, 2 * PRICE), 0, bait=False)
    with hostile_server(gateway.route) as url:
        budget = Budget(run_cap=to_units(10), asset_cap=to_units(10), call_ceiling=2 * PRICE)
        wallet = AgentWallet.connect(payer, budget, AuditLedger(tmp_path / "ledger.jsonl"), url, chain,
                                     trusted=deployment)  # fmt: skip
        channel = int(wallet.open_channel(gateway.asset_id, 10 * PRICE).ref.split(":")[1])
        wallet.invoke(gateway.asset_id, [1], channel)
        market.marketplace.set_price(owner, gateway.asset_id, PRICE)
        wallet.invoke(gateway.asset_id, [1], channel)
    assert [v.max_claimable_amount for v in gateway.vouchers] == [2 * PRICE, 3 * PRICE]
    assert [e.amount for e in wallet.ledger.entries() if e.kind == "voucher"] == [2 * PRICE, PRICE]


def test_a_max_price_below_the_price_signs_nothing(env):
    chain, deployment, market = env
    owner, payer = fund(chain, market, 0), fund(chain, market, 10)
    model = publish_model(market, owner, PRICE)
    gateway = OwnersGateway(chain, deployment, owner, model, new_price=PRICE)  # honest: the price never moves
    before = market.token.balance_of(payer.address)
    with hostile_server(gateway.route) as url:
        client = MarketplaceClient.connect(url, payer, chain, trusted=deployment)
        channel = client.open_channel(model, 10 * PRICE)
        for channel_id in (channel, None):  # a voucher, then x402
            with pytest.raises(PriceChanged) as refused:
                client.invoke(model, [1], channel_id=channel_id, max_price=PRICE - 1)
            assert "your limit (max_price) of 9999" in str(refused.value)
    assert gateway.vouchers == [] and gateway.signatures == []
    assert market.token.balance_of(payer.address) == before - 10 * PRICE  # the deposit only


def test_an_x402_payment_refuses_a_price_raised_before_the_402(env, tmp_path):
    chain, deployment, market = env
    owner, payer = fund(chain, market, 0), fund(chain, market, 10)
    model = OwnersGateway(chain, deployment, owner, publish_model(market, owner, PRICE), new_price=50 * PRICE)
    data = OwnersGateway(chain, deployment, owner, _dataset(market, owner, PRICE), new_price=50 * PRICE)
    budget = Budget(run_cap=to_units(10), asset_cap=to_units(10), call_ceiling=to_units(1))
    before = market.token.balance_of(payer.address)
    with hostile_server(model.route) as model_url, hostile_server(data.route) as data_url:
        client = MarketplaceClient.connect(model_url, payer, chain, trusted=deployment)
        with pytest.raises(PriceChanged) as call:
            client.invoke(model.asset_id, [1], max_price=PRICE)
        wallet = AgentWallet.connect(payer, budget, AuditLedger(tmp_path / "ledger.jsonl"), data_url, chain,
                                     trusted=deployment)  # fmt: skip
        buyer = wallet.client
        with pytest.raises(PriceChanged) as download:
            buyer.download_x402(data.asset_id, max_amount=PRICE)
        market.marketplace.set_price(owner, data.asset_id, PRICE)  # again: the agent wallet checks PRICE first
        with pytest.raises(PaymentRefused) as agent:
            wallet.buy_over_x402(data.asset_id)
    assert call.value.price == download.value.price == 50 * PRICE
    assert "above your limit (max_amount) of 10000" in str(agent.value)
    assert model.signatures == data.signatures == []
    assert market.token.balance_of(payer.address) == before
    assert (wallet.ledger.entries(), wallet.guard.spent) == ([], 0)


def _cli(home: Path, chain: Chain, server: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "AGENTMARKET_RPC": chain.rpc_url or "", "AGENTMARKET_SERVER": server,
           "AGENTMARKET_PASSWORD": PASSWORD, "AGENTMARKET_WALLET": str(home / "buyer.json")}  # fmt: skip
    return subprocess.Popen([*AGENTMARKET, *args], cwd=home, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)  # fmt: skip


def _finished(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


def test_the_cli_signs_nothing_above_the_price_when_the_command_started(env, tmp_path):
    chain, deployment, market = env
    buyer = fund(chain, market, 10)
    # one owner per gateway: the three run at once, and each reprices from its own key (no nonce race)
    owner_a, owner_b, owner_c = (fund(chain, market, 0) for _ in range(3))
    (tmp_path / "buyer.json").write_text(json.dumps(Account.encrypt(buyer.key, PASSWORD, kdf="scrypt",
                                                                    iterations=1024)))  # fmt: skip
    by_voucher = OwnersGateway(chain, deployment, owner_a, publish_model(market, owner_a, PRICE), new_price=100 * PRICE)
    by_x402 = OwnersGateway(chain, deployment, owner_b, _dataset(market, owner_b, PRICE), new_price=100 * PRICE)
    honest = OwnersGateway(chain, deployment, owner_c, publish_model(market, owner_c, PRICE), new_price=PRICE)
    with hostile_server(by_voucher.route) as a, hostile_server(by_x402.route) as b, hostile_server(honest.route) as c:
        channel = MarketplaceClient.connect(a, buyer, chain, trusted=deployment).open_channel(by_voucher.asset_id,
                                                                                              200 * PRICE)  # fmt: skip
        before = market.token.balance_of(buyer.address)
        runs = [
            _cli(tmp_path, chain, a, "invoke", str(by_voucher.asset_id), "--channel", str(channel), "--input", "[1]"),
            _cli(tmp_path, chain, b, "download", str(by_x402.asset_id), "--x402", "--out", str(tmp_path / "d.csv")),
            _cli(tmp_path, chain, c, "invoke", str(honest.asset_id), "--input", "[1]", "--max-price", "0.009"),
        ]
        voucher_call, download, capped = (_finished(run) for run in runs)
    assert_one_line_error(voucher_call, f"its price on chain is {100 * PRICE} base units, above your limit")
    assert_one_line_error(download, f"its price on chain is {100 * PRICE} base units, above your limit")
    assert_one_line_error(capped, "above your limit (max_price) of 9000", "nothing was signed")
    assert [v.max_claimable_amount for v in by_voucher.vouchers] == [PRICE]
    assert by_x402.signatures == honest.signatures == [] and not (tmp_path / "d.csv").exists()
    assert market.token.balance_of(buyer.address) == before
