"""Royalty rules: how a builder splits its model's upstream royalty among the datasets it bought.

A rule maps ``RoyaltyInputs`` (the parent shards, the builder's validation data, the model kind) to
one non-negative weight per parent, summing to 1 (all zeros for ``none``). ``to_bps`` turns weights
into integer basis points for the on-chain parent shares. Rules are registered in ``RULES``.

Value-based rules:

- ``leave_one_out``: the validation-accuracy drop when one parent's rows are left out.
- ``knn_shapley``: exact Shapley values of every training row for the unweighted k-NN utility
  (Jia et al. 2019, Theorem 1), summed per parent.
- ``mc_shapley``: Shapley values with the parents as players: exact (all 2**n coalitions) when that costs
  no more trainings than sampling would (``2**n <= permutations * n``: n <= 8 at the default 50
  permutations), else truncated Monte Carlo (Ghorbani & Zou 2019) with its own standard error
  (``mc_shapley_estimate``).
- ``banzhaf``: Data Banzhaf (Wang & Jia 2023, AISTATS): every coalition of the other parents weighs
  ``1 / 2**(n-1)``; exact under the same threshold, else the maximum-sample-reuse estimator (their Alg. 1).
- ``beta_shapley``: Beta(alpha, beta) Shapley (Kwon & Zou 2022, AISTATS), the semivalue whose weight for a
  coalition of s other parents is ``B(s + beta, n - 1 - s + alpha) / B(alpha, beta)`` (B the Beta function;
  Beta(1, 1) is Shapley; the default Beta(16, 1) weighs small coalitions most); exact under the same
  threshold, else sampled by coalition size.

Provenance (``RoyaltyInputs.provenance``): a row (matched by content, the bytes of its features and label)
that appears in several parents is credited to the parent published first (lowest asset id,
``RoyaltyInputs.parent_ids``) and removed from the others before any rule runs; a parent left without rows
gets weight 0. So a copier earns nothing for the rows it copied from another parent of the same model.

In every coalition game here the empty coalition is worth the accuracy of always predicting the
majority class of the validation set (``baseline_accuracy``), not ``1 / n_classes``: that is what a
model trained on nothing can achieve.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction

import numpy as np
from scipy.special import betaln
from threadpoolctl import threadpool_limits

from agents.learning import MODEL_KINDS, ModelKind, Shard, accuracy, train_model

Utility = Callable[[frozenset[int]], float]

#: ``exact_shapley`` enumerates 2**n coalitions; refuse sizes where that stops being a test helper.
MAX_EXACT_PLAYERS = 16

#: Every coalition-game rule computes exactly when ``2**n <= permutations * n`` (enumerating costs no more
#: trainings than sampling would), and never above this many parents.
MAX_RULE_EXACT_PLAYERS = 12

#: Default Beta(alpha, beta) of ``beta_shapley`` (Kwon & Zou 2022 recommend Beta(16, 1)).
BETA_SHAPLEY_DEFAULT = (16.0, 1.0)

#: Entries of one block of the test-by-train distance matrix in ``knn_shapley_values`` (bounds memory).
DISTANCE_BLOCK_ENTRIES = 4_000_000


@dataclass
class RoyaltyInputs:
    """What a builder knows when it sets its parents' royalty shares.

    ``parents``: the data bought, one shard per parent dataset. ``X_val``/``y_val``: validation data
    the builder holds. ``model``/``k``/``seed``: how the builder trains. ``permutations`` and
    ``truncation`` tune the sampled estimates (``mc_shapley``; ``permutations`` also sizes ``banzhaf`` and
    ``beta_shapley`` samples). ``beta`` is ``beta_shapley``'s (alpha, beta). ``parent_ids`` are the parents'
    asset ids (same order as ``parents``); ``provenance=True`` credits a row found in several parents to the
    one with the lowest asset id (published first) and needs ``parent_ids``.
    """

    parents: list[Shard]
    X_val: np.ndarray
    y_val: np.ndarray
    model: ModelKind = "knn"
    k: int = 5
    seed: int = 0
    permutations: int = 50
    truncation: float = 0.01
    beta: tuple[float, float] = BETA_SHAPLEY_DEFAULT
    parent_ids: list[int] | None = None
    provenance: bool = False

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
        if not all(math.isfinite(b) and b > 0 for b in self.beta) or len(self.beta) != 2:
            raise ValueError(f"beta_shapley needs two positive finite parameters (alpha, beta), got {self.beta}")
        if self.parent_ids is not None and (
            len(self.parent_ids) != len(self.parents) or len(set(self.parent_ids)) != len(self.parent_ids)
        ):
            raise ValueError("parent_ids must give one distinct asset id per parent, in the order of parents")
        if self.provenance and self.parent_ids is None:
            raise ValueError("provenance needs parent_ids: the asset id of every parent, to find the first publisher")


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
            with threadpool_limits(1):  # many small fits: one BLAS thread each is ~10x faster on a busy machine
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


def shapley_weight(n_players: int, size: int) -> float:
    """Shapley's weight of one coalition of ``size`` other players: ``size! (n - size - 1)! / n!``."""
    return math.factorial(size) * math.factorial(n_players - size - 1) / math.factorial(n_players)


