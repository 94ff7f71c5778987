"""ReputationRegistry: feedback only from accounts that paid, once per account and subject."""

from __future__ import annotations

import pytest

from marketplace.chain.market import AssetKind, SubjectKind
from marketplace.chain.token import to_units
from tests.conftest import expect_revert

HOUR = 3600


@pytest.fixture
def asset(market, bob):
    """A dataset sold by bob for 1 tUSD."""
    return market.marketplace.publish(
        bob, kind=AssetKind.DATASET, content_hash=b"\x02" * 32, uri="ipfs://d", price=to_units(1),
        token=market.token.address, payees=[(bob.address, 10_000)],
    )  # fmt: skip


def rate(market, author, subject_id, value, *, kind=SubjectKind.ASSET, paid_asset_id=None, channel_id=0, decimals=0):
    return market.reputation.give_feedback(
        author, subject_kind=kind, subject_id=subject_id, value=value, value_decimals=decimals,
        paid_asset_id=subject_id if paid_asset_id is None else paid_asset_id, channel_id=channel_id, tag1="quality",
    )  # fmt: skip


def test_licensed_buyer_rates_once(market, alice, asset):
    market.token.approve(alice, market.marketplace.address, to_units(1))
    market.marketplace.buy(alice, asset, to_units(1))
    receipt = rate(market, alice, asset, 80)
    (event,) = market.chain.events(market.reputation.contract, receipt, "NewFeedback")
    assert (event["clientAddress"], event["value"], event["tag1"]) == (alice.address, 80, "quality")
    assert market.reputation.has_rated(SubjectKind.ASSET, asset, alice.address)
    expect_revert("AlreadyRated", rate, market, alice, asset, 100)
    summary = market.reputation.summary(SubjectKind.ASSET, asset)
    assert (summary.count, summary.average) == (1, 80.0)


def test_non_payer_and_seller_cannot_rate(market, bob, carol, asset):
    revert = expect_revert("NotAPayer", rate, market, carol, asset, 100)
    assert revert.args_by_name == {"paidAssetId": asset, "account": carol.address}
    expect_revert("SelfFeedback", rate, market, bob, asset, 100)
    expect_revert("UnknownAsset", rate, market, carol, 404, 100)
    assert market.reputation.summary(SubjectKind.ASSET, asset).count == 0


def test_channel_payer_rates_only_after_a_claim(chain, market, alice, relayer, asset):
    market.token.approve(alice, market.channels.address, to_units(10))
    channel = market.channels.open(alice, asset, market.token.address, to_units(2), chain.timestamp() + HOUR,
                                   receiver_authorizer=relayer.address)  # fmt: skip
    expect_revert("NotAPayer", rate, market, alice, asset, 50, channel_id=channel)
    voucher = market.channels.sign_voucher(alice, channel, 1)
    market.channels.claim(relayer, channel, 1, 1, voucher)
    expect_revert("NotAPayer", rate, market, relayer, asset, 50, channel_id=channel)  # not the channel's payer
    rate(market, alice, asset, 50, channel_id=channel)
    assert market.reputation.summary(SubjectKind.ASSET, asset).count == 1


def test_average_with_decimals_and_payment_must_match_subject(market, admin, alice, carol, asset):
    for buyer in (alice, carol):
        market.token.mint(admin, buyer.address, to_units(1))
        market.token.approve(buyer, market.marketplace.address, to_units(1))
        market.marketplace.buy(buyer, asset, to_units(1))
    rate(market, alice, asset, 45, decimals=1)  # 4.5
    rate(market, carol, asset, 3)
    summary = market.reputation.summary(SubjectKind.ASSET, asset)
    assert (summary.count, summary.average) == (2, 3.75)
    expect_revert("InvalidValueDecimals", rate, market, alice, asset, 1, decimals=19)
    second = market.marketplace.publish(
        alice, kind=AssetKind.DATASET, content_hash=b"\x03" * 32, uri="ipfs://e", price=1,
        token=market.token.address, payees=[(alice.address, 10_000)],
    )  # fmt: skip
    revert = expect_revert("PaymentForOtherAsset", rate, market, carol, second, 1, paid_asset_id=asset)
    assert revert.args_by_name == {"subjectId": second, "paidAssetId": asset}


def test_agent_is_rated_through_an_asset_it_sells(market, alice, bob, carol, asset):
    agent = market.agents.register(bob, "https://agents.example/bob.json")
    other_agent = market.agents.register(carol)
    market.token.approve(alice, market.marketplace.address, to_units(1))
    market.marketplace.buy(alice, asset, to_units(1))
    expect_revert("AssetNotOfAgent", rate, market, alice, other_agent, 9, kind=SubjectKind.AGENT, paid_asset_id=asset)
    rate(market, alice, agent, 9, kind=SubjectKind.AGENT, paid_asset_id=asset)
    assert market.reputation.summary(SubjectKind.AGENT, agent).count == 1
    expect_revert("AlreadyRated", rate, market, alice, agent, 9, kind=SubjectKind.AGENT, paid_asset_id=asset)
