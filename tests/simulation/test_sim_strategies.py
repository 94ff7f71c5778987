"""Scenarios with strategic producers: a Sybil owner splitting its shard across identities, free riders
undercutting the producers they copy. The scenario keys are validated with one-line errors naming the key;
small runs on the embedded chain check per-owner revenue, the Sybil gain and copier revenue to the unit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agents.economy import DatasetOffer, choose_parents
from marketplace.chain.units import BPS, to_units
from simulation.engine import valuation
from simulation.metrics import with_sybil_gains
from simulation.results import SweepMetrics, SweepRow
from simulation.runner import simulate, sweep
from simulation.scenario import ScenarioError, load_scenario
from tests.helpers.simulation import TINY

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
BASELINE = SCENARIOS / "baseline.toml"


def error_for(overrides: list[str], path: Path = BASELINE) -> str:
    """The one-line ScenarioError message for loading ``path`` with ``overrides``."""
    with pytest.raises(ScenarioError) as caught:
        load_scenario(path, overrides)
    message = str(caught.value)
    assert "\n" not in message
    return message


def net(amount: int, fee_bps: int = 100) -> int:
    """What reaches a payee of ``amount`` after the protocol fee (the vault's floor)."""
    return amount * (BPS - fee_bps) // BPS


# --------------------------------------------------------------------------------------------------
# The scenario keys


def test_the_sybil_scenario_splits_one_owner_into_identities_at_the_full_price() -> None:
    scenario = load_scenario(SCENARIOS / "sybil.toml")
    producers = scenario.producers
    assert producers.split is not None and (producers.split.owner, producers.split.identities) == (0, 3)
    assert producers.identities() == [0, 0, 0, 1, 2, 3]
    assert {producers.price_of(i) for i in range(producers.count)} == {2_000_000}
    control = load_scenario(SCENARIOS / "sybil.toml", ["producers.split.identities=1"])
    assert control.producers.identities() == [0, 1, 2, 3]


def test_the_free_riders_undercut_the_producers_they_copy() -> None:
    producers = load_scenario(SCENARIOS / "free-riders.toml").producers
    assert {i: producers.duplicate_of(i) for i in (3, 4)} == {3: 0, 4: 1}
    assert [producers.price_of(i) for i in range(5)] == [2_000_000] * 3 + [1_500_000] * 2
    budget = load_scenario(SCENARIOS / "free-riders.toml").builders.budget_units
    assert budget < sum(producers.price_of(i) for i in range(5))  # not every shard is bought: price matters


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["producers.split.owner=4"], "producers.split.owner: 4 is not a producer index; must be between 0 and 3"),
        (["producers.split.owner=0", "producers.split.identities=0"],
         "producers.split.identities: 0 is out of range; must be between 1 and 200"),
        (["producers.split.owner=0", "producers.split.identities=151"],
         "producers.split.identities: 151 identities cannot share producer 0's 150 rows; at most 150"),
        (["producers.split.identities=2"], "producers.split.owner is required"),
        (["producers.split.owner=0", "producers.split.parts=2"],
         "unknown key 'producers.split.parts'; allowed keys in [producers.split]: owner, identities"),
        (["producers.split=3"], "producers.split must be a table ([producers.split] section)"),
        (["producers.count=200", "producers.shard_size=1", "producers.split.owner=0", "producers.split.identities=1"],
         None),
        (["producers.count=199", "producers.shard_size=3", "producers.split.owner=0", "producers.split.identities=3"],
         "producers.split.identities: 199 producers with 3 identities for one make 201 on chain; at most 200"),
        (["producers.duplicates=[{producer=1, source=0, price='-1'}]"],
         "producers.duplicates[0].price: must be a tUSD amount >= 0 with at most 6 decimals"),
        (["producers.duplicates=[{producer=1, source=0, price='0.0000001'}]"],
         "producers.duplicates[0].price: must be a tUSD amount >= 0 with at most 6 decimals"),
        (["producers.duplicates=[{producer=1, source=0, cost='1'}]"],
         "unknown key 'producers.duplicates[0].cost'; allowed keys in [producers.duplicates[0]]: "
         "producer, source, rate, price"),
    ],
)  # fmt: skip
def test_the_new_keys_are_validated_with_one_line_errors_naming_the_key(
    overrides: list[str], expected: str | None
) -> None:
    if expected is None:  # the limit itself is accepted (on a data set with enough rows)
        scenario = load_scenario(BASELINE, [*overrides, "data.source=make_classification"])
        assert len(scenario.producers.identities()) == 200
        return
    assert expected in error_for(overrides)


# --------------------------------------------------------------------------------------------------
# Sybil gain across a sweep (pure)


def _row(params: dict[str, str], identities: int | None, revenue: int | None) -> SweepRow:
    metrics = SweepMetrics(revenue_value_pearson=None, revenue_value_spearman=None, gini_producer_revenue=None,
                           producer_share=None, producer_share_license=None, producer_share_royalty=None,
                           producer_revenue_total=0, builder_profit_total=0,
                           consumer_surplus_total=0, protocol_fee=0, consumer_spend=0, accuracy=None, gas_used=0,
                           tx_count=0, split_identities=identities, split_owner_revenue=revenue)  # fmt: skip
    return SweepRow(params=params, metrics=metrics)


