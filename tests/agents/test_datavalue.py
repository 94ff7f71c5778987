"""Royalty rules: exact k-NN Shapley against brute force, Monte Carlo Shapley against exact, rule contracts,
noisy data earning less, and basis-point apportionment."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest

import agents.datavalue as datavalue
from agents.datavalue import (
    RULES,
    RoyaltyInputs,
    baseline_accuracy,
    coalition_utility,
    exact_shapley,
    knn_shapley_values,
    loo_contributions,
    royalty_weights,
    tmc_shapley,
    to_bps,
)
from agents.learning import Shard, load_source, make_shards, split_holdout, with_label_noise


def jia_utility(X_train, y_train, X_test, y_test, k: int):
    """Jia et al.'s k-NN utility averaged over test points, written plainly for brute force.

    U(S) = (1/K) · #{the min(K, |S|) nearest points of S that carry the test point's label}.
    """

    def utility(coalition: frozenset[int]) -> float:
        members = sorted(coalition)
        total = 0.0
        for point, label in zip(X_test, y_test, strict=True):
            nearest = sorted(members, key=lambda index: float(np.linalg.norm(X_train[index] - point)))[:k]
            total += sum(1 for index in nearest if y_train[index] == label) / k
        return total / len(y_test)

    return utility


@pytest.fixture(scope="module")
def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits split into a pool to shard and a 300-row validation set."""
    X, y = load_source("digits")
    return split_holdout(X, y, 300 / len(y), seed=0)


# ---------------------------------------------------------------------------------------------- k-NN Shapley


@pytest.mark.parametrize("k", [1, 2, 3])
@pytest.mark.parametrize("n_train", range(1, 9))  # includes N < K
def test_knn_shapley_equals_brute_force_shapley_of_the_jia_utility(n_train: int, k: int) -> None:
    rng = np.random.default_rng(10 * n_train + k)
    X_train, X_test = rng.normal(size=(n_train, 2)), rng.normal(size=(3, 2))  # continuous: no distance ties
    y_train, y_test = rng.integers(0, 3, size=n_train), rng.integers(0, 3, size=3)
    fast = knn_shapley_values(X_train, y_train, X_test, y_test, k)
    brute = exact_shapley(n_train, jia_utility(X_train, y_train, X_test, y_test, k))
    np.testing.assert_allclose(fast, brute, rtol=0, atol=1e-12)


def test_knn_shapley_is_efficient_on_a_large_set() -> None:
    rng = np.random.default_rng(7)
    X_train, y_train = rng.normal(size=(200, 5)), rng.integers(0, 3, size=200)
    X_test, y_test = rng.normal(size=(40, 5)), rng.integers(0, 3, size=40)
    k = 5
    values = knn_shapley_values(X_train, y_train, X_test, y_test, k)
    # U(all) = mean over test points of (label matches among the K nearest) / K; U(∅) = 0.
    distances = np.linalg.norm(X_test[:, None, :] - X_train[None, :, :], axis=2)
    nearest = np.argsort(distances, axis=1)[:, :k]
    u_all = float(np.mean((y_train[nearest] == y_test[:, None]).sum(axis=1) / k))
    assert math.isclose(values.sum(), u_all, abs_tol=1e-12)


def test_knn_shapley_blocks_give_the_same_values(monkeypatch) -> None:
    rng = np.random.default_rng(3)
    X_train, y_train = rng.normal(size=(50, 4)), rng.integers(0, 2, size=50)
    X_test, y_test = rng.normal(size=(37, 4)), rng.integers(0, 2, size=37)
    whole = knn_shapley_values(X_train, y_train, X_test, y_test, 3)
    monkeypatch.setattr(datavalue, "DISTANCE_BLOCK_ENTRIES", 50 * 4)  # 4 test points per block
    np.testing.assert_allclose(knn_shapley_values(X_train, y_train, X_test, y_test, 3), whole, atol=1e-12)


def test_knn_shapley_is_fast() -> None:
    rng = np.random.default_rng(0)
    X_train, y_train = rng.normal(size=(1000, 64)), rng.integers(0, 10, size=1000)
    X_test, y_test = rng.normal(size=(300, 64)), rng.integers(0, 10, size=300)
    started = time.perf_counter()
    knn_shapley_values(X_train, y_train, X_test, y_test, 5)
    assert time.perf_counter() - started < 1.0  # ~0.04 s here


# ---------------------------------------------------------------------------------------------- Monte Carlo


def test_exact_shapley_of_a_known_game() -> None:
    # Glove game: player 0 holds a left glove, players 1 and 2 right gloves; a pair is worth 1.
    def gloves(coalition: frozenset[int]) -> float:
        return float(0 in coalition and bool(coalition & {1, 2}))

    np.testing.assert_allclose(exact_shapley(3, gloves), [2 / 3, 1 / 6, 1 / 6], atol=1e-15)


