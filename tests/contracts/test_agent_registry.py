"""AgentRegistry: ERC-8004 identities, wallet binding, owner-set spend permissions.

A spend permission is the owner's alone (issue 12 §3): each attack below is tried on both backends
and must end in the exact custom error, with the owner's balance untouched.
"""

from __future__ import annotations

import pytest

from marketplace.chain.units import to_units
from tests.helpers.chain import expect_revert

DAY = 86_400
HOUR = 3_600
X25519_KEY = bytes(range(32))


@pytest.fixture
def agent(market, alice):
    """An agent owned by alice with an encryption key and an endpoint."""
    return market.agents.register(alice, "https://agents.example/1.json",
                                  {"encryptionKey": X25519_KEY, "endpoint": b"http://127.0.0.1:9000"})  # fmt: skip


def bind_wallet(chain, market, caller, agent_id, wallet):
    """``caller`` (the owner or an operator) binds ``wallet``, which signs for the agent's owner."""
    deadline = chain.timestamp() + 120
    owner = market.agents.contract.functions.ownerOf(agent_id).call()
    signature = market.agents.sign_wallet_binding(wallet, agent_id, owner, deadline)
    return market.agents.set_agent_wallet(caller, agent_id, wallet.address, deadline, signature.packed)


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


def grant(market, owner, agent_id, wallet, allowance, period=DAY):
    return market.agents.grant_spend_permission(
        owner, agent_id, market.token.address, allowance, period, wallet=wallet.address
    )


def spend(market, wallet, agent_id, to, amount):
    return market.agents.spend_from_owner(wallet, agent_id, market.token.address, to.address, amount)


def permission(market, agent_id):
    return market.agents.spend_permission(agent_id, market.token.address)


@pytest.fixture
def funded_agent(chain, market, alice, session_key, agent):
    """alice's agent with session_key bound as its wallet, and the registry approved on alice's tUSD."""
    bind_wallet(chain, market, alice, agent, session_key)
    market.token.approve(alice, market.agents.address, to_units(1000))
    return agent


def test_spend_permission_caps_what_the_agent_pulls_per_period(chain, market, alice, carol, session_key, funded_agent):
    token, agent = market.token, funded_agent
    receipt = grant(market, alice, agent, session_key, to_units(5))
    (granted,) = chain.events(market.agents.contract, receipt, "SpendPermissionGranted")
    assert (granted["grantor"], granted["wallet"], granted["allowance"], granted["spentInPeriod"]) == (
        alice.address, session_key.address, to_units(5), 0,
    )  # fmt: skip
    spend(market, session_key, agent, carol, to_units(3))
    assert token.balance_of(carol.address) == to_units(3)
    revert = expect_revert("SpendPermissionExceeded", spend, market, session_key, agent, carol, to_units(3))
    assert (revert.args_by_name["remaining"], revert.args_by_name["requested"]) == (to_units(2), to_units(3))
    current = permission(market, agent)
    assert (current.active, current.remaining, current.wallet) == (True, to_units(2), session_key.address)

    chain.increase_time(DAY)
    assert permission(market, agent).remaining == to_units(5)
    spend(market, session_key, agent, carol, to_units(5))

    revert = expect_revert("NotAgentWallet", spend, market, alice, agent, alice, 1)
    assert revert.args_by_name["wallet"] == session_key.address
    market.agents.revoke_spend_permission(alice, agent, token.address)
    chain.increase_time(DAY)
    revert = expect_revert("NoSpendPermission", spend, market, session_key, agent, carol, 1)
    assert revert.args_by_name == {"agentId": agent, "token": token.address}
    assert token.balance_of(carol.address) == to_units(8)


