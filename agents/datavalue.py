"""Royalty rules: how a builder splits its model's upstream royalty among the datasets it bought.

A rule maps ``RoyaltyInputs`` (the parent shards, the builder's validation data, the model kind) to
one non-negative weight per parent, summing to 1 (all zeros for ``none``). ``to_bps`` turns weights
into integer basis points for the on-chain parent shares. Rules are registered in ``RULES``.

Value-based rules:

- ``leave_one_out``: the validation-accuracy drop when one parent's rows are left out.
- ``knn_shapley``: exact Shapley values of every training row for the unweighted k-NN utility
  (Jia et al. 2019, Theorem 1), summed per parent.
- ``mc_shapley``: truncated Monte Carlo Shapley (Ghorbani & Zou 2019) with the parents as players.

In every coalition game here the empty coalition is worth the accuracy of always predicting the
majority class of the validation set (``baseline_accuracy``), not ``1 / n_classes``: that is what a
model trained on nothing can achieve.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from agents.learning import MODEL_KINDS, ModelKind, Shard, accuracy, train_model

Utility = Callable[[frozenset[int]], float]

#: ``exact_shapley`` enumerates 2**n coalitions; refuse sizes where that stops being a test helper.
MAX_EXACT_PLAYERS = 16

#: Entries of one block of the test-by-train distance matrix in ``knn_shapley_values`` (bounds memory).
DISTANCE_BLOCK_ENTRIES = 4_000_000


@dataclass
class RoyaltyInputs:
    """What a builder knows when it sets its parents' royalty shares.

    ``parents``: the data bought, one shard per parent dataset. ``X_val``/``y_val``: validation data
    the builder holds. ``model``/``k``/``seed``: how the builder trains. ``permutations`` and
    ``truncation`` tune ``mc_shapley``.
    """

    parents: list[Shard]
    X_val: np.ndarray
    y_val: np.ndarray
    model: ModelKind = "knn"
    k: int = 5
    seed: int = 0
    permutations: int = 50
    truncation: float = 0.01

    def __post_init__(self) -> None:
        self.X_val = np.asarray(self.X_val, dtype=np.float64)
        self.y_val = np.asarray(self.y_val, dtype=np.int64)
        if not self.parents:
            raise ValueError("royalty inputs need at least one parent shard")
        if any(parent.rows == 0 for parent in self.parents):
            raise ValueError("every parent shard must have at least one row")
        if self.X_val.ndim != 2 or len(self.X_val) == 0 or len(self.X_val) != len(self.y_val):
            raise ValueError("validation data must be a non-empty 2-D X_val with one label per row in y_val")
        widths = {parent.features for parent in self.parents} | {self.X_val.shape[1]}
        if len(widths) != 1:
            raise ValueError(f"parents and validation data disagree on the number of features: {sorted(widths)}")
        if self.model not in MODEL_KINDS:
            raise ValueError(f"unknown model kind {self.model!r}; choose one of: {', '.join(MODEL_KINDS)}")
        if self.k < 1 or self.permutations < 1 or self.truncation < 0:
            raise ValueError("k and permutations must be at least 1 and truncation must not be negative")


# --------------------------------------------------------------------------------------------------
# Building blocks


def baseline_accuracy(y_val: np.ndarray) -> float:
    """Accuracy of always predicting the validation set's most frequent label (the empty coalition's worth)."""
    _, counts = np.unique(np.asarray(y_val), return_counts=True)
    return float(counts.max() / counts.sum())


def coalition_accuracy(
    parents: Sequence[Shard], coalition: frozenset[int], X_val: np.ndarray, y_val: np.ndarray,
    model: ModelKind, *, k: int = 5, seed: int = 0,
) -> float:  # fmt: skip
    """Validation accuracy of a model trained on the union of the coalition's parents (in index order)."""
    if not coalition:
        return baseline_accuracy(y_val)
    members = sorted(coalition)
    X = np.concatenate([parents[index].X for index in members])
    y = np.concatenate([parents[index].y for index in members])
    return accuracy(train_model(model, X, y, seed=seed, k=k), X_val, y_val)


def coalition_utility(inputs: RoyaltyInputs) -> Utility:
    """The parents' coalition game for ``inputs``: coalition → validation accuracy, each coalition trained once."""
    cache: dict[frozenset[int], float] = {}

    def utility(coalition: frozenset[int]) -> float:
        if coalition not in cache:
            cache[coalition] = coalition_accuracy(
                inputs.parents, coalition, inputs.X_val, inputs.y_val, inputs.model, k=inputs.k, seed=inputs.seed
            )
        return cache[coalition]

    return utility


def loo_contributions(
    parents: Sequence[Shard], X_test: np.ndarray, y_test: np.ndarray, model: ModelKind, seed: int, *, k: int = 5
) -> list[float]:
    """Raw leave-one-out values: accuracy with all parents minus accuracy without parent ``i`` (may be negative).

    Without the only parent, the model falls back to the majority-class baseline.
    """
    everyone = frozenset(range(len(parents)))
    full = coalition_accuracy(parents, everyone, X_test, y_test, model, k=k, seed=seed)
    return [
        full - coalition_accuracy(parents, everyone - {index}, X_test, y_test, model, k=k, seed=seed)
        for index in range(len(parents))
    ]


