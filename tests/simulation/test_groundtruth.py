"""Ground truth and the metrics measured against it: brute force on small games, hand-computed metric values."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np
import pytest

import simulation.groundtruth as groundtruth
from agents.datavalue import exact_shapley
from agents.learning import Shard, accuracy, load_source, make_shards, split_holdout, train_model, with_label_noise
from simulation.groundtruth import TruthGames, knn_coalition_accuracies, producer_values
from simulation.metrics import defective_share, royalty_correlation, summarize, truth_distance
from simulation.results import ChainActivity, Undefined
from tests.helpers.simulation import synthetic_result

TUSD = 1_000_000


@pytest.fixture(scope="module")
def digits() -> tuple[list[Shard], np.ndarray, np.ndarray]:
    """Five digits shards (one with half its labels flipped) and a 120-row test set."""
    X, y = load_source("digits")
    X_pool, y_pool, X_test, y_test = split_holdout(X, y, 120 / len(y), seed=1)
    shards = make_shards(X_pool, y_pool, [30, 30, 30, 30, 30], seed=1)
    shards[2] = with_label_noise(shards[2], 0.5, 10, rng=1)
    return shards, X_test, y_test


def test_knn_coalitions_match_scikit_learn_without_training() -> None:
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(300, 4)), rng.integers(0, 3, size=300)  # continuous: no distance ties
    X_test, y_test = rng.normal(size=(40, 4)), rng.integers(0, 3, size=40)
    parents = make_shards(X, y, [2, 9, 30, 4, 25], seed=2)  # some smaller than k
    worth = knn_coalition_accuracies(parents, X_test, y_test, k=5)
    assert len(worth) == 2**5 - 1
    for members, value in worth.items():
        rows = sorted(members)
        model = train_model("knn", np.concatenate([parents[i].X for i in rows]),
                            np.concatenate([parents[i].y for i in rows]), k=5)  # fmt: skip
        assert value == accuracy(model, X_test, y_test), members


@pytest.mark.parametrize("kind", ["knn", "logreg"])
def test_ground_truth_is_the_exact_shapley_value_of_the_trained_models(digits, kind: str) -> None:
    shards, X_test, y_test = digits
    parents = [4, 0, 2, 3]  # shard indices of the run, in the model's parent order

    def brute(coalition: frozenset[int]) -> float:  # train every coalition for real
        if not coalition:
            _, counts = np.unique(y_test, return_counts=True)
            return counts.max() / counts.sum()
        rows = sorted(parents[i] for i in coalition)
        X = np.concatenate([shards[r].X for r in rows])
        y = np.concatenate([shards[r].y for r in rows])
        return accuracy(train_model(kind, X, y, k=5), X_test, y_test)  # type: ignore[arg-type]

    truth = TruthGames(shards, X_test, y_test, k=5, seed=0).truth(kind, parents, seed=0)
    assert truth.exact and truth.stderr == (0.0,) * 4
    np.testing.assert_allclose(truth.values, exact_shapley(4, brute), rtol=0, atol=1e-12)
    clipped = np.clip(truth.values, 0, None)
    np.testing.assert_allclose(truth.shares, clipped / clipped.sum(), atol=1e-15)
    assert truth.values[2] < min(truth.values[i] for i in (0, 1, 3))  # the noisy shard (index 2) is worth least


def test_models_sharing_parents_train_each_coalition_once(digits) -> None:
    shards, X_test, y_test = digits
    games = TruthGames(shards, X_test, y_test, k=5, seed=0)
    first = games.truth("logreg", [0, 1, 2], seed=0)
    assert games.fits == 7
    again = games.truth("logreg", [2, 0, 1], seed=1)  # same shards, another order: no new fit
    assert games.fits == 7
    assert again.values == (first.values[2], first.values[0], first.values[1])
    games.truth("logreg", [0, 1, 3], seed=2)  # shares {0}, {1}, {0, 1} with the first
    assert games.fits == 7 + 4


def test_over_the_fit_budget_a_model_is_sampled_with_its_standard_error(digits, monkeypatch) -> None:
    shards, X_test, y_test = digits
    exact = TruthGames(shards, X_test, y_test, k=5, seed=0).truth("logreg", [0, 1, 2, 3], seed=0)
    monkeypatch.setattr(groundtruth, "FIT_BUDGET", 10)  # 15 coalitions would overrun it
    games = TruthGames(shards, X_test, y_test, k=5, seed=0)
    sampled = games.truth("logreg", [0, 1, 2, 3], seed=0)
    assert not sampled.exact and all(e > 0 for e in sampled.stderr)
    # Seeded: within 4 standard errors of the exact values (no truncation: the estimate is unbiased).
    assert all(abs(s - e) <= 4 * se for s, e, se in zip(sampled.values, exact.values, sampled.stderr, strict=True))
    assert sampled == TruthGames(shards, X_test, y_test, k=5, seed=0).truth("logreg", [0, 1, 2, 3], seed=0)


def test_above_the_exact_size_knn_is_sampled(digits, monkeypatch) -> None:
    shards, X_test, y_test = digits
    monkeypatch.setattr(groundtruth, "EXACT_MAX_PARENTS", 3)
    truth = TruthGames(shards, X_test, y_test, k=5, seed=0).truth("knn", [0, 1, 2, 3, 4], seed=3)
    assert not truth.exact and len(truth.values) == 5 and all(e > 0 for e in truth.stderr)
    assert math.isclose(sum(truth.shares), 1.0)


def test_producer_values_split_each_pool_by_the_shares() -> None:
    truths = [
        groundtruth.ModelTruth(values=(0.2, 0.1), stderr=(0, 0), exact=True, shares=(2 / 3, 1 / 3)),
        groundtruth.ModelTruth(values=(0.3, -0.1, 0.3), stderr=(0, 0, 0), exact=True, shares=(0.5, 0.0, 0.5)),
    ]
    values = producer_values(truths, [[0, 2], [2, 1, 3]], [300.0, 1000.0], 5)
    assert values == pytest.approx([200.0, 0.0, 100.0 + 500.0, 500.0, 0.0])


# ---------------------------------------------------------------------------------------------- metrics


def truth_result():
    """The synthetic run with royalties split and a ground truth: producers 0 (clean), 1 (noisy), 2 (copies 0).

    Builder 0 (model 4, parents 1 and 3: producers 0 and 2) paid 2 tUSD by calls, shares 2500/2500, truth
    (0.8, 0.2). Builder 1 (model 5, parents 1, 2, 3) paid 3 tUSD, shares 1667/1667/1666, truth (0.5, 0.1, 0.4).
    """
    result = synthetic_result()
    royalty = {0: 3 * TUSD, 1: 1 * TUSD, 2: 2 * TUSD}
    truth = {0: 2.0 * TUSD, 1: 0.5 * TUSD, 2: 1.5 * TUSD}
    producers = tuple(replace(p, license_revenue=p.revenue - royalty[p.index], royalty_revenue=royalty[p.index],
                              true_value=truth[p.index]) for p in result.producers)  # fmt: skip
    builders = tuple(
        replace(b, call_revenue=2 * TUSD, true_shares=(0.8, 0.2)) if b.index == 0
        else replace(b, call_revenue=3 * TUSD, true_shares=(0.5, 0.1, 0.4))
        for b in result.builders
    )  # fmt: skip
    return replace(result, producers=producers, builders=builders)


def test_truth_distance_by_hand() -> None:
    result = truth_result()
    # Model 4: ½(|0.5 - 0.8| + |0.5 - 0.2|) = 0.3, owed 2 tUSD x 5000 bps. Model 5: shares 1667/5000,
    # 1667/5000, 1666/5000 against 0.5, 0.1, 0.4: ½(0.1666 + 0.2334 + 0.0668) = 0.2334, owed 3 tUSD x 5000.
    model_5 = 0.5 * (abs(1667 / 5000 - 0.5) + abs(1667 / 5000 - 0.1) + abs(1666 / 5000 - 0.4))
    assert math.isclose(model_5, 0.2334)
    assert truth_distance(result) == pytest.approx((2 * 0.3 + 3 * model_5) / 5, abs=1e-12)
    # Rule none: nothing paid, nothing to compare; no ground truth; no model paid for a call.
    unpaid = replace(result, builders=tuple(replace(b, shares_bps=(0,) * len(b.parents)) for b in result.builders))
    assert truth_distance(unpaid) == Undefined("no model pays royalties (rule none, or a royalty share of 0)")
    untrue = replace(result, builders=tuple(replace(b, true_shares=None) for b in result.builders))
    assert truth_distance(untrue) == Undefined("the engine did not compute the ground truth")
    idle = replace(result, builders=tuple(replace(b, call_revenue=0) for b in result.builders))
    assert truth_distance(idle) == Undefined("no model that pays royalties was paid for a call")


def test_royalty_correlation_and_defective_share_by_hand() -> None:
    result = truth_result()
    correlation = royalty_correlation(result)
    # Royalties (3, 1, 2) against truth (2, 0.5, 1.5) tUSD, by producer index: same ranks.
    x, y = np.array([3.0, 1, 2]), np.array([2.0, 0.5, 1.5])
    expected = float(np.corrcoef(x, y)[0, 1])
    assert correlation.pearson == pytest.approx(expected, abs=1e-12) and correlation.spearman == pytest.approx(1.0)
    share = defective_share(result)
    # Defective: producer 1 (noise 0.5) and producer 2 (copies 0): royalty 3 of 6, truth 2 of 4.
    assert share.royalty == pytest.approx(0.5) and share.truth == pytest.approx(0.5) and share.excess == 0
    overpaid = replace(
        result, producers=tuple(replace(p, true_value=[3.0, 0.5, 0.5][p.index]) for p in result.producers)
    )
    assert defective_share(overpaid).excess == pytest.approx(0.5 - 0.25)
    # Undefined with reasons.
    clean = replace(result, producers=tuple(replace(p, label_noise=0.0, duplicate_of=None) for p in result.producers))
    assert defective_share(clean).royalty == Undefined("no producer has label noise or copied rows")
    nothing = replace(result, producers=tuple(replace(p, royalty_revenue=0) for p in result.producers))
    assert royalty_correlation(nothing).pearson == Undefined("no royalty reached any producer")
    flat = replace(result, producers=tuple(replace(p, royalty_revenue=5) for p in result.producers))
    assert royalty_correlation(flat).spearman == Undefined("every producer earned the same royalty revenue")
    assert defective_share(nothing).excess == Undefined("no royalty reached any producer")
    assert royalty_correlation(synthetic_result()).pearson.reason.startswith("the engine did not split")
    # summarize carries them into the sweep metrics.
    metrics = summarize(result).sweep_metrics()
    assert metrics.truth_distance == truth_distance(result) and metrics.defective_excess == 0
    assert metrics.royalty_value_pearson == pytest.approx(expected)
    assert summarize(result).producer_royalty_revenue == (3 * TUSD, 1 * TUSD, 2 * TUSD)


def test_ground_truth_fields_round_trip_through_json() -> None:
    result = replace(truth_result(), chain=ChainActivity("embedded", 1, 0, 0), wall_time=0.0, onchain_actions=0)
    builders = tuple(replace(b, true_values=(0.1,) * len(b.parents), true_stderr=(0.0,) * len(b.parents))
                     for b in result.builders)  # fmt: skip
    result = replace(result, builders=builders)
    assert type(result).from_json(result.to_json()) == result
    assert list(itertools.chain.from_iterable(b["true_shares"] for b in result.to_json()["builders"])) == [
        0.8, 0.2, 0.5, 0.1, 0.4
    ]  # fmt: skip