def test_the_sybil_gain_compares_each_split_with_its_unsplit_control_of_the_same_other_parameters() -> None:
    rows = [
        _row({"royalty.rule": "equal", "producers.split.identities": "1"}, 1, 4_000),
        _row({"royalty.rule": "equal", "producers.split.identities": "3"}, 3, 10_000),
        _row({"royalty.rule": "none", "producers.split.identities": "3"}, 3, 9_000),  # no control for this rule
        _row({"royalty.rule": "knn", "producers.split.identities": "1"}, 1, 0),  # a control that earned nothing
        _row({"royalty.rule": "knn", "producers.split.identities": "2"}, 2, 5),
        _row({"royalty.rule": "plain"}, None, None),  # no split at all
    ]
    assert [row.metrics.sybil_gain for row in with_sybil_gains(rows)] == [1.0, 2.5, None, None, None, None]


# --------------------------------------------------------------------------------------------------
# Runs on the chain


def test_a_sybil_owner_earns_what_its_identities_earned_on_chain_and_the_sweep_reports_its_gain(tmp_path) -> None:
    """Owner 0 split in two vs unsplit, same seed: per-owner revenue is the sum of the identities' on-chain
    balances (reconciled with the run's ledger), each identity sold its own license at the full price, and
    the gain is the split revenue over the control's."""
    scenario = load_scenario(BASELINE, [*TINY, "producers.split.owner=0", "builders.budget=10"])
    rows = sweep(scenario, ["producers.split.identities=1,2"], tmp_path)
    control, split = (json.loads(p.read_text()) for p in sorted(tmp_path.glob("point-*/result.json")))
    metrics = json.loads(sorted(tmp_path.glob("point-*"))[1].joinpath("metrics.json").read_text())

    assert [p["owner"] for p in split["producers"]] == [0, 0, 1, 2] and split["split_owner"] == 0
    identities = split["producers"][:2]
    assert len({p["address"] for p in split["producers"]}) == 4
    assert [p["rows"] for p in identities] == [40, 40]  # 80 rows cut in two
    price = to_units("2")
    assert all(p["license_revenue"] == net(price) for p in identities)  # each identity sold a full license
    revenue = sum(p["revenue"] for p in identities)
    assert metrics["owner_revenue"] == [revenue, *(p["revenue"] for p in split["producers"][2:])]
    assert metrics["split_owner_revenue"] == revenue and metrics["split_identities"] == 2

    assert [p["owner"] for p in control["producers"]] == [0, 1, 2]
    assert rows[0].metrics.split_owner_revenue == control["producers"][0]["revenue"]
    assert rows[0].metrics.sybil_gain == 1.0
    assert rows[1].metrics.sybil_gain == revenue / control["producers"][0]["revenue"]
    assert rows[1].metrics.sybil_gain > 1.5  # flat license fees: splitting pays (issue 16 §3)
    header = (tmp_path / "sweep.csv").read_text().splitlines()[0].split(",")
    assert {"split_identities", "split_owner_revenue", "sybil_gain"} <= set(header)
    assert "copier_revenue" not in header  # no free riders in this sweep: no empty column


def test_a_strategic_free_rider_undercuts_its_source_and_crowds_an_honest_producer_out(tmp_path) -> None:
    """Producer 2 resells producer 0's rows at half price; a builder with 3 tUSD buys the cheapest first: the
    copy and producer 0, never producer 1. Copier and copied revenue are the on-chain balances."""
    duplicates = "producers.duplicates=[{producer=2, source=0, rate=1.0, price='1'}]"
    scenario = load_scenario(BASELINE, [*TINY, duplicates, "builders.budget=3"])
    summary = simulate(scenario, tmp_path)
    result = json.loads((tmp_path / "result.json").read_text())
    original, honest, copier = result["producers"]
    assert copier["duplicate_of"] == 0 and "owner" not in copier and "split_owner" not in result
    assert copier["license_revenue"] == net(to_units("1")) and original["license_revenue"] == net(to_units("2"))
    assert honest["revenue"] == 0  # crowded out: no license, so no royalties either
    assert summary.copier_revenue == copier["revenue"] > 0
    assert summary.copied_revenue == original["revenue"] > 0
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert (metrics["copier_revenue"], metrics["copied_revenue"]) == (copier["revenue"], original["revenue"])
    assert "owner_revenue" not in metrics and "sybil_gain" not in metrics


def test_a_builder_buys_the_sybils_and_copies_its_valuation_pays_for() -> None:
    """What a builder of the shipped scenarios buys by value for money (``agents.economy.choose_parents``):
    in the sybil scenario (data worth 100 tUSD) the three 150-row shards, then the three 50-row identities at
    the full 2 tUSD; valuing data at the default 50 tUSD, none of the identities (each would add 1.93 tUSD of
    value for 2); in free-riders the two cheap copies first, then two originals, within 7 tUSD."""
    sybil = load_scenario(SCENARIOS / "sybil.toml")
    rows = [50, 50, 50, 150, 150, 150]
    offers = [DatasetOffer(i + 1, to_units("2"), r) for i, r in enumerate(rows)]
    assert choose_parents(offers, sybil.builders.budget_units, valuation(sybil)) == [4, 5, 6, 1, 2, 3]
    cautious = sybil.with_overrides({"builders.data_value": "50"})
    assert choose_parents(offers, sybil.builders.budget_units, valuation(cautious)) == [4, 5, 6]
    free_riders = load_scenario(SCENARIOS / "free-riders.toml")
    prices = [free_riders.producers.price_of(i) for i in range(5)]
    offers = [DatasetOffer(i + 1, p, 150) for i, p in enumerate(prices)]
    assert choose_parents(offers, free_riders.builders.budget_units, valuation(free_riders)) == [4, 5, 1, 2]