@pytest.mark.parametrize("approval", ["approve", "setApprovalForAll"])
def test_an_approved_operator_cannot_bind_its_wallet_and_spend_the_owners_allowance(
    chain, market, alice, bob, session_key, funded_agent, approval
):
    """The issue's attack: bob, approved on the agent NFT, binds his own wallet (ERC-8004 lets an
    operator do that) and pulls alice's tokens. The permission lasts only as long as the binding
    alice granted it under."""
    agent, token = funded_agent, market.token
    grant(market, alice, agent, session_key, to_units(100))
    if approval == "approve":
        chain.send(market.agents.contract.functions.approve(bob.address, agent), alice)
    else:
        chain.send(market.agents.contract.functions.setApprovalForAll(bob.address, True), alice)
    alice_before, bob_before = token.balance_of(alice.address), token.balance_of(bob.address)

    bind_wallet(chain, market, bob, agent, bob)  # the operator binds itself: allowed, and now...
    assert market.agents.agent_wallet(agent) == bob.address
    revert = expect_revert("WalletBindingChanged", spend, market, bob, agent, bob, to_units(100))
    assert revert.args_by_name == {"agentId": agent, "token": token.address,
                                   "permittedWallet": session_key.address, "agentWallet": bob.address}  # fmt: skip
    assert not permission(market, agent).active and permission(market, agent).remaining == 0
    # nor can the operator grant (to itself), lower, raise or revoke the owner's permission
    revert = expect_revert("NotAgentOwner", grant, market, bob, agent, bob, to_units(100))
    assert revert.args_by_name == {"agentId": agent, "caller": bob.address}
    revert = expect_revert("NotGrantor", market.agents.revoke_spend_permission, bob, agent, token.address)
    assert revert.args_by_name == {"agentId": agent, "token": token.address, "caller": bob.address,
                                   "grantor": alice.address}  # fmt: skip
    assert (token.balance_of(alice.address), token.balance_of(bob.address)) == (alice_before, bob_before)

    # binding her wallet again does not revive it either: the owner grants anew, for that binding
    bind_wallet(chain, market, alice, agent, session_key)
    expect_revert("WalletBindingChanged", spend, market, session_key, agent, alice, 1)
    grant(market, alice, agent, session_key, to_units(100))
    spend(market, session_key, agent, alice, to_units(1))
    assert permission(market, agent).remaining == to_units(99)


def test_an_operator_cannot_unbind_then_bind_a_contract_wallet_that_says_yes_to_anything(
    chain, market, alice, bob, session_key, funded_agent
):
    """Same kind through ERC-1271: bob unbinds the wallet, binds a contract wallet whose
    isValidSignature accepts every digest (no consent needed), and calls spendFromOwner from it."""
    agent, token = funded_agent, market.token
    grant(market, alice, agent, session_key, to_units(100))
    chain.send(market.agents.contract.functions.setApprovalForAll(bob.address, True), alice)
    wallet = chain.deploy("PermissiveWallet", sender=bob)
    market.agents.unset_agent_wallet(bob, agent)
    deadline = chain.timestamp() + 60
    market.agents.set_agent_wallet(bob, agent, wallet.address, deadline, b"\x00" * 65)
    assert market.agents.agent_wallet(agent) == wallet.address
    alice_before = token.balance_of(alice.address)
    call = market.agents.contract.functions.spendFromOwner(agent, token.address, bob.address, to_units(100))
    pull = wallet.functions.execute(market.agents.address, call._encode_transaction_data())
    revert = expect_revert("WalletBindingChanged", chain.send, pull, bob)
    assert (revert.args_by_name["permittedWallet"], revert.args_by_name["agentWallet"]) == (
        session_key.address, wallet.address,
    )  # fmt: skip
    assert token.balance_of(alice.address) == alice_before


def test_an_operator_cannot_revive_a_permission_by_rebinding_the_granted_wallet(
    chain, market, alice, bob, carol, session_key, funded_agent
):
    """Same kind, same wallet: alice unbinds her agent's wallet to stop it; bob (operator for all)
    binds that very wallet again by replaying the signature it gave for the original binding (still
    within its deadline). Any rebinding ends the permission, so nothing flows."""
    agent, token = funded_agent, market.token
    deadline = chain.timestamp() + 240
    consent = market.agents.sign_wallet_binding(session_key, agent, alice.address, deadline).packed
    market.agents.set_agent_wallet(alice, agent, session_key.address, deadline, consent)
    grant(market, alice, agent, session_key, to_units(100))
    binding = market.agents.wallet_binding_epoch(agent)
    chain.send(market.agents.contract.functions.setApprovalForAll(bob.address, True), alice)
    market.agents.unset_agent_wallet(alice, agent)
    market.agents.set_agent_wallet(bob, agent, session_key.address, deadline, consent)  # the replay
    assert market.agents.agent_wallet(agent) == session_key.address
    assert market.agents.wallet_binding_epoch(agent) == binding + 2
    revert = expect_revert("WalletBindingChanged", spend, market, session_key, agent, carol, 1)
    assert (revert.args_by_name["permittedWallet"], revert.args_by_name["agentWallet"]) == (
        session_key.address, session_key.address,
    )  # fmt: skip
    assert not permission(market, agent).active
    assert token.balance_of(carol.address) == 0


