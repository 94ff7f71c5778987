"""PaymentChannels: the payer signs a ceiling, the receiver authorizer claims what it served into the asset's vault.

Every refusal is asserted with its custom error and data, on both backends. The signature rule is
checked in both directions against the off-chain verifier (``VoucherHasher.recover``): a voucher the
gateway accepts is one the contract accepts, and vice versa, including high-s, v = 0/1, compact,
ERC-1271 contract signers and EIP-7702-delegated accounts.
"""

from __future__ import annotations

import dataclasses

import pytest
from eth_account import Account

from marketplace.chain.contracts import PaymentChannelsContract
from marketplace.chain.eip712 import sign_voucher
from marketplace.chain.records import AssetKind
from marketplace.chain.units import CLAIM_WINDOW, UINT128_MAX, to_units
from marketplace.protocol.vouchers import Voucher, VoucherHasher
from tests.helpers.chain import expect_revert

HOUR = 3600
ZERO = "0x" + "00" * 20
SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141


@pytest.fixture
def model(market, bob):
    """A model asset owned by bob."""
    return market.marketplace.publish(
        bob, kind=AssetKind.MODEL, content_hash=b"\x01" * 32, uri="ipfs://model", price=to_units(1),
        token=market.token.address, payees=[(bob.address, 10_000)],
    )  # fmt: skip


@pytest.fixture
def channel(chain, market, alice, session_key, relayer, model):
    """A channel alice opened for the model with 10 tUSD; the session key signs, the relayer claims."""
    market.token.approve(alice, market.channels.address, to_units(1000))
    return market.channels.open(alice, model, market.token.address, to_units(10), chain.timestamp() + HOUR,
                                session_key.address, receiver_authorizer=relayer.address)  # fmt: skip


def test_open_pulls_the_deposit_and_records_both_keys(chain, market, alice, session_key, relayer, model, channel):
    state = market.channels.channel(channel)
    assert (state.payer, state.signer, state.receiver_authorizer, state.asset_id) == (
        alice.address, session_key.address, relayer.address, model,
    )  # fmt: skip
    assert (state.deposit, state.claimed, state.settled) == (to_units(10), 0, False)
    assert state.claim_deadline == state.expiry + CLAIM_WINDOW == state.expiry + 900
    assert market.channels.payment(channel) == (alice.address, model, 0)
    assert market.token.balance_of(market.channels.address) == to_units(10)
    assert market.channels.contract.functions.CLAIM_WINDOW().call() == CLAIM_WINDOW


def test_open_rejects_bad_parameters(chain, market, alice, relayer, model, admin):
    market.token.approve(alice, market.channels.address, to_units(1000))
    later = chain.timestamp() + HOUR
    token = market.token.address
    other = chain.deploy("TestUSD", admin.address, sender=admin)
    open_ = market.channels.open
    revert = expect_revert(
        "TokenMismatch", open_, alice, model, other.address, 1, later, receiver_authorizer=relayer.address
    )
    assert revert.args_by_name == {"assetId": model, "expected": token, "given": other.address}
    assert expect_revert("InvalidAmount", open_, alice, model, token, 0, later,
                         receiver_authorizer=relayer.address).args_by_name == {"amount": 0}  # fmt: skip
    expect_revert("InvalidAmount", open_, alice, model, token, 2**128, later, receiver_authorizer=relayer.address)
    now = chain.timestamp()
    expect_revert("InvalidExpiry", open_, alice, model, token, 1, now, receiver_authorizer=relayer.address)
    expect_revert("UnknownAsset", open_, alice, 77, token, 1, later, receiver_authorizer=relayer.address)
    fn = market.channels.contract.functions.open(model, token, 1, later, ZERO, relayer.address)
    expect_revert("ZeroSigner", chain.send, fn, alice)
    expect_revert("ZeroReceiverAuthorizer", open_, alice, model, token, 1, later, receiver_authorizer=ZERO)


