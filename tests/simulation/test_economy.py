"""Rules with economic consequences (issue 16 §2): builders buy by value for money within a budget, price
calls net of what they owe upstream, producers reprice over waves, consumers weigh price against accuracy,
and license pricing mechanisms against Sybil splitting. Unit checks on the one function both engines call,
then tiny runs on the embedded chain."""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

import pytest

from agents.brains import Observation, PricedAsset, UCBBrain
from agents.economy import (
    DatasetOffer,
    DataValuation,
    choose_parents,
    cost_recovery_price,
    license_price,
    lineage_signal,
    reprice,
)
from agents.roles import listing_uri, rows_of
from marketplace.chain.units import to_units
from simulation.engine import call_price, run_simulation
from simulation.metrics import summarize, with_sybil_gains
from simulation.runner import sweep
from simulation.scenario import ScenarioError, load_scenario
from tests.helpers.simulation import TINY

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
BASELINE = SCENARIOS / "baseline.toml"
TUSD = 1_000_000


# --------------------------------------------------------------------------------------------------
# Builders: value for money within a budget, no cap on the count


def test_a_builder_buys_beyond_eight_parents_while_value_for_money_beats_the_threshold() -> None:
    """20 shards of 100 rows at 1 tUSD; a model is worth 40 tUSD saturating at 2,000 rows. With a budget
    that is not binding it buys exactly as many as a brute force over the marginal values says."""
    valuation = DataValuation(value=40 * TUSD, saturation_rows=2_000)
    offers = [DatasetOffer(asset_id=i, price=TUSD, rows=100) for i in range(1, 21)]
    bought = choose_parents(offers, 100 * TUSD, valuation)
    expected = 0
    while expected < 20 and valuation.worth(100 * (expected + 1)) - valuation.worth(100 * expected) >= TUSD:
        expected += 1
    assert len(bought) == expected == 14  # the old hard cap was 8
    assert bought == list(range(1, expected + 1))  # ties: the lower id first
    marginal = valuation.worth(100 * (expected + 1)) - valuation.worth(100 * expected)
    assert marginal < TUSD  # the next one would not pay for itself