def test_tmc_shapley_converges_to_exact_shapley_on_real_parents(digits_split) -> None:
    X_pool, y_pool, X_val, y_val = digits_split
    parents = make_shards(X_pool, y_pool, [15, 30, 45, 60], seed=2)
    parents[3] = with_label_noise(parents[3], 0.5, 10, rng=2)
    inputs = RoyaltyInputs(parents, X_val, y_val, model="knn", k=3)
    utility = coalition_utility(inputs)
    exact = exact_shapley(4, utility)
    permutations = 4000
    estimate = tmc_shapley(4, utility, permutations=permutations, truncation=0.0, rng=np.random.default_rng(0))
    # Without truncation each permutation gives an unbiased sample of every player's Shapley value, and a
    # sample lies within the game's marginal range w. Hoeffding with a union bound over 4 players:
    # P(any |estimate - exact| > w·sqrt(ln(8/δ) / 2T)) ≤ δ; δ = 1e-6 makes a failure a real bug, not luck.
    marginals = [utility(s | {p}) - utility(s) for p in range(4) for s in map(frozenset, _subsets(4)) if p not in s]
    width = max(marginals) - min(marginals)
    tolerance = width * math.sqrt(math.log(8 / 1e-6) / (2 * permutations))
    assert tolerance < 0.03  # the bound is tight enough to mean something
    np.testing.assert_allclose(estimate, exact, atol=tolerance, rtol=0)
    # The rule built on it gives the normalised exact values. Clipping is 1-Lipschitz, and with b the exact
    # sum: |a/b - a'/b'| ≤ |a - a'| / b + (a'/b') · |b - b'| / b ≤ (tol + 4·tol) / b.
    inputs.permutations, inputs.truncation = permutations, 0.0
    weights = np.array(RULES["mc_shapley"](inputs))
    clipped = np.clip(exact, 0, None)
    np.testing.assert_allclose(weights, clipped / clipped.sum(), atol=5 * tolerance / clipped.sum())


def _subsets(n: int):
    """Every subset of range(n), as tuples."""
    return itertools.chain.from_iterable(itertools.combinations(range(n), size) for size in range(n + 1))


def test_tmc_truncation_skips_players_once_close_to_the_full_value() -> None:
    calls: list[frozenset[int]] = []

    def additive(coalition: frozenset[int]) -> float:
        calls.append(coalition)
        return 0.5 * (0 in coalition) + 0.01 * len(coalition - {0})

    rng = np.random.default_rng(0)
    # Truncation wider than U(all) - U(∅): every permutation stops at once, every estimate is 0.
    assert tmc_shapley(4, additive, permutations=20, truncation=1.0, rng=rng).tolist() == [0.0] * 4
    assert len(calls) == 2  # only U(all) and U(∅)
    # Truncation 0.05: a walk stops once player 0 is in and at most 0.05 of value remains.
    calls.clear()
    estimate = tmc_shapley(4, additive, permutations=200, truncation=0.05, rng=rng)
    assert len(calls) < 2 + 200 * 4
    assert abs(estimate[0] - 0.5) < 0.02 and (estimate[1:] <= 0.01 + 1e-12).all()


# ---------------------------------------------------------------------------------------------- rules


@pytest.fixture(scope="module")
def small_inputs(digits_split) -> RoyaltyInputs:
    """Three digits parents of unequal size, one noisy, valued with k-NN."""
    X_pool, y_pool, X_val, y_val = digits_split
    parents = make_shards(X_pool, y_pool, [40, 80, 120], seed=1)
    parents[1] = with_label_noise(parents[1], 0.3, 10, rng=1)
    return RoyaltyInputs(parents, X_val, y_val, model="knn", k=3, seed=4, permutations=30)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_every_rule_gives_non_negative_weights_summing_to_one(small_inputs, rule: str) -> None:
    weights = royalty_weights(rule, small_inputs)
    assert len(weights) == 3 and all(isinstance(w, float) and w >= 0 for w in weights)
    if rule == "none":
        assert weights == [0.0, 0.0, 0.0]
    else:
        assert math.isclose(sum(weights), 1.0, abs_tol=1e-12)
    assert royalty_weights(rule, small_inputs) == weights  # deterministic for a seed


def test_simple_rules(small_inputs) -> None:
    assert royalty_weights("equal", small_inputs) == [1 / 3] * 3
    np.testing.assert_allclose(royalty_weights("proportional", small_inputs), [40 / 240, 80 / 240, 120 / 240])
    with pytest.raises(ValueError, match="knn_shapley"):
        royalty_weights("shapley", small_inputs)


