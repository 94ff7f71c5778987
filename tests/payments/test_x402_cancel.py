"""An x402 authorization from a failed request can never be settled later unseen (red-team finding 4, the kind).

A gateway keeps the authorization a client signed, answers an error, and could submit it any time before its
``validBefore``. After a paid request fails, the SDK cancels the authorization on chain (EIP-3009
``cancelAuthorization``, signed and sent by the payer); a payer without ETH for that gas gets
``X402AuthorizationOutstanding`` naming ``validBefore``, and an agent wallet counts it against its budget until
it is settled (then its ledger logs it) or expires (then the budget gets it back). Paid calls and downloads,
the SDK, an agent wallet and the CLI; real anvil, real HTTP.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from x402.http.utils import decode_payment_signature_header

from agents import AgentWallet, AuditLedger, Budget
from agents.errors import AgentError
from marketplace.chain import Chain
from marketplace.chain.deployment import Deployment
from marketplace.chain.market import Market
from marketplace.chain.records import AssetKind
from marketplace.chain.units import caip2, to_units
from marketplace.client import ApiClientError, MarketplaceClient, X402AuthorizationOutstanding
from tests.helpers.chain import anvil_market, fund, publish_model
from tests.helpers.cli import AGENTMARKET, assert_one_line_error
from tests.helpers.servers import Reply, hostile_server

pytestmark = pytest.mark.backend("anvil")

PRICE = to_units(2)
_TRANSFER = "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)"


@pytest.fixture(scope="module")
def env() -> Iterator[tuple[Chain, Deployment, Market]]:
    with anvil_market() as world:
        yield world


@dataclass
class KeepingGateway:
    """Asks honestly (``timeout``: its maxTimeoutSeconds), keeps every authorization it is sent and answers 502;
    :meth:`settle` submits the first one later, from the owner's account."""

    chain: Chain
    deployment: Deployment
    owner: LocalAccount
    asset_id: int
    timeout: int = 300
    kept: list[str] = field(default_factory=list)

    def route(self, method: str, path: str, headers: dict[str, str], body: bytes) -> Reply | None:
        market = self.deployment.market(self.chain)
        if path == "/v1/deployment":
            return Reply(200, self.deployment.to_json())
        if path not in (f"/v1/models/{self.asset_id}/invoke", f"/v1/assets/{self.asset_id}/x402"):
            return None
        if "payment-signature" in headers:
            self.kept.append(headers["payment-signature"])
            return Reply(502, {"error": "upstream_failed", "detail": "storage hiccup, try again"})
        accepts = {"scheme": "exact", "network": caip2(self.chain.chain_id),
                   "amount": str(market.marketplace.asset(self.asset_id).price), "asset": market.token.address,
                   "payTo": market.marketplace.vault_of(self.asset_id), "maxTimeoutSeconds": self.timeout,
                   "extra": {"name": "Test USD", "version": "1"}}  # fmt: skip
        required = {"x402Version": 2, "resource": {"url": f"http://fake{path}"}, "accepts": [accepts]}
        header = base64.b64encode(json.dumps(required).encode()).decode()
        return Reply(402, {"error": "payment_required", "detail": "pay"}, {"PAYMENT-REQUIRED": header})

    def authorization(self, index: int = 0) -> tuple[dict, str]:
        payload = decode_payment_signature_header(self.kept[index]).payload
        return payload["authorization"], payload["signature"]

    def settle(self, index: int = 0) -> bool:
        """Submit a kept authorization now; True if the chain took it."""
        auth, signature = self.authorization(index)
        token = self.deployment.market(self.chain).token
        fn = token.contract.get_function_by_signature(_TRANSFER)(
            auth["from"], auth["to"], int(auth["value"]), int(auth["validAfter"]), int(auth["validBefore"]),
            bytes.fromhex(auth["nonce"][2:]), bytes.fromhex(signature[2:]),
        )  # fmt: skip
        try:
            self.chain.send(fn, self.owner)
            return True
        except Exception:
            return False


def _dataset(market: Market, owner: LocalAccount) -> int:
    return market.marketplace.publish(owner, kind=AssetKind.DATASET, content_hash=os.urandom(32), uri="d", price=PRICE,
                                      token=market.token.address, payees=[(owner.address, 10_000)])  # fmt: skip


def _gasless(chain: Chain, market: Market) -> LocalAccount:
    """An account holding 10 tUSD and no ETH at all (x402 needs none to pay)."""
    account = Account.create()
    market.token.mint(chain.accounts[0], account.address, to_units(10))
    return account


def _wallet(account: LocalAccount, tmp_path, url: str, chain, deployment) -> AgentWallet:
    budget = Budget(run_cap=to_units(10), asset_cap=to_units(10), call_ceiling=to_units(5))
    return AgentWallet.connect(account, budget, AuditLedger(tmp_path / "ledger.jsonl"), url, chain, trusted=deployment)


