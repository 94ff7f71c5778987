"""PaymentChannels: metered access paid by vouchers, claimed into the asset's vault."""

from __future__ import annotations

import dataclasses

import pytest

from marketplace.chain.eip712 import sign_voucher
from marketplace.chain.market import AssetKind, PaymentChannelsContract
from marketplace.chain.token import to_units
from tests.conftest import expect_revert

HOUR = 3600


@pytest.fixture
def model(market, bob):
    """A model asset owned by bob."""
    return market.marketplace.publish(
        bob, kind=AssetKind.MODEL, content_hash=b"\x01" * 32, uri="ipfs://model", price=to_units(1),
        token=market.token.address, payees=[(bob.address, 10_000)],
    )  # fmt: skip


@pytest.fixture
def channel(chain, market, alice, session_key, model):
    """A channel alice opened for the model with 10 tUSD; the session key signs vouchers."""
    market.token.approve(alice, market.channels.address, to_units(1000))
    return market.channels.open(alice, model, market.token.address, to_units(10), chain.timestamp() + HOUR,
                                session_key.address)  # fmt: skip


def test_open_pulls_the_deposit(chain, market, alice, session_key, model, channel):
    state = market.channels.channel(channel)
    assert (state.payer, state.signer, state.asset_id, state.deposit, state.claimed, state.closed) == (
        alice.address, session_key.address, model, to_units(10), 0, False,
    )  # fmt: skip
    assert market.token.balance_of(market.channels.address) == to_units(10)


def test_open_rejects_bad_parameters(chain, market, alice, model, admin):
    market.token.approve(alice, market.channels.address, to_units(1000))
    later = chain.timestamp() + HOUR
    other = chain.deploy("TestUSD", admin.address, sender=admin)
    revert = expect_revert("TokenMismatch", market.channels.open, alice, model, other.address, 1, later)
    assert revert.args_by_name == {"assetId": model, "expected": market.token.address, "given": other.address}
    expect_revert("InvalidAmount", market.channels.open, alice, model, market.token.address, 0, later)
    expect_revert("InvalidExpiry", market.channels.open, alice, model, market.token.address, 1, chain.timestamp())
    expect_revert("UnknownAsset", market.channels.open, alice, 77, market.token.address, 1, later)
    fn = market.channels.contract.functions.open(model, market.token.address, 1, later, "0x" + "00" * 20)
    expect_revert("ZeroSigner", chain.send, fn, alice)


def test_claims_pay_the_increase_into_the_vault(market, relayer, session_key, model, channel):
    vault = market.marketplace.vault_of(model)
    for cumulative in (to_units("0.25"), to_units(3)):
        voucher = market.channels.sign_voucher(session_key, channel, cumulative)
        market.channels.claim(relayer, channel, cumulative, voucher)  # anyone may submit
        assert market.token.balance_of(vault) == cumulative
    assert market.channels.channel(channel).claimed == to_units(3)


def test_reused_or_lowered_voucher_is_refused(market, relayer, session_key, channel):
    high = market.channels.sign_voucher(session_key, channel, to_units(2))
    low = market.channels.sign_voucher(session_key, channel, to_units(1))
    market.channels.claim(relayer, channel, to_units(2), high)
    revert = expect_revert("VoucherNotIncreasing", market.channels.claim, relayer, channel, to_units(2), high)
    assert revert.args_by_name == {"channelId": channel, "claimed": to_units(2), "cumulativeAmount": to_units(2)}
    expect_revert("VoucherNotIncreasing", market.channels.claim, relayer, channel, to_units(1), low)


def test_voucher_above_deposit_or_from_the_wrong_key_is_refused(market, alice, relayer, session_key, channel):
    too_much = market.channels.sign_voucher(session_key, channel, to_units(11))
    expect_revert("VoucherExceedsDeposit", market.channels.claim, relayer, channel, to_units(11), too_much)
    by_payer = market.channels.sign_voucher(alice, channel, to_units(1))  # the payer is not the signer
    expect_revert("InvalidVoucherSignature", market.channels.claim, relayer, channel, to_units(1), by_payer)
    signed_for_2 = market.channels.sign_voucher(session_key, channel, to_units(2))
    expect_revert("InvalidVoucherSignature", market.channels.claim, relayer, channel, to_units(3), signed_for_2)


def test_voucher_for_another_chain_or_contract_is_refused(chain, market, admin, relayer, session_key, channel):
    other_chain = dataclasses.replace(market.channels.domain, chain_id=1)
    voucher = sign_voucher(session_key, other_chain, channel, to_units(1)).packed
    expect_revert("InvalidVoucherSignature", market.channels.claim, relayer, channel, to_units(1), voucher)

    twin = chain.deploy("PaymentChannels", market.marketplace.address, sender=admin)
    twin_channels = PaymentChannelsContract(chain, twin.address)
    voucher = twin_channels.sign_voucher(session_key, channel, to_units(1))
    expect_revert("InvalidVoucherSignature", market.channels.claim, relayer, channel, to_units(1), voucher)


def test_top_up_and_extend_are_the_payers(chain, market, alice, bob, channel):
    expect_revert("NotPayer", market.channels.top_up, bob, channel, 1)
    expect_revert("NotPayer", market.channels.extend, bob, channel, chain.timestamp() + 2 * HOUR)
    market.channels.top_up(alice, channel, to_units(5))
    expiry = market.channels.channel(channel).expiry
    expect_revert("InvalidExpiry", market.channels.extend, alice, channel, expiry)
    market.channels.extend(alice, channel, expiry + HOUR)
    state = market.channels.channel(channel)
    assert (state.deposit, state.expiry) == (to_units(15), expiry + HOUR)


def test_after_expiry_only_reclaim_and_it_returns_the_rest(chain, market, alice, relayer, session_key, channel):
    voucher = market.channels.sign_voucher(session_key, channel, to_units(4))
    market.channels.claim(relayer, channel, to_units(4), voucher)
    expect_revert("ChannelNotExpired", market.channels.reclaim, relayer, channel)
    chain.time_travel(market.channels.channel(channel).expiry)
    late = market.channels.sign_voucher(session_key, channel, to_units(5))
    expect_revert("ChannelExpired", market.channels.claim, relayer, channel, to_units(5), late)
    before = market.token.balance_of(alice.address)
    market.channels.reclaim(relayer, channel)  # anyone may trigger it; the money goes to the payer
    assert market.token.balance_of(alice.address) - before == to_units(6)
    assert market.token.balance_of(market.channels.address) == 0
    expect_revert("ChannelClosed", market.channels.reclaim, relayer, channel)


def test_asset_owner_closes_early_with_a_final_claim(market, alice, bob, carol, session_key, model, channel):
    voucher = market.channels.sign_voucher(session_key, channel, to_units(7))
    expect_revert("NotAssetOwner", market.channels.close, carol, channel, to_units(7), voucher)
    before = market.token.balance_of(alice.address)
    market.channels.close(bob, channel, to_units(7), voucher)
    assert market.token.balance_of(market.marketplace.vault_of(model)) == to_units(7)
    assert market.token.balance_of(alice.address) - before == to_units(3)
    assert market.channels.channel(channel).closed
    expect_revert("ChannelClosed", market.channels.claim, bob, channel, to_units(8), voucher)
    expect_revert("UnknownChannel", market.channels.reclaim, bob, 999)