def test_the_receiver_claims_what_it_served_under_one_ceiling(market, relayer, session_key, model, channel):
    """One voucher for 5 tUSD; the receiver claims 1, then 3 in total: the vault gets exactly 3."""
    vault = market.marketplace.vault_of(model)
    ceiling = market.channels.sign_voucher(session_key, channel, to_units(5))
    receipt = market.channels.claim(relayer, channel, to_units(5), to_units(1), ceiling)
    (event,) = market.chain.events(market.channels.contract, receipt, "ChannelClaimed")
    seen = tuple(event[k] for k in ("channelId", "assetId", "receiverAuthorizer", "amount", "totalClaimed"))
    assert seen == (channel, model, relayer.address, to_units(1), to_units(1))
    market.channels.claim(relayer, channel, to_units(5), to_units(3), ceiling)
    assert market.token.balance_of(vault) == to_units(3)
    assert market.channels.payment(channel)[2] == market.channels.channel(channel).claimed == to_units(3)


def test_only_the_receiver_authorizer_claims(market, alice, bob, session_key, channel):
    voucher = market.channels.sign_voucher(session_key, channel, to_units(2))
    for caller in (alice, bob, session_key):  # the payer, the asset owner, the signer
        revert = expect_revert("NotReceiverAuthorizer", market.channels.claim, caller, channel, to_units(2), 1, voucher)
        assert revert.args_by_name == {"channelId": channel, "caller": caller.address}
        expect_revert(
            "NotReceiverAuthorizer", market.channels.claim_and_settle, caller, channel, to_units(2), 1, voucher
        )


def test_claims_rise_stay_under_the_ceiling_and_the_deposit(market, relayer, session_key, channel):
    claim = market.channels.claim
    voucher = market.channels.sign_voucher(session_key, channel, to_units(4))
    revert = expect_revert("ClaimAboveVoucher", claim, relayer, channel, to_units(4), to_units(4) + 1, voucher)
    assert revert.args_by_name == {"channelId": channel, "totalClaimed": to_units(4) + 1,
                                   "maxClaimableAmount": to_units(4)}  # fmt: skip
    claim(relayer, channel, to_units(4), to_units(2), voucher)
    revert = expect_revert("ClaimNotIncreasing", claim, relayer, channel, to_units(4), to_units(2), voucher)
    assert revert.args_by_name == {"channelId": channel, "claimed": to_units(2), "totalClaimed": to_units(2)}
    expect_revert("ClaimNotIncreasing", claim, relayer, channel, to_units(4), to_units(1), voucher)
    # a ceiling above the deposit is a valid voucher; the claim itself stops at the deposit
    generous = market.channels.sign_voucher(session_key, channel, UINT128_MAX)
    revert = expect_revert("ClaimExceedsDeposit", claim, relayer, channel, UINT128_MAX, to_units(10) + 1, generous)
    assert revert.args_by_name == {"channelId": channel, "totalClaimed": to_units(10) + 1, "deposit": to_units(10)}
    claim(relayer, channel, UINT128_MAX, to_units(10), generous)
    assert market.channels.channel(channel).claimed == to_units(10)


def test_voucher_from_the_wrong_key_or_for_another_ceiling_is_refused(market, alice, relayer, session_key, channel):
    by_payer = market.channels.sign_voucher(alice, channel, to_units(1))  # the payer is not the signer
    revert = expect_revert("InvalidVoucherSignature", market.channels.claim, relayer, channel, to_units(1), 1, by_payer)
    assert revert.args_by_name == {"channelId": channel, "recovered": alice.address}
    signed_for_2 = market.channels.sign_voucher(session_key, channel, to_units(2))
    expect_revert("InvalidVoucherSignature", market.channels.claim, relayer, channel, to_units(3), 1, signed_for_2)
    other_channel = market.channels.sign_voucher(session_key, channel + 1, to_units(2))
    expect_revert("InvalidVoucherSignature", market.channels.claim, relayer, channel, to_units(2), 1, other_channel)


