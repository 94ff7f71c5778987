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
    for rule in ("leave_one_out", "knn_shapley", "mc_shapley", "banzhaf", "beta_shapley"):
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


# ---------------------------------------------------------------------------------------------- semivalues


def _random_game(n: int, seed: int, *, null: int | None = None, twins: tuple[int, int] | None = None):
    """A random coalition game on ``n`` players; ``null`` adds nothing anywhere, ``twins`` are interchangeable."""
    rng = np.random.default_rng(seed)
    table: dict[frozenset[int], float] = {}

    def canonical(coalition: frozenset[int]) -> frozenset[int]:
        coalition = coalition - {null} if null is not None else coalition
        if twins is not None and twins[1] in coalition and twins[0] not in coalition:
            coalition = (coalition - {twins[1]}) | {twins[0]}  # a coalition with one twin: the same worth
        return coalition

    def utility(coalition: frozenset[int]) -> float:
        key = canonical(coalition)
        if key not in table:
            table[key] = float(rng.normal())
        return table[key]

    for coalition in map(frozenset, _subsets(n)):  # fill in a fixed order: the game does not depend on calls
        utility(coalition)
    return utility


def _brute_semivalue(n: int, utility, coefficient) -> list[float]:
    """The semivalue's definition over bitmasks: Σ over coalitions S of the others of coefficient(|S|)·marginal."""
    values = []
    for player in range(n):
        total = 0.0
        for mask in range(2**n):
            if mask >> player & 1:
                continue
            coalition = frozenset(i for i in range(n) if mask >> i & 1)
            total += coefficient(len(coalition)) * (utility(coalition | {player}) - utility(coalition))
        values.append(total)
    return values


@pytest.mark.parametrize("n", range(1, 7))
def test_banzhaf_and_beta_shapley_equal_their_definitions(n: int) -> None:
    from scipy import integrate, stats

    utility = _random_game(n, seed=n)
    banzhaf = datavalue.exact_semivalue(n, utility, datavalue.banzhaf_weight)
    np.testing.assert_allclose(banzhaf, _brute_semivalue(n, utility, lambda s: 0.5 ** (n - 1)), rtol=0, atol=1e-12)
    for alpha, beta in [(1.0, 1.0), (16.0, 1.0), (4.0, 2.0), (2.0, 3.0)]:

        def coefficient(s: int, a: float = alpha, b: float = beta) -> float:
            # Kwon & Zou 2022: ∫ t^s (1 - t)^(n-1-s) · Beta(t; b, a) dt, integrated numerically.
            return integrate.quad(lambda t: t**s * (1 - t) ** (n - 1 - s) * stats.beta.pdf(t, b, a), 0, 1,
                                  epsabs=1e-15, epsrel=1e-13, limit=200)[0]  # fmt: skip

        exact = datavalue.exact_semivalue(n, utility, datavalue.beta_weight(alpha, beta))
        np.testing.assert_allclose(exact, _brute_semivalue(n, utility, coefficient), rtol=0, atol=1e-10)
    # Beta(1, 1) is Shapley.
    np.testing.assert_allclose(
        datavalue.exact_semivalue(n, utility, datavalue.beta_weight(1.0, 1.0)), exact_shapley(n, utility), atol=1e-12
    )


def test_known_banzhaf_values_and_which_semivalues_are_efficient() -> None:
    def gloves(coalition: frozenset[int]) -> float:
        return float(0 in coalition and bool(coalition & {1, 2}))

    np.testing.assert_allclose(datavalue.exact_semivalue(3, gloves, datavalue.banzhaf_weight), [3 / 4, 1 / 4, 1 / 4])
    utility = _random_game(5, seed=11)
    spread = utility(frozenset(range(5))) - utility(frozenset())
    assert math.isclose(exact_shapley(5, utility).sum(), spread, abs_tol=1e-12)  # efficiency
    banzhaf = datavalue.exact_semivalue(5, utility, datavalue.banzhaf_weight).sum()
    beta = datavalue.exact_semivalue(5, utility, datavalue.beta_weight(16, 1)).sum()
    assert not math.isclose(banzhaf, spread, abs_tol=1e-6) and not math.isclose(beta, spread, abs_tol=1e-6)


@pytest.mark.parametrize("weight", ["shapley", "banzhaf", "beta"])
def test_semivalues_are_symmetric_and_give_a_null_player_nothing(weight: str) -> None:
    chosen = {"shapley": datavalue.shapley_weight, "banzhaf": datavalue.banzhaf_weight,
              "beta": datavalue.beta_weight(16, 1)}[weight]  # fmt: skip
    utility = _random_game(6, seed=5, null=2, twins=(0, 4))
    values = datavalue.exact_semivalue(6, utility, chosen)
    assert abs(values[2]) < 1e-12 and math.isclose(values[0], values[4], abs_tol=1e-12)
    assert abs(values[0] - values[1]) > 1e-6  # the game is not trivial


