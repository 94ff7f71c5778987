"""TestUSD: ERC-20, EIP-2612 permit and EIP-3009, on every backend."""

from __future__ import annotations

import dataclasses
import re

import pytest
from eth_utils import keccak

from marketplace.chain.eip712 import Domain, sign_authorization
from marketplace.chain.units import to_units
from marketplace.errors import AgentmarketError
from tests.helpers.chain import expect_revert

HOUR = 3600


def test_metadata_and_eip712_domain(chain, token):
    assert (token.name(), token.symbol(), token.decimals()) == ("Test USD", "tUSD", 6)
    assert token.domain == Domain("Test USD", "1", 31337, token.address)
    assert chain.chain_id == 31337


def test_transfer_moves_balance(token, alice, bob):
    receipt = token.transfer(alice, bob.address, to_units("2.5"))
    assert token.balance_of(bob.address) == 2_500_000
    assert token.balance_of(alice.address) == to_units(1000) - 2_500_000
    (event,) = token.chain.events(token.contract, receipt, "Transfer")
    assert event == {"from": alice.address, "to": bob.address, "value": 2_500_000}


def test_only_minter_can_mint(token, alice):
    revert = expect_revert("AccessControlUnauthorizedAccount", token.mint, alice, alice.address, 1)
    assert revert.args_by_name["account"] == alice.address
    assert revert.args_by_name["neededRole"] == keccak(text="MINTER_ROLE")


def test_permit_sets_allowance_and_consumes_nonce(chain, token, alice, bob, relayer):
    deadline = chain.timestamp() + HOUR
    token.permit(alice, bob.address, 777, deadline, relayer)
    assert token.allowance(alice.address, bob.address) == 777
    assert token.permit_nonce(alice.address) == 1


def test_permit_past_deadline_reverts(chain, token, alice, bob, relayer):
    deadline = chain.timestamp() - 1
    revert = expect_revert("ERC2612ExpiredSignature", token.permit, alice, bob.address, 1, deadline, relayer)
    assert revert.args_by_name["deadline"] == deadline


@pytest.mark.parametrize("vrs", [False, True], ids=["bytes-signature", "v-r-s"])
def test_transfer_with_authorization_relayed(chain, token, alice, bob, relayer, vrs):
    alice_eth = chain.balance(alice.address)
    auth = token.sign_transfer(alice, bob.address, to_units(5), valid_before=chain.timestamp() + HOUR)
    receipt = token.transfer_with_authorization(auth, relayer, vrs=vrs)
    assert token.balance_of(bob.address) == to_units(5)
    assert token.balance_of(alice.address) == to_units(995)
    assert chain.balance(alice.address) == alice_eth, "the payer must not pay gas"
    assert token.authorization_state(alice.address, auth.nonce) is True
    (used,) = chain.events(token.contract, receipt, "AuthorizationUsed")
    assert used == {"authorizer": alice.address, "nonce": auth.nonce}


def test_eip3009_event_topics_match_the_standard(token):
    topics = {e["name"]: e for e in token.contract.abi if e.get("type") == "event"}
    for name in ("AuthorizationUsed", "AuthorizationCanceled"):
        inputs = topics[name]["inputs"]
        assert [(i["type"], i["indexed"]) for i in inputs] == [("address", True), ("bytes32", True)]


def test_authorization_nonce_cannot_be_replayed(chain, token, alice, bob, relayer):
    auth = token.sign_transfer(alice, bob.address, 10, valid_before=chain.timestamp() + HOUR)
    token.transfer_with_authorization(auth, relayer)
    revert = expect_revert("ERC3009UsedAuthorization", token.transfer_with_authorization, auth, relayer)
    assert revert.args_by_name == {"authorizer": alice.address, "nonce": auth.nonce}
    assert token.balance_of(bob.address) == 10


def test_expired_authorization_reverts(chain, token, alice, bob, relayer):
    valid_before = chain.timestamp() + 60
    auth = token.sign_transfer(alice, bob.address, 10, valid_before=valid_before)
    chain.time_travel(valid_before)  # validBefore is exclusive: at that second it is already expired
    revert = expect_revert("ERC3009InvalidAuthorizationTime", token.transfer_with_authorization, auth, relayer)
    assert revert.args_by_name == {"validAfter": 0, "validBefore": valid_before}
    assert token.balance_of(bob.address) == 0


def test_not_yet_valid_authorization_reverts_until_valid_after(chain, token, alice, bob, relayer):
    valid_after = chain.timestamp() + 600
    auth = token.sign_transfer(alice, bob.address, 10, valid_after=valid_after, valid_before=valid_after + HOUR)
    expect_revert("ERC3009InvalidAuthorizationTime", token.transfer_with_authorization, auth, relayer)
    chain.time_travel(valid_after + 1)
    token.transfer_with_authorization(auth, relayer)
    assert token.balance_of(bob.address) == 10