def test_voucher_for_another_chain_or_contract_is_refused(chain, market, admin, relayer, session_key, channel):
    other_chain = dataclasses.replace(market.channels.domain, chain_id=1)
    voucher = sign_voucher(session_key, other_chain, channel, to_units(1)).packed
    expect_revert("InvalidVoucherSignature", market.channels.claim, relayer, channel, to_units(1), 1, voucher)

    twin = chain.deploy("PaymentChannels", market.marketplace.address, sender=admin)
    twin_channels = PaymentChannelsContract(chain, twin.address)
    voucher = twin_channels.sign_voucher(session_key, channel, to_units(1))
    expect_revert("InvalidVoucherSignature", market.channels.claim, relayer, channel, to_units(1), 1, voucher)


def test_voucher_digest_is_the_one_clients_sign(market, channel):
    hasher = VoucherHasher(market.channels.domain)
    for ceiling in (0, 1, to_units(3), UINT128_MAX):
        assert market.channels.voucher_digest(channel, ceiling) == hasher.digest(channel, ceiling)


# ---------------------------------------------------------------------- the signature rule, both ways


def _variants(signature: bytes, wrong_key_signature: bytes) -> dict[str, bytes]:
    r, s, v = signature[:32], int.from_bytes(signature[32:64], "big"), signature[64]
    high_s = r + (SECP256K1_N - s).to_bytes(32, "big") + bytes([55 - v])  # the same signer under bare ecrecover
    vs = ((v - 27) << 255 | s).to_bytes(32, "big")
    return {
        "valid": signature,
        "high_s": high_s,
        "v_0_or_1": signature[:64] + bytes([v - 27]),
        "v_29": signature[:64] + bytes([29]),
        "compact_64_bytes": r + vs,  # EIP-2098
        "trailing_byte": signature + b"\x00",
        "r_zero": bytes(32) + signature[32:],
        "s_zero": r + bytes(32) + signature[64:],
        "empty": b"",
        "wrong_key": wrong_key_signature,
    }


VARIANTS = list(_variants(bytes(64) + b"\x1b", bytes(65)))


@pytest.mark.parametrize("variant", VARIANTS)
def test_gateway_and_contract_agree_on_every_signature(market, alice, relayer, session_key, channel, variant):
    """Whatever the bytes, the off-chain verifier accepts exactly when the contract accepts."""
    ceiling = to_units(2)
    hasher = VoucherHasher(market.channels.domain)
    signature = _variants(hasher.sign(session_key, channel, ceiling), hasher.sign(alice, channel, ceiling))[variant]
    off_chain = hasher.recover(Voucher(channel, ceiling, signature)) == session_key.address.lower()
    try:
        market.channels.claim(relayer, channel, ceiling, 1, signature, gas=200_000)
        on_chain = True
    except Exception as exc:
        assert getattr(exc, "error", None) == "InvalidVoucherSignature", exc
        on_chain = False
    assert off_chain == on_chain == (variant == "valid")


def test_a_contract_signer_approving_everything_is_not_believed(chain, market, alice, relayer, model, admin):
    """ERC-1271: a smart-contract signer says yes to any signature; the channel still wants ECDSA."""
    approving = chain.deploy("ApprovingSigner", sender=admin)
    market.token.approve(alice, market.channels.address, to_units(5))
    channel = market.channels.open(alice, model, market.token.address, to_units(5), chain.timestamp() + HOUR,
                                   approving.address, receiver_authorizer=relayer.address)  # fmt: skip
    hasher = VoucherHasher(market.channels.domain)
    for signature in (b"", b"\x01" * 65, hasher.sign(alice, channel, to_units(5))):
        revert = expect_revert("InvalidVoucherSignature", market.channels.claim, relayer, channel, to_units(5), 1,
                               signature)  # fmt: skip
        assert revert.args_by_name["channelId"] == channel
        assert hasher.recover(Voucher(channel, to_units(5), signature)) != approving.address.lower()
    assert market.token.balance_of(market.marketplace.vault_of(model)) == 0