def banzhaf_weight(n_players: int, size: int) -> float:
    """Banzhaf's weight of one coalition of other players: ``1 / 2**(n - 1)`` whatever its size."""
    return 1.0 / 2 ** (n_players - 1)


def beta_weight(alpha: float, beta: float) -> Callable[[int, int], float]:
    """Beta(alpha, beta) Shapley's weight of one coalition of ``size`` other players (Kwon & Zou 2022):
    ``B(size + beta, n - 1 - size + alpha) / B(alpha, beta)``; Beta(1, 1) is Shapley's weight."""

    def weight(n_players: int, size: int) -> float:
        return math.exp(betaln(size + beta, n_players - 1 - size + alpha) - betaln(alpha, beta))

    return weight


CoalitionWeight = Callable[[int, int], float]


def exact_semivalue(n_players: int, utility: Utility, weight: CoalitionWeight) -> np.ndarray:
    """The semivalue ``φ_i = Σ_{S ⊆ N \\ {i}} weight(n, |S|) · (U(S | {i}) - U(S))`` by enumerating all 2**n
    coalitions (each evaluated once). ``weight`` is e.g. :func:`shapley_weight`, :func:`banzhaf_weight`
    or :func:`beta_weight`. Raises ``ValueError`` above :data:`MAX_EXACT_PLAYERS` players."""
    if not 0 <= n_players <= MAX_EXACT_PLAYERS:
        raise ValueError(f"exact valuation handles 0..{MAX_EXACT_PLAYERS} players, got {n_players}")
    worth = {
        coalition: utility(coalition)
        for size in range(n_players + 1)
        for coalition in map(frozenset, itertools.combinations(range(n_players), size))
    }
    weights = [weight(n_players, size) for size in range(n_players)]
    values = np.zeros(n_players)
    for coalition, value in worth.items():
        size = len(coalition)
        if size == n_players:
            continue  # nobody left to join
        for player in range(n_players):
            if player not in coalition:
                values[player] += weights[size] * (worth[coalition | {player}] - value)
    return values


def exact_shapley(n_players: int, utility: Utility) -> np.ndarray:
    """Shapley values by enumerating all 2**n coalitions (each evaluated once); fine for n ≤ 10."""
    return exact_semivalue(n_players, utility, shapley_weight)


@dataclass(frozen=True)
class ValueEstimate:
    """Values of the players of a coalition game, each with its standard error.

    ``exact``: computed by enumeration (``stderr`` all 0). Otherwise ``stderr[i]`` is the sample standard
    deviation of player i's sampled marginals over √(their number): the estimate's own sampling error
    (with truncation, not its bias). ``samples`` is how many permutations or coalitions were drawn (0 if
    exact).
    """

    values: np.ndarray
    stderr: np.ndarray
    exact: bool
    samples: int