def test_mc_shapley_depends_on_the_seed_only(small_inputs) -> None:
    def with_seed(seed: int) -> list[float]:
        inputs = RoyaltyInputs(**{**vars(small_inputs), "seed": seed, "permutations": 2, "truncation": 0.0})
        return royalty_weights("mc_shapley", inputs)

    assert with_seed(11) == with_seed(11)
    assert len({tuple(with_seed(seed)) for seed in range(6)}) > 1  # 2 of 6 orders: estimates vary by seed


def test_leave_one_out_raw_values_and_fallback() -> None:
    rng = np.random.default_rng(0)
    X_val = rng.normal(size=(20, 2))
    y_val = np.zeros(20, dtype=np.int64)
    same = Shard(rng.normal(size=(5, 2)), np.zeros(5, dtype=np.int64))
    parents = [same, same]  # perfect either way: no parent's removal changes anything
    assert loo_contributions(parents, X_val, y_val, "knn", seed=0) == [0.0, 0.0]
    assert royalty_weights("leave_one_out", RoyaltyInputs(parents, X_val, y_val)) == [0.5, 0.5]
    # A lone parent is measured against the majority-class baseline.
    y_mixed = np.array([0] * 15 + [1] * 5)
    assert baseline_accuracy(y_mixed) == 0.75
    assert loo_contributions([same], X_val, y_mixed, "knn", seed=0) == [0.0]
    wrong = Shard(same.X, np.ones(5, dtype=np.int64))
    assert loo_contributions([wrong], X_val, y_mixed, "knn", seed=0) == [0.25 - 0.75]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_value_rules_pay_a_noisy_parent_less_than_each_clean_one(digits_split, seed: int) -> None:
    X_pool, y_pool, X_val, y_val = digits_split
    parents = make_shards(X_pool, y_pool, [100, 100, 100], seed=seed)
    noisy = seed % 3
    parents[noisy] = with_label_noise(parents[noisy], 0.4, 10, rng=seed)
    inputs = RoyaltyInputs(parents, X_val, y_val, model="logreg", k=5, seed=seed)
    for rule in ("leave_one_out", "knn_shapley", "mc_shapley"):
        weights = royalty_weights(rule, inputs)
        clean = [weight for index, weight in enumerate(weights) if index != noisy]
        assert weights[noisy] < min(clean), (rule, weights)


def test_royalty_inputs_are_checked(digits_split) -> None:
    X_pool, y_pool, X_val, y_val = digits_split
    parent = Shard(X_pool[:10], y_pool[:10])
    with pytest.raises(ValueError, match="at least one parent"):
        RoyaltyInputs([], X_val, y_val)
    with pytest.raises(ValueError, match="number of features"):
        RoyaltyInputs([parent], X_val[:, :5], y_val)
    with pytest.raises(ValueError, match="unknown model"):
        RoyaltyInputs([parent], X_val, y_val, model="tree")  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------- basis points


def test_to_bps_sums_exactly_for_random_weights() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        weights = rng.random(int(rng.integers(1, 12))) * (rng.random() < 0.9)
        weights[rng.random(len(weights)) < 0.3] = 0.0
        total = int(rng.integers(0, 10_001))
        shares = to_bps(weights.tolist(), total)
        if weights.sum() == 0:
            assert shares == [0] * len(weights)
            continue
        assert sum(shares) == total and min(shares) >= 0
        quotas = weights / weights.sum() * total
        assert np.all(np.abs(np.array(shares) - quotas) < 1)  # within one unit of the exact quota
        assert all(share == 0 for share, weight in zip(shares, weights, strict=True) if weight == 0)


def test_to_bps_zeros_ties_and_remainders() -> None:
    assert to_bps([0.0, 0.0], 10_000) == [0, 0]
    assert to_bps([], 10_000) == []
    assert to_bps([0.0, 1.0, 0.0], 10_000) == [0, 10_000, 0]
    assert to_bps([1 / 3, 1 / 3, 1 / 3], 10_000) == [3334, 3333, 3333]  # equal remainders: lower index first
    assert to_bps([1.0, 1.0, 1.0], 2) == [1, 1, 0]
    assert to_bps([0.5, 0.25, 0.25], 3) == [1, 1, 1]  # remainders .5, .75, .75 → the two .75s get the spare units
    assert to_bps([0.2, 0.8], 0) == [0, 0]
    with pytest.raises(ValueError, match="non-negative"):
        to_bps([0.5, -0.1], 100)
    with pytest.raises(ValueError, match="non-negative"):
        to_bps([float("nan")], 100)
