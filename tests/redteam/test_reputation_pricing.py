"""Hostile asset owner vs reputation: the qualifying payment is judged at the asset's price *now*.

`ReputationRegistry` lets an account rate an asset if it paid at least max(current price, 0.01 tUSD).
The owner sets the current price, so the owner decides, at any moment, who may rate:

- **censor**: honest buyers paid the price of the day; the owner raises the price above what any of them
  paid and none of them can rate (a run of bad reviews is stopped with one `setPrice`, undone later);
- **mint raters**: the owner lowers the price to the 0.01 tUSD floor for one block, its Sybil accounts buy
  (the money comes back to its own vault, less the 1% fee: ~0.0001 tUSD per rater) and rate 100 *in that
  same window*, then restores the price. Issue 12 §4 asked that "a price-0 window does not mint raters";
  a floor-price window still does (the suite only checks rating *after* the price came back).

Expected: what qualifies a rater does not move with the owner's later price changes (e.g. judge a payment
against the price in force when it was made), and a cheap window the owner opens cannot mint raters (e.g.
a floor that does not follow the owner's price down, or a delay between a purchase and its rating).
Run on both chains (the suite's `market` fixtures).
"""

from __future__ import annotations

from eth_account import Account

from marketplace.chain.market import AssetKind, SubjectKind
from marketplace.chain.token import to_units

PRICE = to_units(5)
FLOOR = to_units("0.01")


def _publish(market, owner) -> int:
    return market.marketplace.publish(owner, kind=AssetKind.DATASET, content_hash=b"\x07" * 32, uri="d",
                                      price=PRICE, token=market.token.address,
                                      payees=[(owner.address, 10_000)])  # fmt: skip


def _buy(market, buyer, asset_id, price) -> None:
    market.token.approve(buyer, market.marketplace.address, price)
    market.marketplace.buy(buyer, asset_id, price)


def test_the_owner_cannot_disqualify_past_buyers_by_raising_the_price(chain, market, admin, alice, bob):
    asset_id = _publish(market, bob)
    _buy(market, alice, asset_id, PRICE)  # an honest buyer, at the price of the day
    market.marketplace.set_price(bob, asset_id, 100 * PRICE)  # bad reviews coming: raise the price
    try:
        market.reputation.give_feedback(alice, subject_kind=SubjectKind.ASSET, subject_id=asset_id, value=5,
                                         paid_asset_id=asset_id)  # fmt: skip
        error = None
    except Exception as exc:
        error = getattr(exc, "error", type(exc).__name__)
    assert error is None, (
        f"alice paid {PRICE} for a license, the owner raised the price, and her rating reverts: {error}"
    )


def test_a_floor_price_window_mints_no_raters(chain, market, admin, bob):
    asset_id = _publish(market, bob)
    market.marketplace.set_price(bob, asset_id, FLOOR)  # one block at the floor
    sybils = [Account.create() for _ in range(3)]
    rated = 0
    for sybil in sybils:
        chain.send_eth(admin, sybil.address, 10**17)
        market.token.mint(admin, sybil.address, FLOOR)
        _buy(market, sybil, asset_id, FLOOR)
        try:
            market.reputation.give_feedback(sybil, subject_kind=SubjectKind.ASSET, subject_id=asset_id, value=100,
                                            paid_asset_id=asset_id)  # fmt: skip
            rated += 1
        except Exception:
            pass
    market.marketplace.set_price(bob, asset_id, PRICE)  # back to normal
    summary = market.reputation.summary(SubjectKind.ASSET, asset_id)
    assert rated == 0, (
        f"the owner priced its {PRICE}-unit asset at the {FLOOR}-unit floor for a moment: {rated} Sybils bought and "
        f"rated 100 (unfiltered summary: {summary.count} ratings), each costing the owner about {FLOOR // 100} units"
    )
