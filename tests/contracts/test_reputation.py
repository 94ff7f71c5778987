"""ReputationRegistry: feedback a payment earned (issue 12 §4), on both backends.

A rater qualifies for a subject by paying into the subject asset's vault: by its license purchases, at
least the deployment's floor in all (each purchase paid the price of its day: a later price change moves
nothing), or by one of its channels' claims, at least max(the asset's current price, the floor).
Values are bounded to [0, 100]; summaries can be filtered by rater (ERC-8004) and never overflow;
owners, operators and the agent's own wallet cannot rate.
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketplace.chain.deployment import MIN_RATING_PAYMENT
from marketplace.chain.records import AssetKind, SubjectKind
from marketplace.chain.units import to_units
from tests.helpers.chain import expect_revert

HOUR = 3600
PRICE = to_units(1)
ZERO = "0x0000000000000000000000000000000000000000"
SCALE = 10**18  # summaries carry 18 decimals
#: Gas given to giveFeedback: py-evm's estimate runs a transaction ~12 times (a revert still surfaces,
#: replayed from the mined transaction); tests/agents/test_agent_tools.py rates with the estimate.
GAS = 400_000
#: Examples of the summary property per backend (AGENTMARKET_REPUTATION_EXAMPLES for a longer run).
EXAMPLES = int(os.environ.get("AGENTMARKET_REPUTATION_EXAMPLES", "12"))


def publish(market, owner, *, price=PRICE, kind=AssetKind.DATASET, duration=0, tag=b"\x02"):
    return market.marketplace.publish(
        owner, kind=kind, content_hash=tag * 32, uri="ipfs://d", price=price, token=market.token.address,
        payees=[(owner.address, 10_000)], license_duration=duration,
    )  # fmt: skip


@pytest.fixture
def asset(market, bob):
    """A dataset sold by bob for 1 tUSD."""
    return publish(market, bob)


def fund(market, admin, account, amount=to_units(100)):
    market.token.mint(admin, account.address, amount)


def buy(market, buyer, asset_id, max_price=PRICE):
    market.token.approve(buyer, market.marketplace.address, max_price)
    return market.marketplace.buy(buyer, asset_id, max_price)


def open_channel(chain, market, payer, asset_id, deposit=to_units(2)):
    """A channel of ``payer`` for ``asset_id`` whose claims the ``relayer`` fixture's key (dev account 3) makes."""
    market.token.approve(payer, market.channels.address, deposit)
    return market.channels.open(payer, asset_id, market.token.address, deposit, chain.timestamp() + HOUR,
                                receiver_authorizer=chain.accounts[3].address)  # fmt: skip


def claim(market, relayer, payer, channel_id, cumulative):
    voucher = market.channels.sign_voucher(payer, channel_id, cumulative)
    market.channels.claim(relayer, channel_id, cumulative, cumulative, voucher)


def rate(market, author, subject_id, value, *, kind=SubjectKind.ASSET, paid_asset_id=None, channel_id=0, decimals=0,
         tag1="quality", tag2="", gas=GAS):  # fmt: skip
    return market.reputation.give_feedback(
        author, subject_kind=kind, subject_id=subject_id, value=value, value_decimals=decimals,
        paid_asset_id=subject_id if paid_asset_id is None else paid_asset_id, channel_id=channel_id, tag1=tag1,
        tag2=tag2, gas=gas,
    )  # fmt: skip


# ---------------------------------------------------------------------- honest paths