def test_sampled_estimates_error_bars_cover_the_exact_values() -> None:
    # Seeded: each estimate is within 4 of its own standard errors of the exact value (a normal tail of 6e-5
    # per player), and the errors are small enough to mean something.
    n = 6
    utility = _random_game(n, seed=3)
    rng = np.random.default_rng(0)
    cases = [
        (exact_shapley(n, utility),
         datavalue.tmc_shapley_estimate(n, utility, permutations=2000, truncation=0.0, rng=rng)),
        (datavalue.exact_semivalue(n, utility, datavalue.banzhaf_weight),
         datavalue.msr_banzhaf_estimate(n, utility, samples=4000, rng=rng)),
        (datavalue.exact_semivalue(n, utility, datavalue.beta_weight(16, 1)),
         datavalue.sampled_semivalue_estimate(n, utility, datavalue.beta_weight(16, 1), samples=2000, rng=rng)),
    ]  # fmt: skip
    for exact, estimate in cases:
        assert not estimate.exact and estimate.samples > 0
        assert np.all(estimate.stderr > 0) and np.all(estimate.stderr < 0.1)
        assert np.all(np.abs(estimate.values - exact) <= 4 * estimate.stderr), (exact, estimate)


def test_mc_shapley_is_exact_for_few_parents_and_reports_its_error_otherwise(digits_split) -> None:
    X_pool, y_pool, X_val, y_val = digits_split
    few = RoyaltyInputs(make_shards(X_pool, y_pool, [20, 30, 40], seed=1), X_val, y_val, model="knn", k=3)
    estimate = datavalue.mc_shapley_estimate(few)
    assert estimate.exact and estimate.samples == 0 and not estimate.stderr.any()
    np.testing.assert_allclose(estimate.values, exact_shapley(3, coalition_utility(few)), atol=1e-15)
    assert datavalue.exact_is_affordable(8, 50) and not datavalue.exact_is_affordable(9, 50)
    many = RoyaltyInputs(make_shards(X_pool, y_pool, [10] * 9, seed=1), X_val, y_val, model="knn", k=3,
                         permutations=20)  # fmt: skip
    sampled = datavalue.mc_shapley_estimate(many)
    assert not sampled.exact and sampled.samples == 20 and np.all(sampled.stderr > 0)
    for rule in ("banzhaf", "beta_shapley"):
        assert not datavalue.ESTIMATES[rule](many).exact and datavalue.ESTIMATES[rule](few).exact


# ---------------------------------------------------------------------------------------------- provenance


@pytest.fixture(scope="module")
def copied_parents(digits_split):
    """Originals 0 and 1, a full copy of 1 (parent 2) and a parent whose first 30 of 50 rows copy 0 (parent 3)."""
    X_pool, y_pool, X_val, y_val = digits_split
    X_pool = X_pool + np.random.default_rng(0).normal(scale=1e-3, size=X_pool.shape)  # no distance ties
    original_a, original_b, own = make_shards(X_pool, y_pool, [60, 60, 20], seed=3)
    partial = Shard(np.concatenate([original_a.X[:30], own.X]), np.concatenate([original_a.y[:30], own.y]))
    return [original_a, original_b, Shard(original_b.X.copy(), original_b.y.copy()), partial], own, X_val, y_val


@pytest.mark.parametrize("rule", ["equal", "proportional", "knn_shapley", "mc_shapley", "banzhaf", "leave_one_out"])
def test_provenance_credits_copied_rows_to_the_first_publisher(copied_parents, rule: str) -> None:
    parents, own, X_val, y_val = copied_parents
    ids = [10, 11, 12, 13]
    plain = royalty_weights(rule, RoyaltyInputs(parents, X_val, y_val, k=3, parent_ids=ids))
    if rule in ("equal", "knn_shapley", "mc_shapley", "banzhaf"):  # symmetric in the two identical parents
        assert math.isclose(plain[2], plain[1], abs_tol=1e-12) and plain[2] > 0
    credited = royalty_weights(rule, RoyaltyInputs(parents, X_val, y_val, k=3, parent_ids=ids, provenance=True))
    assert credited[2] == 0.0 and credited[1] > 0  # the full copy earns nothing
    # The partial copier is paid for its own 20 rows only: as if it had published them alone.
    alone = royalty_weights(rule, RoyaltyInputs([*parents[:2], own], X_val, y_val, k=3, parent_ids=[10, 11, 13]))
    np.testing.assert_allclose([credited[0], credited[1], credited[3]], alone, atol=1e-12)
    # Published first means the lowest asset id: the copy listed before the original takes the credit.
    swapped = royalty_weights(rule, RoyaltyInputs(parents, X_val, y_val, k=3, parent_ids=[10, 12, 11, 13],
                                                  provenance=True))  # fmt: skip
    assert swapped[1] == 0.0 and math.isclose(swapped[2], credited[1], abs_tol=1e-12)


def test_provenance_needs_distinct_parent_ids(copied_parents) -> None:
    parents, _own, X_val, y_val = copied_parents
    with pytest.raises(ValueError, match="provenance needs parent_ids"):
        RoyaltyInputs(parents, X_val, y_val, provenance=True)
    with pytest.raises(ValueError, match="one distinct asset id per parent"):
        RoyaltyInputs(parents, X_val, y_val, parent_ids=[1, 1, 2, 3])
    assert len(datavalue.row_digests(parents[0])) == 60
    assert datavalue.row_digests(parents[1]) == datavalue.row_digests(parents[2])