def _exact_estimate(values: np.ndarray) -> ValueEstimate:
    return ValueEstimate(values=values, stderr=np.zeros_like(values), exact=True, samples=0)


def _stderr(total: np.ndarray, squares: np.ndarray, count: np.ndarray | int) -> np.ndarray:
    """Standard error of means from sums and sums of squares over ``count`` samples (0 below 2 samples)."""
    count = np.asarray(count, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = total / count
        variance = np.clip((squares - count * mean**2) / (count - 1), 0.0, None)
        error = np.sqrt(variance / count)
    return np.where(count >= 2, error, 0.0)


def tmc_shapley_estimate(
    n_players: int, utility: Utility, *, permutations: int, truncation: float, rng: np.random.Generator
) -> ValueEstimate:
    """Truncated Monte Carlo Shapley (Ghorbani & Zou 2019): the mean marginal over random orders, with the
    standard error of that mean over the permutations.

    Walking one permutation, once the current prefix is worth strictly less than ``truncation`` away
    from the full coalition, the remaining players get a zero marginal without evaluating anything
    (``truncation=0`` never truncates: the estimate is then unbiased).
    """
    if n_players < 1 or permutations < 1 or truncation < 0:
        raise ValueError("need at least one player and one permutation, and a non-negative truncation")
    full = utility(frozenset(range(n_players)))
    empty = utility(frozenset())
    totals, squares = np.zeros(n_players), np.zeros(n_players)
    for _ in range(permutations):
        prefix: frozenset[int] = frozenset()
        previous = empty
        for player in rng.permutation(n_players).tolist():
            if abs(full - previous) < truncation:
                break
            prefix = prefix | {player}
            current = utility(prefix)
            totals[player] += current - previous
            squares[player] += (current - previous) ** 2
            previous = current
    return ValueEstimate(values=totals / permutations, stderr=_stderr(totals, squares, permutations), exact=False,
                         samples=permutations)  # fmt: skip


def tmc_shapley(
    n_players: int, utility: Utility, *, permutations: int, truncation: float, rng: np.random.Generator
) -> np.ndarray:
    """The values of :func:`tmc_shapley_estimate` alone."""
    return tmc_shapley_estimate(n_players, utility, permutations=permutations, truncation=truncation, rng=rng).values


def msr_banzhaf_estimate(n_players: int, utility: Utility, *, samples: int, rng: np.random.Generator) -> ValueEstimate:
    """Data Banzhaf by maximum sample reuse (Wang & Jia 2023, Algorithm 1): draw ``samples`` coalitions, each
    player in each with probability 1/2; ``φ_i`` = mean utility of the drawn coalitions holding i minus that of
    those without i. ``stderr`` is the two-sample standard error ``√(var_in / n_in + var_out / n_out)``;
    a player never (or always) drawn gets value 0 and an infinite standard error."""
    if n_players < 1 or samples < 1:
        raise ValueError("need at least one player and one sample")
    drawn = rng.random((samples, n_players)) < 0.5
    worth = np.array([utility(frozenset(np.flatnonzero(row).tolist())) for row in drawn])
    values, errors = np.zeros(n_players), np.full(n_players, np.inf)
    for player in range(n_players):
        inside, outside = worth[drawn[:, player]], worth[~drawn[:, player]]
        if len(inside) and len(outside):
            values[player] = inside.mean() - outside.mean()
            spread = [part.var(ddof=1) / len(part) if len(part) > 1 else 0.0 for part in (inside, outside)]
            errors[player] = math.sqrt(sum(spread)) if min(len(inside), len(outside)) > 1 else np.inf
    return ValueEstimate(values=values, stderr=errors, exact=False, samples=samples)


def sampled_semivalue_estimate(
    n_players: int, utility: Utility, weight: CoalitionWeight, *, samples: int, rng: np.random.Generator
) -> ValueEstimate:
    """A semivalue by sampling, ``samples`` marginals per player: the size s of the coalition of others drawn
    with probability ``C(n-1, s) · weight(n, s)`` (a distribution for a semivalue: the weights of the
    coalitions of others sum to 1), the coalition uniformly among those of that size; the value is the mean
    marginal, ``stderr`` its standard error."""
    if n_players < 1 or samples < 1:
        raise ValueError("need at least one player and one sample")
    sizes = np.arange(n_players)
    probabilities = np.array([math.comb(n_players - 1, s) * weight(n_players, s) for s in sizes])
    probabilities = probabilities / probabilities.sum()
    values, errors = np.zeros(n_players), np.zeros(n_players)
    for player in range(n_players):
        others = np.array([p for p in range(n_players) if p != player])
        marginals = []
        for size in rng.choice(sizes, size=samples, p=probabilities).tolist():
            coalition = frozenset(rng.choice(others, size=size, replace=False).tolist())
            marginals.append(utility(coalition | {player}) - utility(coalition))
        values[player] = float(np.mean(marginals))
        errors[player] = float(np.std(marginals, ddof=1) / math.sqrt(samples)) if samples > 1 else 0.0
    return ValueEstimate(values=values, stderr=errors, exact=False, samples=samples)


def exact_is_affordable(n_players: int, permutations: int) -> bool:
    """Whether a coalition-game rule computes exactly: ``2**n <= permutations * n`` (enumeration costs no more
    trainings than sampling would; n <= 8 at 50 permutations) and n <= :data:`MAX_RULE_EXACT_PLAYERS`."""
    return n_players <= MAX_RULE_EXACT_PLAYERS and 2**n_players <= permutations * n_players


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


def mc_shapley_estimate(inputs: RoyaltyInputs) -> ValueEstimate:
    """The parents' Shapley values in the validation-accuracy game (``coalition_utility``): exact when
    :func:`exact_is_affordable` (``2**n <= permutations * n``), else truncated Monte Carlo seeded by
    ``inputs.seed`` with ``inputs.permutations`` permutations, each value with its standard error."""
    n, utility = len(inputs.parents), coalition_utility(inputs)
    if exact_is_affordable(n, inputs.permutations):
        return _exact_estimate(exact_shapley(n, utility))
    return tmc_shapley_estimate(n, utility, permutations=inputs.permutations, truncation=inputs.truncation,
                                rng=np.random.default_rng(inputs.seed))  # fmt: skip


def banzhaf_estimate(inputs: RoyaltyInputs) -> ValueEstimate:
    """The parents' Data Banzhaf values (Wang & Jia 2023) in the validation-accuracy game: exact when
    :func:`exact_is_affordable`, else maximum sample reuse with ``permutations * n`` coalitions."""
    n, utility = len(inputs.parents), coalition_utility(inputs)
    if exact_is_affordable(n, inputs.permutations):
        return _exact_estimate(exact_semivalue(n, utility, banzhaf_weight))
    return msr_banzhaf_estimate(n, utility, samples=inputs.permutations * n, rng=np.random.default_rng(inputs.seed))


def beta_shapley_estimate(inputs: RoyaltyInputs) -> ValueEstimate:
    """The parents' Beta(``inputs.beta``) Shapley values (Kwon & Zou 2022) in the validation-accuracy game:
    exact when :func:`exact_is_affordable`, else ``permutations`` sampled marginals per parent."""
    n, utility = len(inputs.parents), coalition_utility(inputs)
    weight = beta_weight(*inputs.beta)
    if exact_is_affordable(n, inputs.permutations):
        return _exact_estimate(exact_semivalue(n, utility, weight))
    return sampled_semivalue_estimate(n, utility, weight, samples=inputs.permutations,
                                      rng=np.random.default_rng(inputs.seed))  # fmt: skip


def mc_shapley_shares(inputs: RoyaltyInputs) -> list[float]:
    """``mc_shapley``: :func:`mc_shapley_estimate`'s values (exact for few parents), clipped, normalised.

    Utility: validation accuracy of ``train_model(inputs.model, union of the coalition's rows)``; the
    empty coalition is worth the majority-class baseline. Seeded by ``inputs.seed``; each coalition is
    trained at most once. All values ≤ 0 → equal weights.
    """
    return normalise(mc_shapley_estimate(inputs).values)


def banzhaf_shares(inputs: RoyaltyInputs) -> list[float]:
    """``banzhaf``: :func:`banzhaf_estimate`'s values, clipped, normalised (all ≤ 0 → equal weights)."""
    return normalise(banzhaf_estimate(inputs).values)


def beta_shapley_shares(inputs: RoyaltyInputs) -> list[float]:
    """``beta_shapley``: :func:`beta_shapley_estimate`'s values, clipped, normalised (all ≤ 0 → equal)."""
    return normalise(beta_shapley_estimate(inputs).values)


#: Estimates with their standard errors, by rule, for the rules that compute one (model cards, tests).
ESTIMATES: dict[str, Callable[[RoyaltyInputs], ValueEstimate]] = {
    "mc_shapley": mc_shapley_estimate,
    "banzhaf": banzhaf_estimate,
    "beta_shapley": beta_shapley_estimate,
}


# --------------------------------------------------------------------------------------------------
# Provenance


def row_digests(shard: Shard) -> list[bytes]:
    """One SHA-256 digest per row of ``shard``: of the row's float64 feature bytes and its int64 label."""
    X = np.ascontiguousarray(shard.X, dtype=np.float64)
    y = np.ascontiguousarray(shard.y, dtype=np.int64)
    return [hashlib.sha256(X[i].tobytes() + y[i].tobytes()).digest() for i in range(shard.rows)]


def first_published(parents: Sequence[Shard], parent_ids: Sequence[int]) -> list[Shard | None]:
    """Each parent's rows with every row already published by a parent with a lower asset id removed (rows
    matched by :func:`row_digests`; repeats within one parent are kept); None for a parent left with none."""
    seen: set[bytes] = set()
    kept: list[Shard | None] = [None] * len(parents)
    for index in sorted(range(len(parents)), key=lambda i: parent_ids[i]):
        digests = row_digests(parents[index])
        mask = np.array([digest not in seen for digest in digests], dtype=bool)
        seen.update(digests)
        if mask.any():
            kept[index] = Shard(parents[index].X[mask], parents[index].y[mask])
    return kept


def _with_provenance(rule: Callable[[RoyaltyInputs], list[float]]) -> Callable[[RoyaltyInputs], list[float]]:
    """``rule``, which with ``inputs.provenance`` runs on :func:`first_published` parents (weight 0 for a parent
    left without rows); unchanged otherwise."""

    @functools.wraps(rule)
    def apply(inputs: RoyaltyInputs) -> list[float]:
        if not inputs.provenance:
            return rule(inputs)
        assert inputs.parent_ids is not None  # checked by RoyaltyInputs
        kept = first_published(inputs.parents, inputs.parent_ids)
        present = [index for index, shard in enumerate(kept) if shard is not None]
        ids = [inputs.parent_ids[i] for i in present]
        reduced = replace(inputs, parents=[kept[i] for i in present], parent_ids=ids, provenance=False)
        weights = [0.0] * len(inputs.parents)
        for index, weight in zip(present, rule(reduced), strict=True):
            weights[index] = weight
        return weights

    return apply


RoyaltyRule = Callable[[RoyaltyInputs], list[float]]

#: Every royalty rule by the name a builder or a simulation asks for.
RULES: dict[str, RoyaltyRule] = {
    name: _with_provenance(rule)
    for name, rule in {
        "none": no_royalty,
        "equal": equal_shares,
        "proportional": proportional_shares,
        "leave_one_out": leave_one_out_shares,
        "knn_shapley": knn_shapley_shares,
        "mc_shapley": mc_shapley_shares,
        "banzhaf": banzhaf_shares,
        "beta_shapley": beta_shapley_shares,
    }.items()
}


def royalty_weights(rule: str, inputs: RoyaltyInputs) -> list[float]:
    """The weights rule ``rule`` gives the parents in ``inputs`` (``ValueError`` for an unknown rule)."""
    if rule not in RULES:
        raise ValueError(f"unknown royalty rule {rule!r}; choose one of: {', '.join(RULES)}")
    return RULES[rule](inputs)
