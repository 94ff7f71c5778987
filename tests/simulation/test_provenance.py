"""Provenance in the free-riders setting: with ``royalty.provenance`` a copier earns nothing for the rows it
copied (the row's first publisher, the lowest asset id, is credited); without it, a full copy earns exactly
what the original earns."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agents.learning import load_source, make_shards, split_holdout, with_duplicates
from agents.roles import BuildPlan, design_model
from simulation.scenario import ScenarioError, load_scenario

FREE_RIDERS = Path(__file__).resolve().parents[2] / "scenarios" / "free-riders.toml"


@pytest.fixture(scope="module")
def free_riders():
    """The free-riders scenario's shards, cut as the engine cuts them (producer 3 copies 80% of producer 0,
    producer 4 resells producer 1 outright), the builders' validation data, and asset ids in publishing order."""
    scenario = load_scenario(FREE_RIDERS)
    X, y = load_source(scenario.data.source, seed=scenario.seed)
    X_train, y_train, X_held, y_held = split_holdout(X, y, scenario.data.test_fraction, scenario.seed)
    rng = np.random.default_rng(scenario.seed)
    shards = make_shards(X_train, y_train, scenario.producers.shard_size, seed=scenario.seed)
    for duplicate in scenario.producers.duplicates:
        shards[duplicate.producer] = with_duplicates(shards[duplicate.producer], shards[duplicate.source],
                                                     duplicate.rate, rng)  # fmt: skip
    half = len(y_held) // 2
    return scenario, shards, X_held[:half], y_held[:half], [101 + index for index in range(len(shards))]


def test_the_scenario_key_is_checked() -> None:
    assert load_scenario(FREE_RIDERS).royalty.provenance is False
    assert load_scenario(FREE_RIDERS, ["royalty.provenance=true"]).royalty.provenance is True
    with pytest.raises(ScenarioError, match=r"royalty\.provenance"):
        load_scenario(FREE_RIDERS, ["royalty.provenance=maybe"])


@pytest.mark.parametrize("rule", ["knn_shapley", "banzhaf"])
def test_a_copier_earns_nothing_for_copied_rows_with_provenance_and_the_originals_share_without(
    free_riders, rule: str
) -> None:
    scenario, shards, X_val, y_val, ids = free_riders
    bought = [3, 4, 0, 1]  # the cheap copies first, then two originals (budget 7: 1.5 + 1.5 + 2 + 2)

    def split(provenance: bool) -> tuple[list[float], list[int]]:
        plan = BuildPlan(model="knn", rule=rule, royalty_bps=5000, price_per_call=20_000, X_val=X_val, y_val=y_val,
                         seed=scenario.seed, provenance=provenance)  # fmt: skip
        _X, _y, _model, _score, weights, shares = design_model(plan, [shards[i] for i in bought],
                                                               [ids[i] for i in bought])  # fmt: skip
        return weights, shares

    weights, shares = split(provenance=False)
    copier, original = bought.index(4), bought.index(1)
    # Equal up to distance ties: digits' pixels are integers, and k-NN Shapley orders rows at equal distance
    # by position, so a row of another parent between the copy and its original can part them (~1e-4).
    assert weights[copier] == pytest.approx(weights[original], rel=1e-3) and weights[copier] > 0.1
    weights, shares = split(provenance=True)
    assert weights[copier] == 0.0 and shares[copier] == 1  # the lineage floor of 1 bps, nothing more
    assert weights[original] > 0.3 and sum(shares) == 5000
    # The partial copier (80% of producer 0's rows) is paid for its own 30 rows only: less than the original.
    assert 0 < weights[bought.index(3)] < weights[bought.index(0)]
    with pytest.raises(ValueError, match="provenance needs parent_ids"):
        design_model(BuildPlan(model="knn", rule=rule, royalty_bps=5000, price_per_call=1, X_val=X_val, y_val=y_val,
                               provenance=True), [shards[0]])  # fmt: skip