def test_licensed_buyer_rates_once(chain, market, alice, asset):
    buy(market, alice, asset)
    receipt = rate(market, alice, asset, 80)
    (event,) = chain.events(market.reputation.contract, receipt, "NewFeedback")
    assert (event["clientAddress"], event["value"], event["tag1"]) == (alice.address, 80, "quality")
    assert market.reputation.has_rated(SubjectKind.ASSET, asset, alice.address)
    revert = expect_revert("AlreadyRated", rate, market, alice, asset, 100)
    assert revert.args_by_name == {"subjectKind": 0, "subjectId": asset, "account": alice.address}
    summary = market.reputation.summary(SubjectKind.ASSET, asset)
    assert (summary.count, summary.average_raw, summary.decimals, summary.average) == (1, 80 * SCALE, 18, 80.0)
    assert market.reputation.summary(SubjectKind.ASSET, asset, [alice.address]) == summary
    feedback = market.reputation.feedback(SubjectKind.ASSET, asset, alice.address)
    assert (feedback.value, feedback.value_decimals, feedback.tag1, feedback.tag2, feedback.score) == (
        80, 0, "quality", "", 80.0,
    )  # fmt: skip
    assert market.reputation.clients(SubjectKind.ASSET, asset) == [alice.address]


def test_a_channel_payer_rates_once_its_claims_reach_the_price(chain, market, alice, relayer, asset):
    channel = open_channel(chain, market, alice, asset)
    revert = expect_revert("InsufficientPayment", rate, market, alice, asset, 50, channel_id=channel)
    assert revert.args_by_name == {"paidAssetId": asset, "account": alice.address, "paid": 0, "required": PRICE}
    claim(market, relayer, alice, channel, PRICE)
    assert market.reputation.payment_of(asset, alice.address, channel).qualifies
    rate(market, alice, asset, 50, channel_id=channel)
    assert market.reputation.summary(SubjectKind.ASSET, asset).count == 1