def test_a_builder_stops_at_its_budget() -> None:
    valuation = DataValuation(value=100 * TUSD, saturation_rows=2_000)
    offers = [DatasetOffer(asset_id=i, price=TUSD, rows=100) for i in range(1, 21)]
    assert choose_parents(offers, 11 * TUSD + TUSD // 2, valuation) == list(range(1, 12))  # 11 fit, not 12
    assert choose_parents(offers, TUSD - 1, valuation) == []


def test_a_builder_prefers_rows_per_price_and_small_shards_at_a_flat_price_do_not_pay() -> None:
    """Three 150-row shards and three 50-row Sybil identities, all at 2 tUSD (the sybil scenario, flat): the
    builder takes the big shards and stops (a 50-row shard adds 1.93 tUSD of value for 2); per-row prices
    (0.666666 each) make the same small shards worth buying."""
    valuation = DataValuation(value=50 * TUSD, saturation_rows=500)
    big = [DatasetOffer(asset_id=i, price=2 * TUSD, rows=150) for i in (4, 5, 6)]
    flat = [DatasetOffer(asset_id=i, price=2 * TUSD, rows=50) for i in (1, 2, 3)]
    assert choose_parents(flat + big, 20 * TUSD, valuation) == [4, 5, 6]
    per_row = [DatasetOffer(asset_id=i, price=license_price("per_row", 2 * TUSD, 50, 150), rows=50) for i in (1, 2, 3)]
    assert [o.price for o in per_row] == [666_666] * 3
    assert sorted(choose_parents(per_row + big, 20 * TUSD, valuation)) == [1, 2, 3, 4, 5, 6]


def test_license_prices_under_each_mechanism() -> None:
    """A 150-row owner asking 2 tUSD, split into 50-row identities: flat charges each the full price, per-row
    a third, value the per-row price times the per-row signal (within its bounds)."""
    assert license_price("flat", 2 * TUSD, 50, 150) == 2 * TUSD
    assert license_price("per_row", 2 * TUSD, 50, 150) == 666_666
    assert license_price("value", 2 * TUSD, 50, 150) == 666_666  # no signal yet
    assert license_price("value", 2 * TUSD, 50, 150, Fraction(1)) == 666_666
    assert license_price("value", 2 * TUSD, 150, 150, Fraction(3, 2)) == 3 * TUSD
    assert license_price("value", 2 * TUSD, 150, 150, Fraction(0)) == TUSD // 2  # clipped at a quarter
    with pytest.raises(ValueError, match="unknown license pricing 'auction'"):
        license_price("auction", TUSD, 1, 1)


def test_the_lineage_signal_is_the_value_of_a_shards_rows_relative_to_the_average_row() -> None:
    """Model A gave dataset 1 (100 rows) 3/4 and dataset 2 (100 rows) 1/4; model B split 1 and 3 (300 rows)
    in proportion to rows; a model of rule none says nothing. A later builder weighs rows by the signal."""
    rows = {1: 100, 2: 100, 3: 300}
    signal = lineage_signal([((1, 2), (3_750, 1_250)), ((1, 3), (1_000, 3_000)), ((2,), (0,))], rows)
    assert signal == {1: (Fraction(3, 2) + 1) / 2, 2: Fraction(1, 2), 3: Fraction(1)}
    # a Sybil's pieces keep the signal of the whole under a rule that pays by rows
    pieces = lineage_signal([((1, 2, 3), (1_000, 1_000, 3_000))], rows)
    assert set(pieces.values()) == {Fraction(1)}
    valuation = DataValuation(value=10 * TUSD, saturation_rows=100)
    offers = [DatasetOffer(1, TUSD, 50, signal[1]), DatasetOffer(2, TUSD, 50, signal[2])]
    assert choose_parents(offers, TUSD, valuation) == [1]  # one fits: the one earlier models valued
    assert lineage_signal([((1, 9), (1, 1))], rows) == {}  # a parent of unknown rows: no signal


def test_listings_state_their_rows() -> None:
    assert rows_of(listing_uri("baseline-producer-3", 150)) == 150
    assert rows_of("digits-alice") is None and rows_of("x:rows=abc") is None


# --------------------------------------------------------------------------------------------------
# Builders' call prices respond to what they owe upstream


def test_a_cost_recovery_price_rises_with_the_royalty_the_builder_passes_up() -> None:
    """8 tUSD of licenses + 20% over 60 calls; the builder keeps (1 - royalty) of what is left after the 1% fee."""
    scenario = load_scenario(BASELINE, ["builders.pricing=cost_recovery"])
    assert call_price(load_scenario(BASELINE), 8 * TUSD, 5_000) == to_units("0.02")  # fixed pricing ignores it
    prices = [call_price(scenario, 8 * TUSD, bps) for bps in (0, 2_500, 5_000, 9_000)]
    assert prices == [
        math.ceil(9_600_000 / (60 * 0.99 * (1 - bps / 10_000)) - 1e-9) for bps in (0, 2_500, 5_000, 9_000)
    ]
    assert prices[0] < prices[1] < prices[2] < prices[3]
    assert prices[2] == 323_233  # 9.6 tUSD / (60 calls x 0.5 x 0.99)
    # a later entrant expects fewer calls (from round 4 of 5: 3 x 8 x 2 / 2 = 24) and prices higher
    assert call_price(scenario, 8 * TUSD, 5_000, entry_round=4) == math.ceil(9_600_000 / (24 * 0.495))
    with pytest.raises(ValueError, match="keeps nothing"):
        cost_recovery_price(TUSD, margin=0, calls=1, upstream_bps=10_000, fee_bps=100, floor=0)


def test_in_a_run_the_royalty_share_shows_up_in_the_call_price_and_the_consumers_cost(tmp_path: Path) -> None:
    """Cost recovery with 0% vs 50% royalties: the same licenses, a higher price per call, a higher consumer
    spend per answer."""
    spends = []
    for bps in (0, 5_000):
        scenario = load_scenario(BASELINE, [*TINY, "builders.pricing=cost_recovery", f"builders.royalty_bps={bps}"])
        result = run_simulation(scenario, work_dir=tmp_path / str(bps), engine="fast")
        (builder,) = result.builders
        calls = 2 * 4 * 2  # consumers x queries x rounds, one builder
        keep = (1 - bps / 10_000) * 0.99
        price = math.ceil(builder.spend * 1.2 / (calls * keep) - 1e-9)
        assert result.consumer_spend % price == 0  # every call paid this price
        spends.append((builder.spend, price, result.consumer_spend))
    (spend0, price0, _), (spend50, price50, _) = spends
    assert spend0 == spend50 and price50 > price0 * 1.9


# --------------------------------------------------------------------------------------------------
# Producers reprice over waves


def test_the_demand_rule_moves_prices_deterministically_within_bounds() -> None:
    step, low, high = Fraction(1, 10), Fraction(1, 4), Fraction(2)
    factor, path = Fraction(1), []
    for sold in (True, True, False, True, *([True] * 10), *([False] * 30)):
        factor = reprice(factor, sold, step=step, low=low, high=high)
        path.append(factor)
    assert path[:4] == [Fraction(11, 10), Fraction(121, 100), Fraction(1089, 1000), Fraction(11979, 10000)]
    assert max(path) == high and path[-1] == low


def test_producers_reprice_on_chain_before_a_later_wave_and_the_builders_pay_the_new_prices(tmp_path: Path) -> None:
    """Two builders in two waves, three producers at 2 tUSD. Builder 0 (round 1) buys all three, so each price
    goes up 10% before builder 1 enters (round 2): builder 1 pays 2.2 tUSD a license (both engines)."""
    overrides = [*TINY, "builders.count=2", "builders.waves=2", "producers.repricing=demand"]
    scenario = load_scenario(BASELINE, overrides)
    spends = {}
    for engine in ("fast", "full"):
        result = run_simulation(scenario, work_dir=tmp_path / engine, engine=engine)
        first, second = result.builders
        spends[engine] = (first.spend, second.spend, [p.license_revenue for p in result.producers])
        assert first.parents == (1, 2, 3) and sorted(second.parents) == [1, 2, 3]  # in order of the signal
    assert spends["fast"] == spends["full"]
    first, second, license_revenue = spends["fast"]
    assert (first, second) == (3 * 2 * TUSD, 3 * 2_200_000)
    assert license_revenue == [(2 * TUSD + 2_200_000) * 99 // 100] * 3


def test_the_new_keys_are_validated_with_one_line_errors() -> None:
    for override, words in [
        ("producers.pricing=auction", "unknown license pricing 'auction'"),
        ("producers.repricing=random", "unknown repricing rule 'random'"),
        ("builders.waves=0", "builders.waves"),
        ("producers.poison=[{producer=7, source_class=1, target_class=2}]", "poison[0].producer"),
        ("producers.poison=[{producer=0, source_class=1, target_class=1}]", "poisons nothing"),
    ]:
        with pytest.raises(ScenarioError) as caught:
            load_scenario(BASELINE, [override])
        assert words in str(caught.value) and "\n" not in str(caught.value)


# --------------------------------------------------------------------------------------------------
# Consumers weigh price against accuracy


def _observe(brain: UCBBrain, offers: list[PricedAsset], rewards: dict[int, float]) -> int:
    observation = Observation(step=0, task="", budget_left=10**12, balance=10**12, offers=offers, query=[0],
                              rewards=rewards, open_channels={o.asset_id: 10**9 for o in offers},
                              value_per_success=100)  # fmt: skip
    actions = brain.decide(observation)
    return actions[-1].arguments["model_id"] if actions else 0  # type: ignore[index]


def test_a_consumer_shifts_to_the_cheaper_of_two_equally_accurate_models() -> None:
    """Two models that are always right, one at 10 and one at 40 (a right answer is worth 100): the UCB
    consumer ends up paying the cheaper one almost every time."""
    offers = [PricedAsset(1, "model", 40), PricedAsset(2, "model", 10)]
    brain, rewards, picks = UCBBrain(seed=3), {}, []
    for _ in range(300):
        choice = _observe(brain, offers, rewards)
        picks.append(choice)
        rewards = {choice: 1.0}
    assert picks[-100:].count(2) >= 95


def test_a_consumer_abstains_from_a_model_whose_expected_value_does_not_cover_its_price() -> None:
    """A model that is always wrong stops being paid once (0 + 1) / (calls + 2) * value < price."""
    offers = [PricedAsset(1, "model", 30)]
    brain, rewards, picks = UCBBrain(seed=1), {}, []
    for _ in range(5):
        choice = _observe(brain, offers, rewards)
        picks.append(choice)
        rewards = {choice: 0.0} if choice else {}
    assert picks == [1, 1, 0, 0, 0]  # 1/2 * 100 >= 30, 1/3 * 100 >= 30, 1/4 * 100 < 30
    assert _observe(UCBBrain(seed=1), [PricedAsset(1, "model", 101)], {}) == 0  # can never pay off


# --------------------------------------------------------------------------------------------------
# License pricing mechanisms against Sybil splitting; rules with consequences


def test_per_row_pricing_makes_sybil_splitting_earn_about_the_same(tmp_path: Path) -> None:
    """Owner 0 split in two vs unsplit (tiny baseline, proportional royalties): under flat pricing each
    identity sells a full-price license; per-row pricing brings the gain to ~1."""
    gains = {}
    for mechanism in ("flat", "per_row"):
        scenario = load_scenario(BASELINE, [*TINY, "producers.split.owner=0", "builders.budget=10",
                                            "royalty.rule=proportional", f"producers.pricing={mechanism}"])  # fmt: skip
        rows = with_sybil_gains(sweep(scenario, ["producers.split.identities=1,2"], tmp_path / mechanism))
        gains[mechanism] = rows[1].metrics.sybil_gain
    assert gains["flat"] > 1.8
    assert gains["per_row"] == pytest.approx(1.0, abs=0.02)


def test_a_sweep_over_rules_now_shows_different_builder_profit_and_consumer_surplus(tmp_path: Path) -> None:
    """With cost-recovery call prices, the rule changes what builders pass up and so what consumers pay
    (``none`` passes nothing up), and with value-priced licenses over two waves, what the later builder pays
    for each shard (the lineage signal is the rule's): builder profit differs under each of three rules."""
    overrides = [*TINY, "builders.count=2", "builders.waves=2", "builders.pricing=cost_recovery",
                 "producers.pricing=value", "producers.label_noise=[0, 0, 0.6]", "consumers.value_per_correct=5",
                 "consumers.budget=20"]  # fmt: skip
    scenario = load_scenario(BASELINE, overrides)
    figures = {}
    for rule in ("none", "equal", "knn_shapley"):
        result = run_simulation(scenario.with_overrides({"royalty.rule": rule}), work_dir=tmp_path / rule,
                                engine="fast")  # fmt: skip
        metrics = summarize(result).sweep_metrics()
        figures[rule] = (metrics.builder_profit_total, metrics.consumer_surplus_total)
    assert len({profit for profit, _ in figures.values()}) == 3
    # consumers pay less per call where nothing goes up (none); under equal and knn_shapley the later, dearer
    # builder is not worth its price to them, so their surplus is the same
    assert figures["none"][1] > figures["equal"][1] == figures["knn_shapley"][1]


# --------------------------------------------------------------------------------------------------
# Data poisoning


def test_a_targeted_flip_swaps_two_classes_and_leaves_every_other_row_alone() -> None:
    import numpy as np

    from agents.learning import Shard
    from simulation.engine import with_targeted_flips

    y = np.array([1, 7, 2, 1, 7, 3, 1])
    shard = Shard(np.arange(14.0).reshape(7, 2), y)
    poisoned = with_targeted_flips(shard, [(1, 7, 1.0), (7, 1, 1.0)], np.random.default_rng(0))
    assert poisoned.y.tolist() == [7, 1, 2, 7, 1, 3, 7] and shard.y.tolist() == y.tolist()  # a copy, swapped
    half = with_targeted_flips(shard, [(1, 9, 2 / 3)], np.random.default_rng(0))
    assert (half.y == 9).sum() == 2 and (half.y[[2, 5]] == [2, 3]).all()


def test_the_poisoning_scenario_poisons_two_producers_and_asks_its_question() -> None:
    scenario = load_scenario(SCENARIOS / "poisoning.toml")
    assert sorted({p.producer for p in scenario.producers.poison}) == [3, 4]
    assert "Question: does a royalty rule pay poisoners less" in (SCENARIOS / "poisoning.toml").read_text()