def test_a_grant_names_the_wallet_so_a_rebinding_sent_first_makes_it_fail(
    chain, market, alice, bob, session_key, funded_agent
):
    """An operator who sees the owner's grant coming and rebinds first does not receive it."""
    agent = funded_agent
    chain.send(market.agents.contract.functions.approve(bob.address, agent), alice)
    bind_wallet(chain, market, bob, agent, bob)  # "front-runs" alice's grant
    revert = expect_revert("WalletNotBound", grant, market, alice, agent, session_key, to_units(100))
    assert revert.args_by_name == {"agentId": agent, "wallet": session_key.address, "boundWallet": bob.address}
    market.agents.unset_agent_wallet(alice, agent)
    revert = expect_revert("WalletNotBound", grant, market, alice, agent, session_key, to_units(100))
    assert revert.args_by_name["boundWallet"] == "0x0000000000000000000000000000000000000000"
    assert permission(market, agent).grantor == "0x0000000000000000000000000000000000000000"


def test_lowering_a_cap_mid_period_carries_what_was_spent(chain, market, alice, carol, session_key, funded_agent):
    """The issue's attack: re-grant 50 after 100 spent must not grant 50 more the same period; nor may
    revoke-then-grant or rebind-then-grant, a raise only adds the difference, and a new period length
    keeps counting."""
    agent = funded_agent
    grant(market, alice, agent, session_key, to_units(100))
    spend(market, session_key, agent, carol, to_units(100))

    receipt = grant(market, alice, agent, session_key, to_units(50))
    (granted,) = chain.events(market.agents.contract, receipt, "SpendPermissionGranted")
    assert granted["spentInPeriod"] == to_units(100)
    revert = expect_revert("SpendPermissionExceeded", spend, market, session_key, agent, carol, 1)
    assert (revert.args_by_name["remaining"], revert.args_by_name["requested"]) == (0, 1)

    market.agents.revoke_spend_permission(alice, agent, market.token.address)
    grant(market, alice, agent, session_key, to_units(50))
    assert permission(market, agent).remaining == 0
    expect_revert("SpendPermissionExceeded", spend, market, session_key, agent, carol, 1)

    bind_wallet(chain, market, alice, agent, session_key)  # a rebinding ends the grant...
    grant(market, alice, agent, session_key, to_units(50))  # ...but the period's spending carries over
    expect_revert("SpendPermissionExceeded", spend, market, session_key, agent, carol, 1)

    grant(market, alice, agent, session_key, to_units(130))  # a raise: 30 more this period, not 130
    spend(market, session_key, agent, carol, to_units(30))
    expect_revert("SpendPermissionExceeded", spend, market, session_key, agent, carol, 1)

    grant(market, alice, agent, session_key, to_units(130), period=HOUR)  # new length: a new period from now...
    current = permission(market, agent)
    assert (current.spent_in_period, current.remaining) == (to_units(130), 0)  # ...still counting what was spent
    chain.increase_time(HOUR)
    assert permission(market, agent).remaining == to_units(130)
    assert market.token.balance_of(carol.address) == to_units(130)


def test_a_new_period_after_a_lowered_cap_gives_the_new_cap(chain, market, alice, carol, session_key, funded_agent):
    agent = funded_agent
    grant(market, alice, agent, session_key, to_units(100))
    spend(market, session_key, agent, carol, to_units(40))
    chain.increase_time(DAY + 5)
    grant(market, alice, agent, session_key, to_units(50))  # granted in a later period: nothing spent in it
    assert permission(market, agent).remaining == to_units(50)
    spend(market, session_key, agent, carol, to_units(50))
    expect_revert("SpendPermissionExceeded", spend, market, session_key, agent, carol, 1)


def transfer(chain, market, sender, to, agent_id, *, safe=False):
    functions = market.agents.contract.functions
    if safe:
        fn = functions.safeTransferFrom(sender.address, to.address, agent_id)
    else:
        fn = functions.transferFrom(sender.address, to.address, agent_id)
    return chain.send(fn, sender)


