"""AgentRegistry: ERC-8004 identities, wallet binding, owner-set spend permissions."""

from __future__ import annotations

import pytest

from marketplace.chain.token import to_units
from tests.conftest import expect_revert

DAY = 86_400
X25519_KEY = bytes(range(32))


@pytest.fixture
def agent(market, alice):
    """An agent owned by alice with an encryption key and an endpoint."""
    return market.agents.register(alice, "https://agents.example/1.json",
                                  {"encryptionKey": X25519_KEY, "endpoint": b"http://127.0.0.1:9000"})  # fmt: skip


def bind_wallet(chain, market, owner, agent_id, wallet):
    deadline = chain.timestamp() + 120
    signature = market.agents.sign_wallet_binding(wallet, agent_id, owner.address, deadline)
    return market.agents.set_agent_wallet(owner, agent_id, wallet.address, deadline, signature.packed)


def test_register_mints_identity_with_metadata(market, alice, agent):
    record = market.agents.agent(agent)
    assert (record.agent_id, record.owner, record.uri) == (1, alice.address, "https://agents.example/1.json")
    assert (record.encryption_key, record.endpoint, record.wallet) == (
        X25519_KEY, "http://127.0.0.1:9000", alice.address,
    )  # fmt: skip
    assert market.agents.register(alice) == 2


def test_only_owner_updates_and_agent_wallet_key_is_reserved(market, alice, bob, agent):
    expect_revert("NotAgentOwner", market.agents.set_agent_uri, bob, agent, "https://evil")
    expect_revert("NotAgentOwner", market.agents.set_metadata, bob, agent, "endpoint", b"http://evil")
    expect_revert("ReservedMetadataKey", market.agents.set_metadata, alice, agent, "agentWallet", b"x")
    market.agents.set_metadata(alice, agent, "endpoint", b"http://127.0.0.1:9001")
    market.agents.set_agent_uri(alice, agent, "https://agents.example/v2.json")
    record = market.agents.agent(agent)
    assert (record.endpoint, record.uri) == ("http://127.0.0.1:9001", "https://agents.example/v2.json")
    expect_revert("ERC721NonexistentToken", market.agents.agent_wallet, 99)


def test_wallet_binding_needs_the_wallets_fresh_signature(chain, market, alice, bob, session_key, agent):
    bind_wallet(chain, market, alice, agent, session_key)
    assert market.agents.agent_wallet(agent) == session_key.address
    assert market.agents.get_metadata(agent, "agentWallet") == bytes.fromhex(session_key.address[2:])

    now = chain.timestamp()
    past = now - 1
    late = market.agents.sign_wallet_binding(bob, agent, alice.address, past)
    expect_revert(
        "WalletSignatureExpired", market.agents.set_agent_wallet, alice, agent, bob.address, past, late.packed
    )
    far = now + 3600
    signed = market.agents.sign_wallet_binding(bob, agent, alice.address, far)
    expect_revert("DeadlineTooFar", market.agents.set_agent_wallet, alice, agent, bob.address, far, signed.packed)
    soon = now + 60
    by_other_key = market.agents.sign_wallet_binding(session_key, agent, alice.address, soon)
    revert = expect_revert(
        "InvalidWalletSignature", market.agents.set_agent_wallet, alice, agent, bob.address, soon, by_other_key.packed
    )
    assert revert.args_by_name == {"agentId": agent, "wallet": bob.address}
    for_other_agent = market.agents.sign_wallet_binding(bob, agent + 1, alice.address, soon)
    expect_revert(
        "InvalidWalletSignature",
        market.agents.set_agent_wallet,
        alice,
        agent,
        bob.address,
        soon,
        for_other_agent.packed,
    )
    market.agents.unset_agent_wallet(alice, agent)
    assert market.agents.agent_wallet(agent) is None


def test_spend_permission_caps_what_the_agent_pulls_per_period(chain, market, alice, carol, session_key, agent):
    token = market.token
    bind_wallet(chain, market, alice, agent, session_key)
    token.approve(alice, market.agents.address, to_units(1000))
    market.agents.grant_spend_permission(alice, agent, token.address, to_units(5), DAY)
    market.agents.spend_from_owner(session_key, agent, token.address, carol.address, to_units(3))
    assert token.balance_of(carol.address) == to_units(3)
    revert = expect_revert(
        "SpendPermissionExceeded", market.agents.spend_from_owner, session_key, agent, token.address, carol.address,
        to_units(3),
    )  # fmt: skip
    assert (revert.args_by_name["remaining"], revert.args_by_name["requested"]) == (to_units(2), to_units(3))
    assert market.agents.spend_permission(agent, token.address).remaining == to_units(2)

    chain.increase_time(DAY)
    assert market.agents.spend_permission(agent, token.address).remaining == to_units(5)
    market.agents.spend_from_owner(session_key, agent, token.address, carol.address, to_units(5))

    revert = expect_revert(
        "NotAgentWallet", market.agents.spend_from_owner, alice, agent, token.address, alice.address, 1
    )
    assert revert.args_by_name["wallet"] == session_key.address
    market.agents.revoke_spend_permission(alice, agent, token.address)
    chain.increase_time(DAY)
    expect_revert(
        "NoSpendPermission", market.agents.spend_from_owner, session_key, agent, token.address, carol.address, 1
    )
    assert token.balance_of(carol.address) == to_units(8)


def test_only_the_owner_grants_and_a_transfer_kills_wallet_and_grant(chain, market, alice, bob, session_key, agent):
    token = market.token
    expect_revert("NotAgentOwner", market.agents.grant_spend_permission, bob, agent, token.address, 1, DAY)
    expect_revert("InvalidPeriod", market.agents.grant_spend_permission, alice, agent, token.address, 1, 0)
    bind_wallet(chain, market, alice, agent, session_key)
    token.approve(alice, market.agents.address, to_units(1000))
    market.agents.grant_spend_permission(alice, agent, token.address, to_units(5), DAY)
    transfer = market.agents.contract.functions.transferFrom(alice.address, bob.address, agent)
    chain.send(transfer, alice)
    assert market.agents.agent_wallet(agent) is None
    assert market.agents.spend_permission(agent, token.address).remaining == 0
    bind_wallet(chain, market, bob, agent, session_key)  # the new owner rebinds the same wallet...
    # ...but alice's old grant does not let it spend alice's money under bob's ownership
    expect_revert(
        "NoSpendPermission", market.agents.spend_from_owner, session_key, agent, token.address, bob.address, 1
    )