def test_authorization_signed_by_the_wrong_key_reverts(chain, token, alice, bob, relayer):
    signed_by_bob = token.sign_transfer(bob, bob.address, 10, valid_before=chain.timestamp() + HOUR)
    forged = dataclasses.replace(signed_by_bob, sender=alice.address)  # claims alice's funds
    expect_revert("ERC3009InvalidSignature", token.transfer_with_authorization, forged, relayer)
    expect_revert("ERC3009InvalidSignature", token.transfer_with_authorization, forged, relayer, vrs=True)
    assert token.balance_of(alice.address) == to_units(1000)


def test_tampered_amount_reverts(chain, token, alice, bob, relayer):
    auth = token.sign_transfer(alice, bob.address, 10, valid_before=chain.timestamp() + HOUR)
    expect_revert(
        "ERC3009InvalidSignature", token.transfer_with_authorization, dataclasses.replace(auth, value=10_000), relayer
    )


def test_authorization_for_another_chain_or_token_reverts(chain, token, alice, bob, relayer):
    deadline = chain.timestamp() + HOUR
    for domain in (
        dataclasses.replace(token.domain, chain_id=1),
        dataclasses.replace(token.domain, verifying_contract=bob.address),
    ):
        auth = sign_authorization(alice, domain, bob.address, 10, valid_before=deadline)
        expect_revert("ERC3009InvalidSignature", token.transfer_with_authorization, auth, relayer)


def test_cancelled_authorization_cannot_be_used(chain, token, alice, bob, relayer):
    auth = token.sign_transfer(alice, bob.address, 10, valid_before=chain.timestamp() + HOUR)
    receipt = token.cancel_authorization(alice, auth.nonce, relayer)
    (event,) = chain.events(token.contract, receipt, "AuthorizationCanceled")
    assert event == {"authorizer": alice.address, "nonce": auth.nonce}
    assert token.authorization_state(alice.address, auth.nonce) is True
    expect_revert("ERC3009UsedAuthorization", token.transfer_with_authorization, auth, relayer)
    assert token.balance_of(bob.address) == 0


def test_receive_with_authorization_only_by_the_payee(chain, token, alice, bob, relayer):
    auth = token.sign_transfer(alice, bob.address, 10, valid_before=chain.timestamp() + HOUR, receive=True)
    revert = expect_revert("ERC20InvalidReceiver", token.receive_with_authorization, auth, relayer)
    assert revert.args_by_name == {"receiver": bob.address}
    token.receive_with_authorization(auth, bob)
    assert token.balance_of(bob.address) == 10


def test_receive_authorization_cannot_be_used_as_transfer(chain, token, alice, bob, relayer):
    """The two EIP-3009 type hashes differ, so a front-runner cannot turn one into the other."""
    auth = token.sign_transfer(alice, bob.address, 10, valid_before=chain.timestamp() + HOUR, receive=True)
    expect_revert("ERC3009InvalidSignature", token.transfer_with_authorization, auth, relayer)


@pytest.mark.parametrize(
    ("amount", "units"),
    [("1.5", 1_500_000), ("0.000001", 1), ("1.50000000", 1_500_000), (" 2 ", 2_000_000), ("-0", 0), (3, 3_000_000),
     ("1" * 70, int("1" * 70) * 10**6), ("1e3", 10**9), ("0E-1000000", 0)],
)  # fmt: skip
def test_to_units_is_exact(amount, units):
    assert to_units(amount) == units


@pytest.mark.parametrize(
    ("amount", "message"),
    [("inf", "'inf' is not a finite number"), ("-Infinity", "not a finite number"), ("NaN", "not a finite number"),
     ("sNaN", "not a finite number"), ("0x10", "'0x10' is not a number"), ("", "'' is not a number"),
     ("-1", "-1 is negative"), ("1e-7", "has more than 6 decimals"), ("0.0000015", "has more than 6 decimals"),
     ("9" * 80, "99999999999999999999…(80 characters) is too large"), ("1e999999999", "is too large"),
     ("115792089237316195423570985008687907853269984665640564039457584007913129.639936", "is too large")],
)  # fmt: skip
def test_to_units_refuses_what_is_not_an_amount(amount, message):
    with pytest.raises(AgentmarketError, match=re.escape(message)):
        to_units(amount)


def test_to_units_checks_the_maximum_it_is_given():
    assert to_units("79228162514264337593543.950335", maximum=2**96 - 1) == 2**96 - 1
    with pytest.raises(AgentmarketError, match=r"--price 79228162514264337593543\.950336 is too large: at most 79228"):
        to_units("79228162514264337593543.950336", maximum=2**96 - 1, what="--price")