def exact_shapley(n_players: int, utility: Utility) -> np.ndarray:
    """Shapley values by enumerating all 2**n coalitions (each evaluated once); fine for n ≤ 10."""
    if not 0 <= n_players <= MAX_EXACT_PLAYERS:
        raise ValueError(f"exact_shapley handles 0..{MAX_EXACT_PLAYERS} players, got {n_players}")
    worth = {
        coalition: utility(coalition)
        for size in range(n_players + 1)
        for coalition in map(frozenset, itertools.combinations(range(n_players), size))
    }
    values = np.zeros(n_players)
    for coalition, value in worth.items():
        size = len(coalition)
        if size == n_players:
            continue  # nobody left to join
        weight = math.factorial(size) * math.factorial(n_players - size - 1) / math.factorial(n_players)
        for player in range(n_players):
            if player not in coalition:
                values[player] += weight * (worth[coalition | {player}] - value)
    return values


def tmc_shapley(
    n_players: int, utility: Utility, *, permutations: int, truncation: float, rng: np.random.Generator
) -> np.ndarray:
    """Truncated Monte Carlo Shapley estimates (Ghorbani & Zou 2019), the mean marginal over random orders.

    Walking one permutation, once the current prefix is worth strictly less than ``truncation`` away
    from the full coalition, the remaining players get a zero marginal without evaluating anything
    (``truncation=0`` never truncates: the estimate is then unbiased).
    """
    if n_players < 1 or permutations < 1 or truncation < 0:
        raise ValueError("need at least one player and one permutation, and a non-negative truncation")
    full = utility(frozenset(range(n_players)))
    empty = utility(frozenset())
    totals = np.zeros(n_players)
    for _ in range(permutations):
        prefix: frozenset[int] = frozenset()
        previous = empty
        for player in rng.permutation(n_players).tolist():
            if abs(full - previous) < truncation:
                break
            prefix = prefix | {player}
            current = utility(prefix)
            totals[player] += current - previous
            previous = current
    return totals / permutations


