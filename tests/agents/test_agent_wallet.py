"""AgentWallet: budget caps refuse before signing, and every payment lands in the audit ledger (both backends)."""

from __future__ import annotations

import pytest
from eth_account import Account

from agents import AgentError, AgentWallet, AuditLedger, Budget, OverBudget, PaymentRefused
from agents.wallet import account_from_env
from marketplace.chain.records import AssetKind
from marketplace.chain.units import to_units
from marketplace.client import MarketplaceClient
from marketplace.wallet_file import SCRYPT_N_ENV, create_wallet, encryption_keypair, load_wallet
from tests.helpers.agents import DATA_PRICE, GENEROUS, MODEL_PRICE, make_wallet


def test_every_payment_is_ledgered_and_matches_the_chain(server, chain, market, alice, assets, tmp_path):
    wallet = make_wallet(alice, tmp_path, server, chain)
    before = market.token.balance_of(alice.address)

    license_entry = wallet.buy_license(assets["data"])
    deposit = wallet.open_channel(assets["model"], to_units(1))
    for i in range(3):
        result, _ = wallet.invoke(assets["model"], [i, 1], deposit.channel_id)
        assert result.output == {"sum": i + 1.0}

    entries = wallet.ledger.entries()
    assert [e.kind for e in entries] == ["license", "channel_deposit", "voucher", "voucher", "voucher"]
    assert all(e.run == wallet.run for e in entries)
    assert chain.w3.eth.get_transaction_receipt(license_entry.ref)["status"] == 1
    assert market.marketplace.has_access(assets["data"], alice.address)
    assert market.channels.channel(deposit.channel_id).deposit == to_units(1)
    assert sum(e.amount for e in entries if e.kind == "voucher") == 3 * MODEL_PRICE
    assert entries[-1].ref == f"voucher:{deposit.channel_id}:{3 * MODEL_PRICE}"
    spent = before - market.token.balance_of(alice.address)
    assert wallet.ledger.total() == spent == DATA_PRICE + to_units(1) == wallet.guard.spent
    assert wallet.ledger.total(assets["data"]) == DATA_PRICE
    assert wallet.locked == to_units(1) - 3 * MODEL_PRICE


@pytest.mark.parametrize(
    ("budget", "kind"),
    [
        (Budget(run_cap=to_units(100), asset_cap=to_units(100), call_ceiling=to_units(1)), "per_call"),
        (Budget(run_cap=to_units(100), asset_cap=to_units("1.5"), call_ceiling=to_units(10)), "asset"),
        (Budget(run_cap=to_units("1.5"), asset_cap=to_units(100), call_ceiling=to_units(10)), "run"),
    ],
)
def test_license_over_a_cap_is_refused_before_signing(server, chain, market, alice, assets, tmp_path, budget, kind):
    wallet = make_wallet(alice, tmp_path, server, chain, budget)
    balance, nonce = market.token.balance_of(alice.address), chain.w3.eth.get_transaction_count(alice.address)
    with pytest.raises(OverBudget) as refused:
        wallet.buy_license(assets["data"])
    assert (refused.value.kind, refused.value.requested, refused.value.spent) == (kind, DATA_PRICE, 0)
    assert chain.w3.eth.get_transaction_count(alice.address) == nonce  # nothing signed or sent
    assert market.token.balance_of(alice.address) == balance
    assert wallet.ledger.entries() == [] and wallet.guard.spent == 0
    assert not market.marketplace.has_access(assets["data"], alice.address)


def test_deposits_count_against_the_run_cap_and_vouchers_stay_within_the_deposit(
    server, chain, market, alice, assets, tmp_path
):
    budget = Budget(run_cap=to_units("2.5"), asset_cap=to_units(100), call_ceiling=to_units(10))
    wallet = make_wallet(alice, tmp_path, server, chain, budget)
    wallet.buy_license(assets["data"])
    nonce = chain.w3.eth.get_transaction_count(alice.address)
    with pytest.raises(OverBudget) as refused:
        wallet.open_channel(assets["model"], to_units(1))
    assert (refused.value.kind, refused.value.limit, refused.value.spent) == ("run", to_units("2.5"), DATA_PRICE)
    assert chain.w3.eth.get_transaction_count(alice.address) == nonce

    channel = wallet.open_channel(assets["model"], 2 * MODEL_PRICE).channel_id
    assert wallet.guard.remaining == 0
    wallet.invoke(assets["model"], [1], channel)
    wallet.invoke(assets["model"], [2], channel)
    with pytest.raises(OverBudget) as drained:
        wallet.invoke(assets["model"], [3], channel)
    assert (drained.value.kind, drained.value.limit, drained.value.spent) == (
        "channel",
        2 * MODEL_PRICE,
        2 * MODEL_PRICE,
    )
    assert len(wallet.ledger.entries()) == 4
    with pytest.raises(OverBudget, match="max_price"):
        wallet.buy_license(assets["data"], max_price=DATA_PRICE - 1)