def test_a_transfer_ends_the_permission_for_good_and_the_grantor_can_revoke_while_away(
    chain, market, alice, bob, session_key, funded_agent
):
    """The issue's attack: A → B → A used to revive alice's permission, and alice could not revoke it
    while bob held the agent."""
    agent, token = funded_agent, market.token
    grant(market, alice, agent, session_key, to_units(100))
    epoch = market.agents.ownership_epoch(agent)
    transfer(chain, market, alice, bob, agent)
    assert market.agents.ownership_epoch(agent) == epoch + 1
    assert market.agents.agent_wallet(agent) is None  # ERC-8004: the wallet binding ends too
    assert not permission(market, agent).active

    # while bob holds it: the new owner rebinds the same wallet; alice's grant does not pay it...
    bind_wallet(chain, market, bob, agent, session_key)
    expect_revert("NoSpendPermission", spend, market, session_key, agent, bob, 1)
    # ...and alice can still revoke her grant (bob cannot)
    expect_revert("NotGrantor", market.agents.revoke_spend_permission, bob, agent, token.address)
    receipt = market.agents.revoke_spend_permission(alice, agent, token.address)
    (revoked,) = chain.events(market.agents.contract, receipt, "SpendPermissionRevoked")
    assert (revoked["agentId"], revoked["grantor"]) == (agent, alice.address)
    expect_revert("NoSpendPermission", market.agents.revoke_spend_permission, alice, agent, token.address)


def test_a_permission_does_not_revive_when_the_agent_comes_back(
    chain, market, alice, bob, carol, session_key, funded_agent
):
    agent = funded_agent
    grant(market, alice, agent, session_key, to_units(100))
    transfer(chain, market, alice, bob, agent)
    transfer(chain, market, bob, alice, agent, safe=True)
    bind_wallet(chain, market, alice, agent, session_key)  # same owner, same wallet, same token as granted
    revert = expect_revert("NoSpendPermission", spend, market, session_key, agent, carol, 1)
    assert revert.args_by_name == {"agentId": agent, "token": market.token.address}
    assert (permission(market, agent).active, permission(market, agent).remaining) == (False, 0)
    grant(market, alice, agent, session_key, to_units(10))  # a fresh grant under the new epoch works
    spend(market, session_key, agent, carol, to_units(10))
    assert market.token.balance_of(carol.address) == to_units(10)


def test_a_transfer_to_self_also_ends_it_and_there_is_no_burn(chain, market, alice, carol, session_key, funded_agent):
    """Any move of the NFT ends the owner's permissions, even safeTransferFrom to oneself (an operator
    could do that, but an operator can move the NFT away anyway). The registry has no burn."""
    agent = funded_agent
    grant(market, alice, agent, session_key, to_units(100))
    transfer(chain, market, alice, alice, agent, safe=True)
    assert market.agents.contract.functions.ownerOf(agent).call() == alice.address
    assert market.agents.agent_wallet(agent) is None
    bind_wallet(chain, market, alice, agent, session_key)
    expect_revert("NoSpendPermission", spend, market, session_key, agent, carol, 1)
    names = {entry.get("name") for entry in market.agents.contract.abi}
    assert not names & {"burn", "_burn"}


def test_a_new_registration_starts_with_no_permission(chain, market, alice, carol, session_key, funded_agent):
    """Re-registering gives a new agentId with nothing granted; the wallet bound to both agents can
    only use the permission of the agent it was granted for."""
    grant(market, alice, funded_agent, session_key, to_units(5))
    again = market.agents.register(alice, "https://agents.example/again.json")
    assert again != funded_agent
    bind_wallet(chain, market, alice, again, session_key)
    expect_revert("NoSpendPermission", spend, market, session_key, again, carol, 1)
    spend(market, session_key, funded_agent, carol, to_units(5))
    assert market.token.balance_of(carol.address) == to_units(5)


def test_grant_input_errors(chain, market, alice, bob, session_key, funded_agent):
    agent, token = funded_agent, market.token
    fn = market.agents.grant_spend_permission
    expect_revert("NotAgentOwner", fn, bob, agent, token.address, 1, DAY, wallet=session_key.address)
    revert = expect_revert("InvalidPeriod", fn, alice, agent, token.address, 1, 0, wallet=session_key.address)
    assert revert.args_by_name == {"period": 0}
    expect_revert("InvalidPeriod", fn, alice, agent, token.address, 1, 2**48, wallet=session_key.address)
    zero = "0x0000000000000000000000000000000000000000"
    expect_revert("ZeroAddress", fn, alice, agent, token.address, 1, DAY, wallet=zero)
    expect_revert("ZeroAddress", fn, alice, agent, zero, 1, DAY, wallet=session_key.address)
    expect_revert("ERC721NonexistentToken", fn, alice, 99, token.address, 1, DAY, wallet=session_key.address)
    fn(alice, agent, token.address, 2**200, DAY, wallet=session_key.address)  # above 2^128 - 1: unlimited
    assert permission(market, agent).allowance == 2**128 - 1