def knn_shapley_values(
    X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray, y_test: np.ndarray, k: int
) -> np.ndarray:
    """Exact Shapley value of every training point for the unweighted k-NN utility, averaged over test points.

    For one test point the utility of a training set S is ``(1/K) * #{the min(K, |S|) nearest points of S
    with the test label}`` (Euclidean distance; equal distances are ordered by training index). Jia et
    al. 2019, Theorem 1: with training points sorted nearest (a_1) to farthest (a_N) and m_i = 1 when
    a_i has the test label (else 0), ``s(a_N) = m_N * min(K, N) / (N * K)`` and
    ``s(a_i) = s(a_{i+1}) + (m_i - m_{i+1}) / K * min(K, i) / i``. The paper's base case
    ``s(a_N) = m_N / N`` assumes N >= K; the factor min(K, N) / K keeps the values exact for N < K.
    For each test point the values sum to U(all) - U(empty). Vectorised over test points, in
    memory-bounded blocks.
    """
    X_train, X_test = np.asarray(X_train, dtype=np.float64), np.asarray(X_test, dtype=np.float64)
    y_train, y_test = np.asarray(y_train), np.asarray(y_test)
    n_train, n_test = len(y_train), len(y_test)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    if n_train == 0 or n_test == 0:
        raise ValueError("knn_shapley_values needs at least one training point and one test point")
    if X_train.shape[1] != X_test.shape[1]:
        raise ValueError(f"training points have {X_train.shape[1]} features but test points {X_test.shape[1]}")
    ranks = np.arange(1, n_train, dtype=np.float64)  # i = 1 .. N-1, the positions that have a successor
    step_weight = np.minimum(k, ranks) / ranks / k
    last_weight = min(k, n_train) / (n_train * k)
    train_sq = np.einsum("ij,ij->i", X_train, X_train)
    totals = np.zeros(n_train)
    block = max(1, DISTANCE_BLOCK_ENTRIES // n_train)
    for start in range(0, n_test, block):
        points, labels = X_test[start : start + block], y_test[start : start + block]
        distances = train_sq[None, :] - 2.0 * points @ X_train.T  # + |test|², constant per row: order unchanged
        order = np.argsort(distances, axis=1, kind="stable")
        matches = (y_train[order] == labels[:, None]).astype(np.float64)
        steps = (matches[:, :-1] - matches[:, 1:]) * step_weight
        sorted_values = np.empty_like(matches)
        sorted_values[:, -1] = matches[:, -1] * last_weight
        # s_i = s_N + Σ_{j=i..N-1} step_j: a cumulative sum from the far end.
        sorted_values[:, :-1] = sorted_values[:, -1:] + np.cumsum(steps[:, ::-1], axis=1)[:, ::-1]
        totals += np.bincount(order.ravel(), weights=sorted_values.ravel(), minlength=n_train)
    return totals / n_test


def normalise(values: Sequence[float]) -> list[float]:
    """Negatives clipped to 0, then scaled to sum to 1; all zero (after clipping) → equal weights."""
    clipped = np.clip(np.asarray(values, dtype=np.float64), 0.0, None)
    total = clipped.sum()
    if total <= 0:
        return [1.0 / len(clipped)] * len(clipped)
    return (clipped / total).tolist()


def to_bps(weights: Sequence[float], total_bps: int) -> list[int]:
    """Integer shares summing exactly to ``total_bps`` by largest remainder (all zeros if every weight is 0).

    Computed in exact rational arithmetic; equal remainders go to the lower index first.
    """
    if total_bps < 0:
        raise ValueError(f"total_bps must not be negative, got {total_bps}")
    if any(not math.isfinite(weight) or weight < 0 for weight in weights):
        raise ValueError(f"weights must be finite and non-negative, got {list(weights)}")
    exact = [Fraction(weight) for weight in weights]
    total = sum(exact, Fraction(0))
    if total == 0:
        return [0] * len(exact)
    quotas = [weight * total_bps / total for weight in exact]
    shares = [math.floor(quota) for quota in quotas]
    leftover = total_bps - sum(shares)
    by_remainder = sorted(range(len(quotas)), key=lambda index: (-(quotas[index] - shares[index]), index))
    for index in by_remainder[:leftover]:
        shares[index] += 1
    return shares


# --------------------------------------------------------------------------------------------------
# Rules


def no_royalty(inputs: RoyaltyInputs) -> list[float]:
    """``none``: parents get nothing (all zeros)."""
    return [0.0] * len(inputs.parents)


def equal_shares(inputs: RoyaltyInputs) -> list[float]:
    """``equal``: every parent gets the same weight."""
    return [1.0 / len(inputs.parents)] * len(inputs.parents)


def proportional_shares(inputs: RoyaltyInputs) -> list[float]:
    """``proportional``: weight proportional to the rows bought from each parent."""
    return normalise([parent.rows for parent in inputs.parents])


def leave_one_out_shares(inputs: RoyaltyInputs) -> list[float]:
    """``leave_one_out``: validation-accuracy drop when a parent is left out, negatives clipped to 0.

    If no parent's removal lowers accuracy (all drops ≤ 0), falls back to equal weights.
    """
    drops = loo_contributions(inputs.parents, inputs.X_val, inputs.y_val, inputs.model, inputs.seed, k=inputs.k)
    return normalise(drops)


def knn_shapley_shares(inputs: RoyaltyInputs) -> list[float]:
    """``knn_shapley``: sum of each parent's rows' exact k-NN Shapley values (``inputs.k``), clipped, normalised.

    Always values data with the k-NN utility whatever ``inputs.model`` is (that is what makes it exact
    and fast). All values ≤ 0 → equal weights.
    """
    owners = np.concatenate([np.full(parent.rows, index) for index, parent in enumerate(inputs.parents)])
    X = np.concatenate([parent.X for parent in inputs.parents])
    y = np.concatenate([parent.y for parent in inputs.parents])
    point_values = knn_shapley_values(X, y, inputs.X_val, inputs.y_val, inputs.k)
    return normalise(np.bincount(owners, weights=point_values, minlength=len(inputs.parents)))


def mc_shapley_shares(inputs: RoyaltyInputs) -> list[float]:
    """``mc_shapley``: truncated Monte Carlo Shapley with the parents as players, clipped, normalised.

    Utility: validation accuracy of ``train_model(inputs.model, union of the coalition's rows)``; the
    empty coalition is worth the majority-class baseline. Seeded by ``inputs.seed``; each coalition is
    trained at most once. All values ≤ 0 → equal weights.
    """
    values = tmc_shapley(
        len(inputs.parents), coalition_utility(inputs), permutations=inputs.permutations,
        truncation=inputs.truncation, rng=np.random.default_rng(inputs.seed),
    )  # fmt: skip
    return normalise(values)


RoyaltyRule = Callable[[RoyaltyInputs], list[float]]

#: Every royalty rule by the name a builder or a simulation asks for.
RULES: dict[str, RoyaltyRule] = {
    "none": no_royalty,
    "equal": equal_shares,
    "proportional": proportional_shares,
    "leave_one_out": leave_one_out_shares,
    "knn_shapley": knn_shapley_shares,
    "mc_shapley": mc_shapley_shares,
}


def royalty_weights(rule: str, inputs: RoyaltyInputs) -> list[float]:
    """The weights rule ``rule`` gives the parents in ``inputs`` (``ValueError`` for an unknown rule)."""
    if rule not in RULES:
        raise ValueError(f"unknown royalty rule {rule!r}; choose one of: {', '.join(RULES)}")
    return RULES[rule](inputs)