def test_a_failed_paid_request_is_cancelled_on_chain(env):
    chain, deployment, market = env
    owner, payer = fund(chain, market, 0), fund(chain, market, 10)
    call = KeepingGateway(chain, deployment, owner, publish_model(market, owner, PRICE))
    download = KeepingGateway(chain, deployment, owner, _dataset(market, owner))
    tusd, eth = market.token.balance_of(payer.address), chain.balance(payer.address)
    with hostile_server(call.route) as call_url, hostile_server(download.route) as download_url:
        with pytest.raises(ApiClientError) as called:
            MarketplaceClient.connect(call_url, payer, chain, trusted=deployment).invoke(call.asset_id, [1])
        with pytest.raises(ApiClientError) as downloaded:
            MarketplaceClient.connect(download_url, payer, chain, trusted=deployment).download_x402(download.asset_id)
    assert called.value.status == downloaded.value.status == 502  # the server's error, as it said it
    for gateway in (call, download):
        auth, _ = gateway.authorization()
        assert market.token.authorization_state(payer.address, bytes.fromhex(auth["nonce"][2:]))  # cancelled
        assert not gateway.settle(), "an authorization of a failed request was settled afterwards"
    assert market.token.balance_of(payer.address) == tusd
    assert chain.balance(payer.address) < eth  # the payer paid the two cancellations' gas


def test_without_gas_an_authorization_counts_until_it_is_settled(env, tmp_path):
    chain, deployment, market = env
    owner = fund(chain, market, 0)
    gateway = KeepingGateway(chain, deployment, owner, _dataset(market, owner))
    agent = _gasless(chain, market)
    start = market.token.balance_of(agent.address)
    with hostile_server(gateway.route) as url:
        wallet = _wallet(agent, tmp_path, url, chain, deployment)
        with pytest.raises(AgentError) as failed:
            wallet.buy_over_x402(gateway.asset_id)
        outstanding = failed.value.__cause__
        assert isinstance(outstanding, X402AuthorizationOutstanding)
        auth, _ = gateway.authorization()
        message = str(failed.value)
        assert "could not be cancelled" in message and "holds no ETH" in message and "\n" not in message
        assert f"validBefore {auth['validBefore']}" in message and outstanding.valid_before == int(auth["validBefore"])
        assert list(wallet.outstanding) == [auth["nonce"]]
        assert (wallet.guard.spent, wallet.ledger.total()) == (PRICE, 0)  # spent for the budget; no money left yet
        assert [e.kind for e in wallet.ledger.entries()] == ["x402_outstanding"]
        assert wallet.reconcile() == []  # nothing happened yet: still outstanding

        assert gateway.settle()  # the gateway submits it late
        (logged,) = wallet.reconcile()
    dropped = start - market.token.balance_of(agent.address)
    assert (logged.kind, logged.amount, dropped, wallet.ledger.total()) == ("x402", PRICE, PRICE, PRICE)
    assert wallet.outstanding == {} and wallet.guard.spent == PRICE


def test_an_outstanding_authorization_that_expired_gives_the_budget_back(env, tmp_path):
    chain, deployment, market = env
    owner = fund(chain, market, 0)
    gateway = KeepingGateway(chain, deployment, owner, _dataset(market, owner), timeout=2)
    agent = _gasless(chain, market)
    start = market.token.balance_of(agent.address)
    with hostile_server(gateway.route) as url:
        wallet = _wallet(agent, tmp_path, url, chain, deployment)
        with pytest.raises(AgentError):
            wallet.buy_over_x402(gateway.asset_id)
        (held,) = wallet.outstanding.values()
        assert wallet.guard.spent == PRICE
        time.sleep(max(0.0, held.valid_before - time.time()) + 1.1)
        chain.send_eth(chain.accounts[0], chain.accounts[1].address, 1)  # a block past validBefore
        assert wallet.reconcile() == []
    assert wallet.outstanding == {} and wallet.guard.spent == 0 and wallet.ledger.total() == 0
    assert not gateway.settle()  # expired: nobody can settle it now
    assert market.token.balance_of(agent.address) == start


def test_the_cli_says_in_one_line_until_when_an_authorization_may_be_settled(env, tmp_path):
    chain, deployment, market = env
    owner = fund(chain, market, 0)
    gateway = KeepingGateway(chain, deployment, owner, _dataset(market, owner))
    buyer = _gasless(chain, market)
    (tmp_path / "buyer.json").write_text(json.dumps(Account.encrypt(buyer.key, "pw", kdf="scrypt", iterations=1024)))
    with hostile_server(gateway.route) as url:
        env_vars = {**os.environ, "AGENTMARKET_RPC": chain.rpc_url or "", "AGENTMARKET_SERVER": url,
                    "AGENTMARKET_PASSWORD": "pw", "AGENTMARKET_WALLET": str(tmp_path / "buyer.json")}  # fmt: skip
        result = subprocess.run([*AGENTMARKET, "download", str(gateway.asset_id), "--x402", "--out", "d.csv"],
                                cwd=tmp_path, env=env_vars, capture_output=True, text=True, timeout=120)  # fmt: skip
    auth, _ = gateway.authorization()
    assert_one_line_error(result, "storage hiccup", "could not be cancelled", f"validBefore {auth['validBefore']}",
                          "count it as spent until then")  # fmt: skip