@pytest.mark.backend("anvil")
def test_an_eip7702_delegated_signer_is_still_checked_by_its_key(chain, market, alice, relayer, session_key, channel):
    """The signer's account delegates to code that approves every ERC-1271 check (EIP-7702): a voucher
    signed by another key is refused, one signed by the account's own key still claims."""
    approving = chain.deploy("ApprovingSigner", sender=alice)
    chain.w3.provider.make_request("anvil_setCode", [session_key.address, "0xef0100" + approving.address[2:].lower()])
    assert bytes(chain.w3.eth.get_code(session_key.address))[:3] == b"\xef\x01\x00"
    hasher = VoucherHasher(market.channels.domain)
    forged = hasher.sign(Account.create(), channel, to_units(5))
    expect_revert("InvalidVoucherSignature", market.channels.claim, relayer, channel, to_units(5), 1, forged)
    assert hasher.recover(Voucher(channel, to_units(5), forged)) != session_key.address.lower()
    genuine = hasher.sign(session_key, channel, to_units(5))
    market.channels.claim(relayer, channel, to_units(5), to_units(2), genuine)
    assert market.channels.channel(channel).claimed == to_units(2)


# ---------------------------------------------------------------------- the payer's moves


def test_top_up_and_extend_are_the_payers_before_expiry(chain, market, alice, bob, channel):
    expect_revert("NotPayer", market.channels.top_up, bob, channel, 1)
    expect_revert("NotPayer", market.channels.extend, bob, channel, chain.timestamp() + 2 * HOUR)
    receipt = market.channels.top_up(alice, channel, to_units(5))
    (event,) = chain.events(market.channels.contract, receipt, "ChannelToppedUp")
    assert (event["payer"], event["amount"], event["deposit"]) == (alice.address, to_units(5), to_units(15))
    expiry = market.channels.channel(channel).expiry
    assert expect_revert("InvalidExpiry", market.channels.extend, alice, channel, expiry).args_by_name == {
        "expiry": expiry, "notAfter": expiry,
    }  # fmt: skip
    market.channels.extend(alice, channel, expiry + HOUR)
    state = market.channels.channel(channel)
    assert (state.deposit, state.expiry) == (to_units(15), expiry + HOUR)
    chain.time_travel(expiry + HOUR)
    revert = expect_revert("ChannelExpired", market.channels.top_up, alice, channel, 1)
    assert revert.args_by_name == {"channelId": channel, "expiry": expiry + HOUR}
    expect_revert("ChannelExpired", market.channels.extend, alice, channel, expiry + 3 * HOUR)


# ---------------------------------------------------------------------- ending a channel


def test_claims_stay_open_for_the_window_after_expiry_then_the_payer_reclaims(
    chain, market, alice, relayer, session_key, model, channel
):
    voucher = market.channels.sign_voucher(session_key, channel, to_units(6))
    market.channels.claim(relayer, channel, to_units(6), to_units(4), voucher)
    expiry = market.channels.channel(channel).expiry
    revert = expect_revert("ReclaimTooEarly", market.channels.reclaim, relayer, channel)
    assert revert.args_by_name == {"channelId": channel, "reclaimableAt": expiry + CLAIM_WINDOW}
    chain.time_travel(expiry + CLAIM_WINDOW - 30)  # expired, but calls answered before expiry are still claimable
    expect_revert("ReclaimTooEarly", market.channels.reclaim, relayer, channel)
    market.channels.claim(relayer, channel, to_units(6), to_units(5), voucher)
    chain.time_travel(expiry + CLAIM_WINDOW)
    revert = expect_revert(
        "ClaimWindowOver", market.channels.claim, relayer, channel, to_units(6), to_units(6), voucher
    )
    assert revert.args_by_name == {"channelId": channel, "claimDeadline": expiry + CLAIM_WINDOW}
    before = market.token.balance_of(alice.address)
    receipt = market.channels.reclaim(alice, channel)  # anyone may trigger it; the money goes to the payer
    (event,) = chain.events(market.channels.contract, receipt, "ChannelSettled")
    assert (event["caller"], event["claimed"], event["refunded"]) == (alice.address, to_units(5), to_units(5))
    assert market.token.balance_of(alice.address) - before == to_units(5)
    assert market.token.balance_of(market.marketplace.vault_of(model)) == to_units(5)
    assert market.token.balance_of(market.channels.address) == 0
    assert market.channels.channel(channel).settled
    assert expect_revert("AlreadySettled", market.channels.reclaim, relayer, channel).args_by_name == {
        "channelId": channel
    }
    expect_revert("AlreadySettled", market.channels.claim, relayer, channel, to_units(6), to_units(6), voucher)