def test_license_payments_add_up_across_renewals(chain, market, admin, bob, carol):
    """What a license cost is recorded by the Marketplace (in the expiry's slot): a renewal adds to it, and
    purchases at a price below the floor qualify once they paid the floor together."""
    timed = publish(market, bob, duration=HOUR, price=MIN_RATING_PAYMENT // 2)
    fund(market, admin, carol)
    buy(market, carol, timed, MIN_RATING_PAYMENT // 2)
    revert = expect_revert("InsufficientPayment", rate, market, carol, timed, 70)
    assert (revert.args_by_name["paid"], revert.args_by_name["required"]) == (MIN_RATING_PAYMENT // 2,
                                                                              MIN_RATING_PAYMENT)  # fmt: skip
    buy(market, carol, timed, MIN_RATING_PAYMENT // 2)
    assert market.marketplace.license_paid(timed, carol.address) == MIN_RATING_PAYMENT
    rate(market, carol, timed, 70)


def test_a_price_rise_does_not_disqualify_past_buyers(chain, market, admin, alice, bob, carol, asset):
    """A license is judged against the price of the day it was bought (red team: the owner censoring buyers)."""
    buy(market, alice, asset)
    market.marketplace.set_price(bob, asset, 100 * PRICE)
    payment = market.reputation.payment_of(asset, alice.address)
    assert (payment.paid, payment.required, payment.qualifies) == (PRICE, MIN_RATING_PAYMENT, True)
    rate(market, alice, asset, 10)
    fund(market, admin, carol, 100 * PRICE)
    buy(market, carol, asset, 100 * PRICE)  # bought at the new price
    market.marketplace.set_price(bob, asset, PRICE)
    rate(market, carol, asset, 20)
    assert market.reputation.summary(SubjectKind.ASSET, asset).count == 2


def test_values_with_decimals_average_on_one_scale(market, admin, alice, carol, asset):
    for buyer in (alice, carol):
        fund(market, admin, buyer)
        buy(market, buyer, asset)
    rate(market, alice, asset, 455, decimals=1)  # 45.5
    rate(market, carol, asset, 3)
    summary = market.reputation.summary(SubjectKind.ASSET, asset)
    assert (summary.count, summary.average_raw) == (2, 2425 * SCALE // 100)  # (45.5 + 3) / 2 = 24.25


# ---------------------------------------------------------------------- bounded values


def test_values_outside_0_to_100_are_refused(market, alice, asset):
    """The issue's attack: one payer moved an 80-rated asset to about -8.5e37 with an int128 value."""
    buy(market, alice, asset)
    for value, decimals, max_value in [(101, 0, 100), (-1, 0, 100), (2**127 - 1, 0, 100), (-(2**127), 0, 100),
                                       (10_001, 2, 10_000), (100 * 10**18 + 1, 18, 100 * 10**18)]:  # fmt: skip
        revert = expect_revert("ValueOutOfRange", rate, market, alice, asset, value, decimals=decimals)
        assert revert.args_by_name == {"value": value, "valueDecimals": decimals, "maxValue": max_value}
    revert = expect_revert("InvalidValueDecimals", rate, market, alice, asset, 1, decimals=19)
    assert revert.args_by_name == {"valueDecimals": 19, "maxDecimals": 18}
    assert market.reputation.summary(SubjectKind.ASSET, asset).count == 0
    rate(market, alice, asset, 100 * 10**18, decimals=18)  # the top of the scale, at full precision
    assert market.reputation.summary(SubjectKind.ASSET, asset).average_raw == 100 * SCALE


def test_extreme_ratings_cannot_overflow_or_block_later_ones(chain, market, admin, bob):
    """The issue's attack: ~19 extreme authors overflowed the sum and every later rating reverted.
    Seven raters at both ends of the scale, then more ratings: the average stays exact."""
    asset = publish(market, bob, price=MIN_RATING_PAYMENT)
    raters = chain.accounts[3:10]
    for account in raters:
        fund(market, admin, account)
        buy(market, account, asset, MIN_RATING_PAYMENT)
    for account in raters[:3]:
        rate(market, account, asset, 100 * 10**18, decimals=18)
    for account in raters[3:6]:
        rate(market, account, asset, 0, decimals=18)
    rate(market, raters[6], asset, 80)
    summary = market.reputation.summary(SubjectKind.ASSET, asset)
    assert (summary.count, summary.average_raw) == (7, 380 * SCALE // 7)


# ---------------------------------------------------------------------- what qualifies a rater


def test_a_one_unit_channel_claim_does_not_qualify(chain, market, alice, relayer, asset):
    """The issue's attack: rating a 1 tUSD asset cost a 1-unit channel claim."""
    channel = open_channel(chain, market, alice, asset)
    claim(market, relayer, alice, channel, 1)
    revert = expect_revert("InsufficientPayment", rate, market, alice, asset, 5, channel_id=channel)
    assert revert.args_by_name == {"paidAssetId": asset, "account": alice.address, "paid": 1, "required": PRICE}
    claim(market, relayer, alice, channel, PRICE - 1)
    expect_revert("InsufficientPayment", rate, market, alice, asset, 5, channel_id=channel)
    assert market.reputation.summary(SubjectKind.ASSET, asset).count == 0


def test_a_price_zero_window_mints_no_raters(chain, market, admin, bob, carol, asset):
    """The issue's attack: the seller sets price 0 for a block, its Sybils "buy" and rate."""
    market.marketplace.set_price(bob, asset, 0)
    buy(market, carol, asset, 0)  # a free license...
    assert market.marketplace.has_access(asset, carol.address)
    revert = expect_revert("InsufficientPayment", rate, market, carol, asset, 100)  # ...is no payment
    assert revert.args_by_name == {"paidAssetId": asset, "account": carol.address, "paid": 0,
                                   "required": MIN_RATING_PAYMENT}  # fmt: skip
    market.marketplace.set_price(bob, asset, PRICE)
    revert = expect_revert("InsufficientPayment", rate, market, carol, asset, 100)
    assert (revert.args_by_name["paid"], revert.args_by_name["required"]) == (0, MIN_RATING_PAYMENT)
    assert market.reputation.summary(SubjectKind.ASSET, asset).count == 0


def test_a_window_below_the_floor_qualifies_nobody_once_the_price_is_back(chain, market, admin, bob, carol, asset):
    """Same kind: bought during a cheap window (just below the floor), rated after the price came back."""
    fund(market, admin, carol)
    market.marketplace.set_price(bob, asset, MIN_RATING_PAYMENT - 1)
    buy(market, carol, asset, MIN_RATING_PAYMENT - 1)
    market.marketplace.set_price(bob, asset, PRICE)
    revert = expect_revert("InsufficientPayment", rate, market, carol, asset, 100)
    assert (revert.args_by_name["paid"], revert.args_by_name["required"]) == (MIN_RATING_PAYMENT - 1,
                                                                              MIN_RATING_PAYMENT)  # fmt: skip


def test_a_channel_is_judged_at_todays_price(chain, market, alice, bob, relayer, asset):
    """A channel's payer names its own claimer, so its claims must reach the current price (not the price of
    some day): a rise above what it claimed stops it rating until the price comes down again."""
    channel = open_channel(chain, market, alice, asset)
    claim(market, relayer, alice, channel, PRICE)
    market.marketplace.set_price(bob, asset, to_units(2))
    revert = expect_revert("InsufficientPayment", rate, market, alice, asset, 60, channel_id=channel)
    assert (revert.args_by_name["paid"], revert.args_by_name["required"]) == (PRICE, to_units(2))
    market.marketplace.set_price(bob, asset, PRICE)
    rate(market, alice, asset, 60, channel_id=channel)


def test_a_cheap_model_needs_the_floor_in_claims(chain, market, alice, bob, relayer):
    """Per-call prices can be tiny: the deployment's floor (0.01 tUSD) still has to reach the vault."""
    model = publish(market, bob, price=to_units("0.001"), kind=AssetKind.MODEL, tag=b"\x05")
    assert market.reputation.min_payment() == MIN_RATING_PAYMENT == to_units("0.01")
    channel = open_channel(chain, market, alice, model)
    claim(market, relayer, alice, channel, to_units("0.005"))  # five calls
    revert = expect_revert("InsufficientPayment", rate, market, alice, model, 90, channel_id=channel)
    assert (revert.args_by_name["paid"], revert.args_by_name["required"]) == (to_units("0.005"), MIN_RATING_PAYMENT)
    claim(market, relayer, alice, channel, MIN_RATING_PAYMENT)  # ten calls
    rate(market, alice, model, 90, channel_id=channel)


def test_a_channel_proves_only_its_payers_payment_for_its_asset(chain, market, alice, bob, carol, relayer, asset):
    channel = open_channel(chain, market, alice, asset)
    claim(market, relayer, alice, channel, PRICE)
    revert = expect_revert("NotChannelPayer", rate, market, relayer, asset, 50, channel_id=channel)
    assert revert.args_by_name == {"channelId": channel, "payer": alice.address, "account": relayer.address}
    other = publish(market, carol, tag=b"\x04")
    revert = expect_revert("ChannelForOtherAsset", rate, market, alice, other, 50, channel_id=channel)
    assert revert.args_by_name == {"channelId": channel, "channelAssetId": asset, "paidAssetId": other}
    expect_revert("UnknownChannel", rate, market, alice, asset, 50, channel_id=999)
    revert = expect_revert("PaymentForOtherAsset", rate, market, alice, other, 50, paid_asset_id=asset)
    assert revert.args_by_name == {"subjectId": other, "paidAssetId": asset}
    expect_revert("UnknownAsset", rate, market, alice, 404, 50)


# ---------------------------------------------------------------------- no self-feedback


def test_the_asset_owner_cannot_rate_its_asset(market, bob, asset):
    revert = expect_revert("SelfFeedback", rate, market, bob, asset, 100)
    assert revert.args_by_name == {"subjectKind": 0, "subjectId": asset, "account": bob.address}


@pytest.mark.parametrize("who", ["owner", "agent wallet", "approved operator", "operator for all"])
def test_the_agents_owner_operators_and_wallet_cannot_rate_it(chain, market, admin, alice, bob, carol,
                                                              session_key, who):  # fmt: skip
    """The issue's attack: the agent's own wallet and the owner's operators rated the agent. Each of
    them pays for the agent's asset first, so only the self-feedback rule can refuse them."""
    agent = market.agents.register(bob, "https://agents.example/bob.json")
    product = publish(market, bob, tag=b"\x06")
    deadline = chain.timestamp() + 120
    binding = market.agents.sign_wallet_binding(session_key, agent, bob.address, deadline)
    market.agents.set_agent_wallet(bob, agent, session_key.address, deadline, binding.packed)
    functions = market.agents.contract.functions
    if who == "approved operator":
        chain.send(functions.approve(carol.address, agent), bob)
    elif who == "operator for all":
        chain.send(functions.setApprovalForAll(carol.address, True), bob)
    rater = {"owner": bob, "agent wallet": session_key}.get(who, carol)
    fund(market, admin, rater)
    if rater is not bob:
        buy(market, rater, product)
    revert = expect_revert("SelfFeedback", rate, market, rater, agent, 100, kind=SubjectKind.AGENT,
                           paid_asset_id=product)  # fmt: skip
    assert revert.args_by_name == {"subjectKind": 1, "subjectId": agent, "account": rater.address}
    assert market.reputation.summary(SubjectKind.AGENT, agent).count == 0


def test_an_agent_is_rated_through_an_asset_it_sells(chain, market, admin, alice, bob, carol, session_key, asset):
    agent = market.agents.register(bob, "https://agents.example/bob.json")
    other_agent = market.agents.register(carol)
    buy(market, alice, asset)
    revert = expect_revert("AssetNotOfAgent", rate, market, alice, other_agent, 9, kind=SubjectKind.AGENT,
                           paid_asset_id=asset)  # fmt: skip
    assert revert.args_by_name == {"paidAssetId": asset, "agentId": other_agent}
    expect_revert("ERC721NonexistentToken", rate, market, alice, 77, 9, kind=SubjectKind.AGENT, paid_asset_id=asset)
    rate(market, alice, agent, 9, kind=SubjectKind.AGENT, paid_asset_id=asset)
    assert market.reputation.summary(SubjectKind.AGENT, agent).count == 1
    expect_revert("AlreadyRated", rate, market, alice, agent, 9, kind=SubjectKind.AGENT, paid_asset_id=asset)
    # an asset published by the agent's wallet counts as the agent's too
    deadline = chain.timestamp() + 120
    binding = market.agents.sign_wallet_binding(session_key, agent, bob.address, deadline)
    market.agents.set_agent_wallet(bob, agent, session_key.address, deadline, binding.packed)
    by_wallet = publish(market, session_key, tag=b"\x07")
    fund(market, admin, carol)
    buy(market, carol, by_wallet)
    rate(market, carol, agent, 50, kind=SubjectKind.AGENT, paid_asset_id=by_wallet)
    assert market.reputation.summary(SubjectKind.AGENT, agent).average == 29.5


# ---------------------------------------------------------------------- filtered summaries (ERC-8004)


def test_summary_filters_by_rater_and_tag(chain, market, admin, alice, carol, relayer, asset):
    for account, value, tag1, tag2 in [(alice, 90, "quality", "fast"), (carol, 30, "quality", "slow"),
                                       (relayer, 60, "price", "")]:  # fmt: skip
        fund(market, admin, account)
        buy(market, account, asset)
        rate(market, account, asset, value, tag1=tag1, tag2=tag2)
    summary = market.reputation.summary
    assert summary(SubjectKind.ASSET, asset).average == 60.0
    one = summary(SubjectKind.ASSET, asset, [alice.address])
    assert (one.count, one.average) == (1, 90.0)
    pair = summary(SubjectKind.ASSET, asset, [alice.address, carol.address])
    assert (pair.count, pair.average) == (2, 60.0)
    # each address counts once however often it is listed; strangers and the zero address are skipped
    listed = summary(SubjectKind.ASSET, asset, [carol.address, ZERO, alice.address, carol.address, admin.address,
                                                carol.address])  # fmt: skip
    assert (listed.count, listed.average) == (2, 60.0)
    everyone = [alice.address, carol.address, relayer.address]
    assert summary(SubjectKind.ASSET, asset, everyone, tag1="quality").average == 60.0
    assert summary(SubjectKind.ASSET, asset, everyone, tag1="quality", tag2="slow").average == 30.0
    assert summary(SubjectKind.ASSET, asset, everyone, tag2="fast").count == 1
    nothing = summary(SubjectKind.ASSET, asset, everyone, tag1="none")
    assert (nothing.count, nothing.average_raw) == (0, 0)
    revert = expect_revert("ClientAddressesRequired", summary, SubjectKind.ASSET, asset, [])
    assert revert.args_by_name == {}
    with pytest.raises(ValueError, match="pass clients"):
        summary(SubjectKind.ASSET, asset, tag1="quality")
    assert market.reputation.clients(SubjectKind.ASSET, asset) == everyone
    revert = expect_revert("NoFeedback", market.reputation.feedback, SubjectKind.ASSET, asset, admin.address)
    assert revert.args_by_name == {"subjectKind": 0, "subjectId": asset, "clientAddress": admin.address}


_RATING = st.integers(0, 18).flatmap(
    lambda decimals: st.tuples(
        st.just(decimals),
        st.one_of(
            st.integers(0, 100 * 10**decimals),
            st.sampled_from([0, 100 * 10**decimals]),
            st.integers(100 * 10**decimals + 1, 2**127 - 1),
            st.integers(-(2**127), -1),
        ),
    )
)


def test_no_sequence_of_bounded_ratings_breaks_the_summary(chain, market, admin, bob):
    """Property: whatever ratings are attempted (in or out of range, any decimals, repeated raters),
    neither summary reverts, both stay in [0, 100] and both equal the exact average of what was
    accepted; the filtered one for any list of raters (duplicates, strangers) and any tag."""
    asset = publish(market, bob, price=MIN_RATING_PAYMENT)
    raters = chain.accounts[3:10]
    for account in raters:
        fund(market, admin, account)
        buy(market, account, asset, MIN_RATING_PAYMENT)
    addresses = [account.address for account in raters] + [admin.address, bob.address, ZERO]

    @settings(max_examples=EXAMPLES, deadline=None,
              suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
    @given(
        attempts=st.lists(st.tuples(st.integers(0, len(raters) - 1), _RATING, st.sampled_from(["a", "b"])),
                          max_size=9),
        listed=st.lists(st.integers(0, len(addresses) - 1), min_size=1, max_size=12),
        tag=st.sampled_from(["", "a", "b"]),
    )  # fmt: skip
    def attempt(attempts, listed, tag):
        snapshot = chain.snapshot()
        try:
            accepted: dict[str, tuple[int, str]] = {}
            for index, (decimals, value), tag1 in attempts:
                rater = raters[index]
                args = (market, rater, asset, value)
                kwargs = {"decimals": decimals, "tag1": tag1}
                if not 0 <= value <= 100 * 10**decimals:
                    expect_revert("ValueOutOfRange", rate, *args, **kwargs)
                elif rater.address in accepted:
                    expect_revert("AlreadyRated", rate, *args, **kwargs)
                else:
                    rate(*args, **kwargs)
                    accepted[rater.address] = (value * 10 ** (18 - decimals), tag1)

            def expected(clients):
                values = [accepted[c][0] for c in clients if c in accepted and tag in ("", accepted[c][1])]
                return len(values), (sum(values) // len(values) if values else 0)

            everything = [value for value, _tag in accepted.values()]
            unfiltered = market.reputation.summary(SubjectKind.ASSET, asset)
            assert (unfiltered.count, unfiltered.average_raw) == (
                len(everything), sum(everything) // len(everything) if everything else 0,
            )  # fmt: skip
            clients = [addresses[i] for i in listed]
            filtered = market.reputation.summary(SubjectKind.ASSET, asset, clients, tag1=tag)
            assert (filtered.count, filtered.average_raw) == expected(set(clients))
            for summary in (unfiltered, filtered):
                assert 0 <= summary.average_raw <= 100 * SCALE and summary.decimals == 18
        finally:
            chain.revert(snapshot)

    attempt()
