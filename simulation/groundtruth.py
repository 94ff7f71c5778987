"""Ground truth of data value: what each producer's shard was worth to each model built on it.

For every published model, the game: its parents are the players, and a coalition is worth the accuracy, on
the run's test set (the consumers' held-out rows), of the builder's model type (``knn`` or ``logreg``,
``agents.learning.train_model``) trained on the union of the coalition's rows; the empty coalition is worth
the majority-class baseline (``agents.datavalue.baseline_accuracy``), as in the royalty rules. Each parent's
ground truth is its Shapley value in that game:

- exact, enumerating all 2**k coalitions of the k parents, when k <= :data:`EXACT_MAX_PARENTS` (1,024
  coalitions);
- above it, the mean marginal over :data:`PERMUTATIONS` seeded random orders (no truncation, so unbiased),
  with its own standard error (``ModelTruth.stderr``);
- logistic-regression models share a budget of :data:`FIT_BUDGET` fits per run: a model whose exact game
  does not fit in what is left is sampled with the orders the rest pays for (at least
  :data:`MIN_PERMUTATIONS`), with its standard error.

Coalition worths are cached across models by (model type, set of shards), so builders sharing parents train
each coalition once. k-NN coalitions are not trained at all: the k nearest rows of a coalition are among the
k nearest of each of its members, so every coalition's predictions come from the members' k nearest rows per
test point (:func:`knn_coalition_accuracies`; the same classifier as scikit-learn's ``KNeighborsClassifier``
with uniform weights: Euclidean distance, equal distances ordered by row position in the parents' order,
votes tied between classes go to the smaller label). Logistic-regression coalitions are trained, one BLAS
thread each (many small fits are ~10x faster so on a shared machine).

A model's ground-truth *shares* are its parents' Shapley values clipped at 0 and normalised
(``agents.datavalue.normalise``: the form in which a rule pays). A producer's ground-truth *value*
(``ProducerResult.true_value``, base units) is ``Σ_m share_m(p) · pool_m``: for every model m trained on its
shard, its share times the royalty pool the model owed its parents, ``pool_m = paid_m · royalty_bps / 10,000 ·
(1 - fee)²`` (``paid_m`` what consumers paid for calls to m; the protocol fee is taken at the model's vault
and again at the dataset's). That is what the producer would have received in royalties had every builder
split by the exact Shapley values, and it does not depend on the rule (rule ``none`` pays nothing, yet its
pools are counted), so runs under different rules are compared against the same truth.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.spatial.distance import cdist
from threadpoolctl import threadpool_limits

from agents.datavalue import exact_shapley, normalise, tmc_shapley_estimate
from agents.learning import Shard, accuracy, train_model

#: Exact Shapley values up to this many parents of one model (2**10 = 1,024 coalitions).
EXACT_MAX_PARENTS = 10

#: Random orders sampled above :data:`EXACT_MAX_PARENTS` parents.
PERMUTATIONS = 100

#: Logistic-regression fits one run may spend on ground truth (~5 ms each on one idle core): a model whose
#: exact game would overrun what is left is sampled instead, with as many random orders as the rest of the
#: budget pays for, and never fewer than :data:`MIN_PERMUTATIONS` (its standard error says how good that is).
FIT_BUDGET = 512

#: The fewest random orders a sampled model gets, budget or not.
MIN_PERMUTATIONS = 5


@dataclass(frozen=True)
class ModelTruth:
    """One model's ground truth, per parent in its parents' order: ``values`` (Shapley values, test-accuracy
    points), their ``stderr`` (0 when ``exact``), and ``shares`` (values clipped at 0, normalised to sum to
    1; equal shares if no value is positive)."""

    values: tuple[float, ...]
    stderr: tuple[float, ...]
    exact: bool
    shares: tuple[float, ...]


def knn_coalition_accuracies(
    parents: Sequence[Shard], X_test: np.ndarray, y_test: np.ndarray, k: int
) -> dict[frozenset[int], float]:
    """Test accuracy of k-NN (``n_neighbors = min(k, rows)``) trained on every non-empty coalition of
    ``parents`` (by parent index), without training: see the module. Exact for any shard sizes."""
    X_test, y_test = np.asarray(X_test, dtype=np.float64), np.asarray(y_test)
    n_test, n = len(y_test), len(parents)
    classes = np.unique(np.concatenate([*(p.y for p in parents), y_test]))
    # Each parent's k nearest rows to each test point: distance and label, nearest first (ties: row order).
    distances, labels, owners = [], [], []
    for index, parent in enumerate(parents):
        d = cdist(X_test, parent.X, "sqeuclidean")
        take = min(k, parent.rows)
        order = np.argsort(d, axis=1, kind="stable")[:, :take]
        distances.append(np.take_along_axis(d, order, axis=1))
        labels.append(np.searchsorted(classes, parent.y[order]))
        owners.append(np.full((n_test, take), index))
    # Candidates in parent order, then stably by distance: ties go to the earlier parent, then the earlier row.
    distance, label, owner = (np.concatenate(part, axis=1) for part in (distances, labels, owners))
    order = np.argsort(distance, axis=1, kind="stable")
    label, owner = np.take_along_axis(label, order, axis=1), np.take_along_axis(owner, order, axis=1)
    truth = np.searchsorted(classes, y_test)
    rows = np.array([p.rows for p in parents])
    offsets = np.arange(n_test)[:, None] * len(classes)
    worth = {}
    for mask in range(1, 2**n):
        members = [i for i in range(n) if mask >> i & 1]
        neighbours = min(k, int(rows[members].sum()))
        member = (mask >> owner) & 1 == 1
        picked = member & (np.cumsum(member, axis=1) <= neighbours)
        votes = np.bincount((offsets + label)[picked], minlength=n_test * len(classes)).reshape(n_test, -1)
        worth[frozenset(members)] = float(np.mean(votes.argmax(axis=1) == truth))
    return worth


class TruthGames:
    """Coalition worths on the test set, cached by (model type, set of shard indices of the run)."""

    def __init__(self, shards: Sequence[Shard], X_test: np.ndarray, y_test: np.ndarray, *, k: int, seed: int):
        self.shards, self.X_test, self.y_test, self.k, self.seed = list(shards), X_test, y_test, k, seed
        self.cache: dict[tuple[str, frozenset[int]], float] = {}
        _, counts = np.unique(np.asarray(y_test), return_counts=True)
        self.baseline = float(counts.max() / counts.sum())
        self.fits = 0

    def prepare(self, kind: str, parents: Sequence[int]) -> None:
        """Fill the cache for every coalition of ``parents`` when that is cheap (k-NN, exact size)."""
        if kind != "knn" or len(parents) > EXACT_MAX_PARENTS:
            return
        ordered = sorted(parents)  # rows in shard order, as ``worth`` concatenates them: the same distance ties
        local = knn_coalition_accuracies([self.shards[p] for p in ordered], self.X_test, self.y_test, self.k)
        for members, value in local.items():
            self.cache.setdefault((kind, frozenset(ordered[i] for i in members)), value)

    def worth(self, kind: str, shards: frozenset[int]) -> float:
        """Test accuracy of ``kind`` trained on the union of ``shards`` (their rows in index order)."""
        if not shards:
            return self.baseline
        key = (kind, shards)
        if key not in self.cache:
            if kind == "knn":
                (value,) = knn_coalition_accuracies(
                    [Shard(np.concatenate([self.shards[s].X for s in sorted(shards)]),
                           np.concatenate([self.shards[s].y for s in sorted(shards)]))],
                    self.X_test, self.y_test, self.k,
                ).values()  # fmt: skip
            else:
                X = np.concatenate([self.shards[s].X for s in sorted(shards)])
                y = np.concatenate([self.shards[s].y for s in sorted(shards)])
                with threadpool_limits(1):
                    model = train_model(kind, X, y, seed=self.seed, k=self.k)  # type: ignore[arg-type]
                value = accuracy(model, self.X_test, self.y_test)
                self.fits += 1
            self.cache[key] = value
        return self.cache[key]

    def truth(self, kind: str, parents: Sequence[int], *, seed: int) -> ModelTruth:
        """The ground truth of a ``kind`` model trained on shards ``parents`` (see the module)."""
        parents = list(parents)
        if not parents:
            return ModelTruth(values=(), stderr=(), exact=True, shares=())
        self.prepare(kind, parents)

        def utility(coalition: frozenset[int]) -> float:
            return self.worth(kind, frozenset(parents[i] for i in coalition))

        n, permutations, affordable = len(parents), PERMUTATIONS, True
        if kind != "knn":  # trained: within the run's fit budget
            left = FIT_BUDGET - self.fits
            affordable = n <= EXACT_MAX_PARENTS and left >= sum(
                (kind, frozenset(members)) not in self.cache
                for size in range(1, n + 1)
                for members in itertools.combinations(parents, size)
            )
            permutations = min(PERMUTATIONS, max(MIN_PERMUTATIONS, left // n))
        if n <= EXACT_MAX_PARENTS and affordable:
            values, errors, exact = exact_shapley(n, utility), np.zeros(n), True
        else:
            estimate = tmc_shapley_estimate(n, utility, permutations=permutations, truncation=0.0,
                                            rng=np.random.default_rng(seed))  # fmt: skip
            values, errors, exact = estimate.values, estimate.stderr, False
        return ModelTruth(values=tuple(float(v) for v in values), stderr=tuple(float(e) for e in errors),
                          exact=exact, shares=tuple(normalise(values)))  # fmt: skip


def producer_values(
    truths: Sequence[ModelTruth], parents: Sequence[Sequence[int]], pools: Sequence[float], producers: int
) -> list[float]:
    """Each producer's ground-truth value: ``Σ_m truths[m].shares[j] · pools[m]`` over the models m whose j-th
    parent is that producer's shard (``parents[m]`` holds shard indices; ``pools[m]`` the royalty pool m owed,
    base units)."""
    values = [0.0] * producers
    for truth, shards, pool in zip(truths, parents, pools, strict=True):
        for share, shard in zip(truth.shares, shards, strict=True):
            values[shard] += share * pool
    return values