def test_the_asset_owner_ends_service_and_the_receiver_still_claims(
    chain, market, alice, bob, carol, relayer, session_key, model, channel
):
    expect_revert("NotChannelAssetOwner", market.channels.close, carol, channel)
    receipt = market.channels.close(bob, channel)
    now = chain.timestamp()
    (event,) = chain.events(market.channels.contract, receipt, "ChannelClosed")
    assert (event["channelId"], event["owner"], event["expiry"]) == (channel, bob.address, now)
    state = market.channels.channel(channel)
    assert (state.expiry, state.settled, state.deposit) == (now, False, to_units(10))  # nothing refunded yet
    for again in (lambda: market.channels.close(bob, channel), lambda: market.channels.top_up(alice, channel, 1),
                  lambda: market.channels.extend(alice, channel, now + HOUR)):  # fmt: skip
        assert expect_revert("ChannelExpired", again).args_by_name == {"channelId": channel, "expiry": now}
    voucher = market.channels.sign_voucher(session_key, channel, to_units(7))
    market.channels.claim(relayer, channel, to_units(7), to_units(7), voucher)  # calls answered before the close
    expect_revert("ReclaimTooEarly", market.channels.reclaim, alice, channel)
    chain.time_travel(now + CLAIM_WINDOW)
    before = market.token.balance_of(alice.address)
    market.channels.reclaim(alice, channel)
    assert market.token.balance_of(alice.address) - before == to_units(3)
    assert market.token.balance_of(market.marketplace.vault_of(model)) == to_units(7)


def test_the_receiver_settles_at_once_with_a_final_claim(chain, market, alice, relayer, session_key, model, channel):
    voucher = market.channels.sign_voucher(session_key, channel, to_units(4))
    market.channels.claim(relayer, channel, to_units(4), to_units(1), voucher)
    before = market.token.balance_of(alice.address)
    receipt = market.channels.claim_and_settle(relayer, channel, to_units(4), to_units(3), voucher)
    (settled,) = chain.events(market.channels.contract, receipt, "ChannelSettled")
    assert (settled["caller"], settled["claimed"], settled["refunded"]) == (relayer.address, to_units(3), to_units(7))
    assert market.token.balance_of(alice.address) - before == to_units(7)
    assert market.token.balance_of(market.marketplace.vault_of(model)) == to_units(3)
    expect_revert(
        "AlreadySettled", market.channels.claim_and_settle, relayer, channel, to_units(4), to_units(4), voucher
    )


def test_settling_with_nothing_more_to_claim_needs_no_voucher(chain, market, alice, relayer, model, channel):
    before = market.token.balance_of(alice.address)
    market.channels.claim_and_settle(relayer, channel)  # totalClaimed 0 = claimed: no claim, no signature checked
    assert market.token.balance_of(alice.address) - before == to_units(10)
    assert market.channels.channel(channel).settled


def test_settling_checks_the_final_voucher_and_the_window(chain, market, relayer, session_key, alice, channel):
    forged = market.channels.sign_voucher(alice, channel, to_units(4))
    expect_revert("InvalidVoucherSignature", market.channels.claim_and_settle, relayer, channel, to_units(4), 1, forged)
    chain.time_travel(market.channels.channel(channel).claim_deadline)
    expect_revert("ClaimWindowOver", market.channels.claim_and_settle, relayer, channel)


def test_unknown_channels_are_named(market, relayer, bob):
    for call in (
        lambda: market.channels.channel(999),
        lambda: market.channels.payment(999),
        lambda: market.channels.reclaim(bob, 999),
        lambda: market.channels.close(bob, 999),
        lambda: market.channels.claim(relayer, 999, 1, 1, b""),
    ):
        assert expect_revert("UnknownChannel", call).args_by_name == {"channelId": 999}