def test_wallet_from_keystore_and_environment(server, chain, tmp_path, monkeypatch):
    monkeypatch.setenv(SCRYPT_N_ENV, "1024")
    account = create_wallet(tmp_path / "agent.json", "pw")
    wallet = make_wallet(load_wallet(tmp_path / "agent.json", "pw"), tmp_path, server, chain)
    assert wallet.address == account.address
    assert wallet.public_encryption_key == bytes(encryption_keypair(account).public_key)
    assert wallet.client.encryption_key == bytes(encryption_keypair(account))  # the client decrypts as the agent

    other = Account.create()
    monkeypatch.setenv("AGENTMARKET_AGENT_KEY", other.key.hex())
    assert make_wallet(account_from_env(), tmp_path, server, chain).address == other.address
    monkeypatch.setenv("AGENTMARKET_AGENT_KEY", "not a key")
    with pytest.raises(AgentError, match="valid private key"):
        account_from_env()
    monkeypatch.delenv("AGENTMARKET_AGENT_KEY")
    with pytest.raises(AgentError, match="AGENTMARKET_AGENT_KEY"):
        account_from_env()
    with pytest.raises(ValueError):
        Budget(run_cap=-1, asset_cap=0, call_ceiling=0)


def test_a_shortfall_is_pulled_from_the_owner_within_the_spend_permission(server, chain, market, alice, assets,
                                                                          tmp_path):  # fmt: skip
    """The agent wallet holds nothing; its owner (alice) lets it pull 3 tUSD a day: the first 2 tUSD license is
    funded from the owner, the second is refused by the chain's cap before any payment is made."""
    agent_key = Account.create()
    chain.send_eth(chain.accounts[0], agent_key.address, 10**18)
    agent_id = market.agents.register(alice, "")
    deadline = chain.timestamp() + 120
    binding = market.agents.sign_wallet_binding(agent_key, agent_id, alice.address, deadline)
    market.agents.set_agent_wallet(alice, agent_id, agent_key.address, deadline, binding.packed)
    market.agents.grant_spend_permission(
        alice, agent_id, market.token.address, to_units(3), 86_400, wallet=agent_key.address
    )
    market.token.approve(alice, market.agents.address, to_units(100))
    other = market.marketplace.publish(alice, kind=AssetKind.DATASET, content_hash=b"\x03" * 32, uri="ipfs://3",
                                       price=DATA_PRICE, token=market.token.address,
                                       payees=[(alice.address, 10_000)])  # fmt: skip

    wallet = make_wallet(agent_key, tmp_path, server, chain, agent_id=agent_id)
    owner_before = market.token.balance_of(alice.address)
    wallet.buy_license(assets["data"])
    assert market.marketplace.has_access(assets["data"], agent_key.address)
    assert owner_before - market.token.balance_of(alice.address) == DATA_PRICE  # funded by the owner
    assert [e.kind for e in wallet.ledger.entries()] == ["owner_top_up", "license"]
    assert wallet.ledger.total() == DATA_PRICE  # the inflow is not spend

    with pytest.raises(PaymentRefused, match="SpendPermissionExceeded"):
        wallet.buy_license(other)  # 2 more would pass the 3 tUSD a day the owner allowed
    assert not market.marketplace.has_access(other, agent_key.address)
    assert wallet.guard.spent == DATA_PRICE and len(wallet.ledger.entries()) == 2


def test_the_wallet_is_bound_to_its_client_and_agent_where_the_binding_can_change(
    server, chain, deployment, market, alice, bob, assets, tmp_path
):
    """The client must decrypt as the agent and an agent id must be bound to the wallet on chain (at construction
    and whenever it is set); a client whose signer was swapped afterwards pays nothing."""
    plain = MarketplaceClient.connect("http://testserver", alice, chain, http=server)  # no X25519 key
    with pytest.raises(AgentError, match="X25519"):
        AgentWallet(plain, GENEROUS, AuditLedger(tmp_path / "ledger.jsonl"))

    agent_id = market.agents.register(bob, "")  # bob's agent, acting from bob's own address
    with pytest.raises(AgentError, match=f"agent {agent_id} acts from {bob.address}, not from this wallet"):
        make_wallet(alice, tmp_path, server, chain, agent_id=agent_id)
    wallet = make_wallet(alice, tmp_path, server, chain)
    market.agents.unset_agent_wallet(bob, agent_id)
    with pytest.raises(AgentError, match=f"agent {agent_id} acts from no wallet"):
        wallet.agent_id = agent_id
    assert wallet.agent_id is None
    deadline = chain.timestamp() + 120
    binding = market.agents.sign_wallet_binding(alice, agent_id, bob.address, deadline)
    market.agents.set_agent_wallet(bob, agent_id, alice.address, deadline, binding.packed)
    wallet.agent_id = agent_id  # bound to alice now: accepted
    assert wallet.agent_id == agent_id

    wallet.client.account = bob  # whoever holds the client swaps its signer: the wallet pays nothing with it
    nonces = {a: chain.w3.eth.get_transaction_count(a) for a in (alice.address, bob.address)}
    with pytest.raises(AgentError, match=f"signs as {bob.address}, not as this agent"):
        wallet.buy_license(assets["data"])
    assert {a: chain.w3.eth.get_transaction_count(a) for a in nonces} == nonces
    assert wallet.ledger.entries() == [] and wallet.guard.spent == 0
