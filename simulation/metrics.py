"""Metrics over a simulation's results: pure functions, deterministic output.

The engine hands over a ``simulation.results.RunResult`` (amounts in base units): its producers, builders,
consumers, per-round figures, protocol fee, consumer spend and chain activity. ``summarize`` turns it into
the ``RunMetrics`` a researcher compares; ``write_metrics`` writes them as ``metrics.json`` (identical for
the same scenario and seed) plus ``timing.json`` (wall-clock figures, which vary from run to run).
``write_csvs`` writes one CSV per entity kind.

Over seeds: ``estimate`` summarizes one metric's per-seed values as a mean with its 95% Student-t interval
(scipy's t quantile, ``n - 1`` degrees of freedom); ``aggregate_seeds`` does so for every scalar metric of a
scenario run over several seeds, ``compare_points`` pairs grid points seed by seed (the same seeds under each)
and estimates the difference of every metric; ``write_seeds_csv`` / ``write_seeded_metrics`` write them.
A metric without a value is ``Undefined`` with its reason, everywhere (``undefined`` in CSV cells).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from simulation.results import (
    STRATEGY_METRICS,
    BuilderProfit,
    Comparison,
    ConsumerSurplus,
    Correlation,
    DefectiveShare,
    Estimate,
    ProducerResult,
    ProducerShare,
    RunMetrics,
    RunResult,
    SeededMetrics,
    Summary,
    SweepMetrics,
    SweepRow,
    Timing,
    Undefined,
    Value,
)

#: Columns of each per-entity CSV, in order (list values are joined with ``;``).
CSV_COLUMNS: dict[str, tuple[str, ...]] = {
    "producers": (
        "index", "address", "asset_id", "label_noise", "duplicate_of", "rows", "revenue", "true_value",
        "license_revenue", "royalty_revenue", "owner",
    ),
    "builders": (
        "index", "address", "model_id", "model", "rule", "spend", "revenue", "validation_accuracy", "parents",
        "shares_bps",
    ),
    "consumers": ("index", "address", "spend", "answered", "correct", "value"),
    "rounds": ("round", "consumer_spend", "answered", "correct"),
}  # fmt: skip
#: CSV columns named apart from the record's field they hold: a builder's ``accuracy`` is its model's accuracy on
#: the builders' validation split (``result.json`` and ``metrics.json``'s ``builder_accuracy`` keep the old names).
CSV_FIELDS = {"validation_accuracy": "accuracy"}

#: Scalar metrics a sweep compares across its grid (fields of ``SweepMetrics``, in ``sweep.csv`` order); the
#: strategy figures (``STRATEGY_METRICS``) follow them in ``sweep.csv`` only when some grid point has them.
SWEEP_METRICS: tuple[str, ...] = tuple(f.name for f in fields(SweepMetrics) if f.name not in STRATEGY_METRICS)


# --------------------------------------------------------------------------------------------------
# Inequality and correlation


def _checked(values: Sequence[float]) -> np.ndarray:
    """``values`` as a 1-D float array; non-empty, finite and non-negative."""
    array = np.asarray(values, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ValueError("need a non-empty list of numbers")
    if not np.all(np.isfinite(array)) or np.any(array < 0):
        raise ValueError("values must be finite and non-negative")
    return array


def gini(values: Sequence[float]) -> float:
    """Gini coefficient of non-negative ``values``: 0 when all are equal, (n-1)/n when one holds everything.

    All zeros count as perfect equality (0.0).
    """
    array = np.sort(_checked(values))
    total = float(array.sum())
    if total == 0:
        return 0.0
    n = array.size
    ranks = np.arange(1, n + 1, dtype=np.float64)
    return float(2 * np.dot(ranks, array) / (n * total) - (n + 1) / n)


def lorenz(values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    """Lorenz curve of non-negative ``values``: population share ``x`` and cumulative value share ``y``.

    Both start at 0 and end at 1 (n + 1 points); all zeros give the line of equality.
    """
    array = np.sort(_checked(values))
    x = np.linspace(0.0, 1.0, array.size + 1)
    total = float(array.sum())
    if total == 0:
        return x, x.copy()
    y = np.concatenate([[0.0], np.cumsum(array) / total])
    y[-1] = 1.0
    return x, y


def pearson(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Pearson correlation of ``a`` and ``b``; None when undefined (fewer than 2 points or a constant input)."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"need two lists of the same length, got {x.shape} and {y.shape}")
    if x.size < 2 or not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))) or np.ptp(x) == 0 or np.ptp(y) == 0:
        return None
    dx, dy = x - x.mean(), y - y.mean()
    denominator = math.sqrt(float(np.dot(dx, dx)) * float(np.dot(dy, dy)))
    return max(-1.0, min(1.0, float(np.dot(dx, dy)) / denominator))


def ranks(values: Sequence[float]) -> np.ndarray:
    """1-based ranks of ``values``, ties sharing their average rank."""
    array = np.asarray(values, dtype=np.float64)
    order = np.argsort(array, kind="stable")
    result = np.empty(array.size, dtype=np.float64)
    start = 0
    while start < array.size:
        end = start
        while end + 1 < array.size and array[order[end + 1]] == array[order[start]]:
            end += 1
        result[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return result


def spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Spearman rank correlation (Pearson on average ranks); None when undefined."""
    if len(a) != len(b):
        raise ValueError(f"need two lists of the same length, got {len(a)} and {len(b)}")
    return pearson(ranks(a), ranks(b))


# --------------------------------------------------------------------------------------------------
# Summary


def _ratio(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator``, or None when the denominator is not positive."""
    return numerator / denominator if denominator > 0 else None


def _share(numerator: float, denominator: float, nothing: str) -> float | Undefined:
    """``numerator / denominator``, or ``Undefined(nothing)`` when the denominator is not positive."""
    return numerator / denominator if denominator > 0 else Undefined(nothing)


def correlation(revenue: Sequence[float], values: Sequence[float]) -> Correlation:
    """Pearson and Spearman correlation of producer revenue with true data value, each ``Undefined`` with the
    reason where it has none: fewer than two producers, or a constant side (every producer earned the same,
    or every shard has the same true value)."""
    if len(revenue) < 2:
        reason: str | None = f"a correlation needs at least 2 producers, the run has {len(revenue)}"
    elif np.ptp(np.asarray(revenue, dtype=np.float64)) == 0:
        reason = "every producer earned the same revenue"
    elif np.ptp(np.asarray(values, dtype=np.float64)) == 0:
        reason = "every producer's data has the same true value"
    else:
        reason = None
    if reason is not None:
        return Correlation(pearson=Undefined(reason), spearman=Undefined(reason))
    r, rho = pearson(revenue, values), spearman(revenue, values)
    return Correlation(
        pearson=Undefined("a value is not finite") if r is None else r,
        spearman=Undefined("a value is not finite") if rho is None else rho,
    )


def producer_share(result: RunResult) -> ProducerShare:
    """Producer revenue over everything spent in the market: builders' license purchases plus consumers'
    model calls. License sales and royalties are named apart when the engine split them (``Undefined``
    parts otherwise). Rule ``none`` pays no royalty, yet its producers' license revenue counts."""
    spent = sum(b.spend for b in result.builders) + result.consumer_spend
    nothing = "nothing was spent in the market (no licenses bought, no calls paid)"
    total = _share(sum(p.revenue for p in result.producers), spent, nothing)
    royalties = [p.royalty_revenue for p in result.producers]
    licenses = [p.license_revenue for p in result.producers]
    if not result.producers or None in royalties or None in licenses:
        unsplit = Undefined("the engine did not split producer revenue into license sales and royalties")
        return ProducerShare(total=total, license=unsplit, royalty=unsplit)
    return ProducerShare(
        total=total,
        license=_share(sum(r for r in licenses if r is not None), spent, nothing),
        royalty=_share(sum(r for r in royalties if r is not None), spent, nothing),
    )


# --------------------------------------------------------------------------------------------------
# Against the ground truth

_UNSPLIT = "the engine did not split producer revenue into license sales and royalties"
_NO_TRUTH = "the engine did not compute the ground truth"


def _royalties(producers: Sequence[ProducerResult]) -> list[int] | Undefined:
    """Each producer's royalty revenue, or why it is unknown."""
    royalties = [p.royalty_revenue for p in producers]
    if not producers:
        return Undefined("the run has no producers")
    return Undefined(_UNSPLIT) if None in royalties else [int(r) for r in royalties if r is not None]


def royalty_correlation(result: RunResult) -> Correlation:
    """Pearson and Spearman correlation of each producer's royalty revenue (model royalties only, no license
    sales) with its ground-truth value (``ProducerResult.true_value``), as :func:`correlation`; ``Undefined``
    when the engine did not split revenue or a side is constant (e.g. rule ``none``: no royalty at all)."""
    producers = sorted(result.producers, key=lambda p: p.index)
    royalties = _royalties(producers)
    if isinstance(royalties, Undefined):
        return Correlation(pearson=royalties, spearman=royalties)
    if len(producers) >= 2 and sum(royalties) == 0:
        nothing = Undefined("no royalty reached any producer")
        return Correlation(pearson=nothing, spearman=nothing)
    if len(producers) >= 2 and len(set(royalties)) == 1:
        same = Undefined("every producer earned the same royalty revenue")
        return Correlation(pearson=same, spearman=same)
    return correlation(royalties, [p.true_value for p in producers])


def truth_distance(result: RunResult) -> float | Undefined:
    """How far the royalty splits the rule set were from the ground-truth shares (0: identical, 1: disjoint).

    For each model m that pays royalties, ``TV_m = ½ Σ_j |b_mj / Σ_j b_mj - g_mj|``, the total-variation
    distance between its parents' shares as set on chain (``shares_bps``, after the builder's 1-bps floor) and
    its exact Shapley shares ``g_m`` (``BuilderResult.true_shares``); the run's distance is their mean weighted
    by the royalty each model owed, ``call_revenue_m · Σ_j b_mj``. ``Undefined`` when no model pays royalties
    (rule ``none``), none of those was paid for a call, or the engine did not compute the ground truth.
    """
    builders = [b for b in result.builders if sum(b.shares_bps) > 0]
    if not builders:
        return Undefined("no model pays royalties (rule none, or a royalty share of 0)")
    if any(b.true_shares is None or b.call_revenue is None for b in builders):
        return Undefined(_NO_TRUTH)
    weights, distances = [], []
    for builder in builders:
        paid = np.asarray(builder.shares_bps, dtype=np.float64)
        truth = np.asarray(builder.true_shares, dtype=np.float64)
        distances.append(0.5 * float(np.abs(paid / paid.sum() - truth).sum()))
        weights.append(float(builder.call_revenue or 0) * paid.sum())
    if sum(weights) <= 0:
        return Undefined("no model that pays royalties was paid for a call")
    return float(np.dot(weights, distances) / sum(weights))


def _defective(producer: ProducerResult) -> bool:
    """Whether a producer's data is defective: label noise, or rows copied from another producer."""
    return producer.label_noise > 0 or producer.duplicate_of is not None


def defective_share(result: RunResult) -> DefectiveShare:
    """The royalty reaching defective data (label noise or ``duplicate_of`` set) against the ground truth:
    ``royalty = Σ_{p defective} royalty_p / Σ_p royalty_p``, ``truth = Σ_{p defective} true_value_p / Σ_p
    true_value_p`` and ``excess = royalty - truth``; each ``Undefined`` with its reason (no defective
    producer, no royalty paid, no ground-truth value because no model was paid for a call)."""
    producers = result.producers
    if not any(_defective(p) for p in producers):
        none = Undefined("no producer has label noise or copied rows")
        return DefectiveShare(royalty=none, truth=none, excess=none)
    royalties = _royalties(producers)
    if isinstance(royalties, Undefined):
        paid: float | Undefined = royalties
    else:
        total = sum(royalties)
        defective = sum(r for r, p in zip(royalties, producers, strict=True) if _defective(p))
        paid = defective / total if total > 0 else Undefined("no royalty reached any producer")
    true_total = sum(p.true_value for p in producers)
    truth: float | Undefined = (
        sum(p.true_value for p in producers if _defective(p)) / true_total
        if true_total > 0
        else Undefined("no data has ground-truth value (no model that trained on it was paid for a call)")
    )
    excess: float | Undefined
    if isinstance(paid, Undefined):
        excess = paid
    elif isinstance(truth, Undefined):
        excess = truth
    else:
        excess = paid - truth
    return DefectiveShare(royalty=paid, truth=truth, excess=excess)


def summarize(result: RunResult) -> RunMetrics:
    """The figures of one run (amounts in base units).

    Against the ground truth (``simulation.groundtruth``): royalty-only revenue per producer and its
    correlation with the ground-truth value (:func:`royalty_correlation`), the headline
    :func:`truth_distance`, and the royalty reaching noisy or copied data (:func:`defective_share`).

    ``producer_share`` is producer revenue (license sales and royalties, named apart) over everything spent in
    the market (licenses plus model calls); see :func:`producer_share`. A metric without a value is
    ``Undefined`` with the reason. ``timing`` holds the wall-clock figures, the only ones that differ between
    identical runs.
    """
    producers = sorted(result.producers, key=lambda p: p.index)
    builders = sorted(result.builders, key=lambda b: b.index)
    consumers = sorted(result.consumers, key=lambda c: c.index)
    revenue = [p.revenue for p in producers]
    values = [p.true_value for p in producers]
    builder_profit = tuple(b.profit for b in builders)
    surplus = tuple(c.surplus for c in consumers)
    answered = sum(c.answered for c in consumers)
    correct = sum(c.correct for c in consumers)
    return RunMetrics(
        **_strategy_figures(result),
        producer_revenue=tuple(revenue),
        producer_revenue_total=sum(revenue),
        producer_true_value=tuple(values),
        revenue_value_correlation=correlation(revenue, values),
        gini_producer_revenue=gini(revenue) if revenue else Undefined("the run has no producers"),
        producer_share=producer_share(result),
        builder_profit=BuilderProfit(per_builder=builder_profit, total=sum(builder_profit)),
        consumer_surplus=ConsumerSurplus(per_consumer=surplus, total=sum(surplus)),
        consumer_spend=result.consumer_spend,
        protocol_fee=result.protocol_fee,
        answered=answered,
        correct=correct,
        accuracy=_share(correct, answered, "no query was answered"),
        builder_accuracy=tuple(b.accuracy for b in builders),
        gas_used=result.chain.gas_used,
        tx_count=result.chain.tx_count,
        producer_royalty_revenue=_royalties_tuple(producers),
        royalty_value_correlation=royalty_correlation(result),
        truth_distance=truth_distance(result),
        defective=defective_share(result),
        timing=Timing(
            wall_time=result.wall_time,
            onchain_actions=result.onchain_actions,
            actions_per_second=_ratio(result.onchain_actions, result.wall_time),
        ),
    )


def _royalties_tuple(producers: Sequence[ProducerResult]) -> tuple[int, ...] | Undefined:
    royalties = _royalties(producers)
    return royalties if isinstance(royalties, Undefined) else tuple(royalties)


def _owner(producer: ProducerResult) -> int:
    """The scenario producer behind an identity (itself unless the scenario splits producers)."""
    return producer.index if producer.owner is None else producer.owner


def _strategy_figures(result: RunResult) -> dict[str, Any]:
    """``RunMetrics``' strategy fields: per-owner revenue and the split owner's (a Sybil scenario), what free
    riders and the producers they copy earned (a free-rider scenario); absent ones stay None."""
    figures: dict[str, Any] = {}
    if result.split_owner is not None:
        owners = sorted({_owner(p) for p in result.producers})
        by_owner = {owner: sum(p.revenue for p in result.producers if _owner(p) == owner) for owner in owners}
        figures["owner_revenue"] = tuple(by_owner[owner] for owner in owners)
        figures["split_owner_revenue"] = by_owner[result.split_owner]
        figures["split_identities"] = sum(1 for p in result.producers if _owner(p) == result.split_owner)
    copied = {p.duplicate_of for p in result.producers if p.duplicate_of is not None}
    if copied:
        figures["copier_revenue"] = sum(p.revenue for p in result.producers if p.duplicate_of is not None)
        figures["copied_revenue"] = sum(p.revenue for p in result.producers if _owner(p) in copied)
    return figures


def with_sybil_gains(rows: Sequence[SweepRow]) -> list[SweepRow]:
    """``rows`` with ``sybil_gain`` set where a sweep has the unsplit control: a row's split-owner revenue over
    that of the row with ``split_identities == 1`` and every parameter equal but those under
    ``producers.split`` (so the same seed, rule and so on). Rows without a control (or whose control earned
    nothing) keep None."""

    def others(row: SweepRow) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((k, v) for k, v in row.params.items() if not k.startswith("producers.split")))

    controls = {others(row): row.metrics.split_owner_revenue for row in rows if row.metrics.split_identities == 1}
    gained = []
    for row in rows:
        control = controls.get(others(row))
        revenue = row.metrics.split_owner_revenue
        gain = revenue / control if revenue is not None and control else None
        gained.append(replace(row, metrics=replace(row.metrics, sybil_gain=gain)))
    return gained


def sweep_row(params: dict[str, str], metrics: RunMetrics) -> SweepRow:
    """One grid point of a sweep: its parameters (dotted key -> value) and the run's scalar metrics."""
    return SweepRow(params=dict(params), metrics=metrics.sweep_metrics())


# --------------------------------------------------------------------------------------------------
# Files


def write_metrics(metrics: RunMetrics, out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``metrics.json`` (everything but timing; same scenario and seed → same bytes) and ``timing.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metrics_path, timing_path = out / "metrics.json", out / "timing.json"
    metrics_path.write_text(json.dumps(metrics.to_json(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    timing_path.write_text(json.dumps(asdict(metrics.timing), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return metrics_path, timing_path


def _cell(value: Any) -> Any:
    """A CSV cell: lists joined with ``;``, None as empty, an undefined metric as ``undefined``."""
    if value is None:
        return ""
    if isinstance(value, Undefined):
        return "undefined"
    if isinstance(value, list | tuple):
        return ";".join(str(item) for item in value)
    return value


def write_csvs(result: RunResult, out_dir: str | Path) -> list[Path]:
    """Write ``producers.csv``, ``builders.csv``, ``consumers.csv`` and ``rounds.csv`` (columns of ``CSV_COLUMNS``,
    each a field of the row's record), rows by index (rounds by number)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tables: dict[str, Sequence[Any]] = {
        "producers": sorted(result.producers, key=lambda row: row.index),
        "builders": sorted(result.builders, key=lambda row: row.index),
        "consumers": sorted(result.consumers, key=lambda row: row.index),
        "rounds": sorted(result.rounds, key=lambda row: row.round),
    }
    paths = []
    for kind, columns in CSV_COLUMNS.items():
        path = out / f"{kind}.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(columns)
            for row in tables[kind]:
                writer.writerow([_cell(getattr(row, CSV_FIELDS.get(column, column))) for column in columns])
        paths.append(path)
    return paths


def _write_table(out_dir: str | Path, name: str, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write ``out_dir/name`` as CSV: ``header``, then ``rows`` (each cell through ``_cell``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / name
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows([_cell(cell) for cell in row] for row in rows)
    return path


def _param_keys(params: Iterable[dict[str, str]]) -> list[str]:
    """Every parameter key of the grid, in first-seen order."""
    return list(dict.fromkeys(key for point in params for key in point))


def write_sweep_csv(rows: Sequence[SweepRow], out_dir: str | Path) -> Path:
    """Write ``sweep.csv``: one line per grid point, parameter columns then ``SWEEP_METRICS`` (a strategy
    figure, ``STRATEGY_METRICS``, only when some row has it)."""
    params = _param_keys(row.params for row in rows)
    strategy = [f.name for f in fields(SweepMetrics) if f.name in STRATEGY_METRICS]
    columns = [*SWEEP_METRICS, *(m for m in strategy if any(getattr(row.metrics, m) is not None for row in rows))]
    return _write_table(out_dir, "sweep.csv", [*params, *columns], (
        [row.params.get(key) for key in params] + [getattr(row.metrics, m) for m in columns] for row in rows
    ))  # fmt: skip


# --------------------------------------------------------------------------------------------------
# Over seeds

#: Confidence level of every interval over seeds.
CONFIDENCE = 0.95


def estimate(values: Sequence[Value]) -> Summary:
    """Mean of one metric's per-seed ``values`` with its 95% Student-t interval: ``mean ± t · sd / √n``, ``t``
    the 0.975 quantile of Student's t with ``n - 1`` degrees of freedom (``scipy.stats.t``), ``sd`` the sample
    standard deviation (``n - 1`` in the denominator). Seeds where the metric is ``Undefined`` are left out
    (``n`` counts the rest); with fewer than 2 left the estimate is ``Undefined``, naming the seeds' reasons."""
    defined = [float(v) for v in values if not isinstance(v, Undefined)]
    reasons = list(dict.fromkeys(v.reason for v in values if isinstance(v, Undefined)))
    if len(defined) < 2:
        why = f"defined in {len(defined)} of {len(values)} seeds, an interval needs at least 2"
        return Undefined(why + (f": {'; '.join(reasons)}" if reasons else ""))
    array = np.asarray(defined, dtype=np.float64)
    n = array.size
    mean = float(array.mean())
    sd = float(array.std(ddof=1))
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * sd / math.sqrt(n)
    return Estimate(mean=mean, low=mean - half, high=mean + half, n=n, sd=sd)


def aggregate_seeds(params: dict[str, str], seeds: Sequence[int], runs: Sequence[SweepMetrics]) -> SeededMetrics:
    """Every scalar metric (``SWEEP_METRICS``) of ``runs`` (``runs[i]`` from seed ``seeds[i]``) as an estimate."""
    if len(seeds) != len(runs) or not runs:
        raise ValueError(f"need one run per seed, got {len(runs)} runs for {len(seeds)} seeds")
    return SeededMetrics(
        params=dict(params),
        seeds=tuple(seeds),
        runs=tuple(runs),
        estimates={name: estimate([getattr(run, name) for run in runs]) for name in SWEEP_METRICS},
    )


def paired_difference(point: SeededMetrics, reference: SeededMetrics, metric: str) -> Summary:
    """The per-seed difference ``point - reference`` of ``metric`` (a ``SWEEP_METRICS`` name), estimated over
    the seeds both ran; a seed where either side is undefined is left out. Raises ``ValueError`` when the two
    did not run the same seeds (a paired comparison needs them)."""
    if point.seeds != reference.seeds:
        raise ValueError(f"a paired comparison needs the same seeds, got {point.seeds} and {reference.seeds}")
    differences: list[Value] = []
    for a, b in zip(point.runs, reference.runs, strict=True):
        x, y = getattr(a, metric), getattr(b, metric)
        if isinstance(x, Undefined) or isinstance(y, Undefined):
            differences.append(x if isinstance(x, Undefined) else y)
        else:
            differences.append(x - y)
    return estimate(differences)


def compare_points(points: Sequence[SeededMetrics], metrics: Sequence[str] = SWEEP_METRICS) -> list[Comparison]:
    """Every grid point after the first against the first (the reference), on every metric of ``metrics``:
    paired per-seed differences with their 95% intervals (see :func:`paired_difference`)."""
    if not points:
        return []
    reference = points[0]
    return [
        Comparison(metric=name, point=dict(point.params), reference=dict(reference.params),
                   difference=paired_difference(point, reference, name))
        for point in points[1:]
        for name in metrics
    ]  # fmt: skip


def write_seeds_csv(points: Sequence[SeededMetrics], out_dir: str | Path) -> Path:
    """Write ``seeds.csv``: one line per (grid point, seed), parameter columns, ``seed``, then ``SWEEP_METRICS``
    (an undefined metric as ``undefined``; pandas: ``read_csv(..., na_values=["undefined"])``)."""
    params = _param_keys(point.params for point in points)
    return _write_table(out_dir, "seeds.csv", [*params, "seed", *SWEEP_METRICS], (
        [point.params.get(key) for key in params] + [seed] + [getattr(run, m) for m in SWEEP_METRICS]
        for point in points
        for seed, run in zip(point.seeds, point.runs, strict=True)
    ))  # fmt: skip


def write_seeded_metrics(point: SeededMetrics, out_dir: str | Path) -> Path:
    """Write ``metrics.json`` of a run over seeds: ``SeededMetrics.to_json`` (same seeds → same bytes)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "metrics.json"
    path.write_text(json.dumps(point.to_json(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


#: Columns of a seeded ``sweep.csv`` per metric, after the parameter columns: ``<metric>_<part>``.
ESTIMATE_PARTS: tuple[str, ...] = ("mean", "low", "high", "sd", "n")


def write_seeded_sweep_csv(points: Sequence[SeededMetrics], out_dir: str | Path) -> Path:
    """Write ``sweep.csv`` of a sweep over seeds: one line per grid point, parameter columns, ``seeds`` (how
    many), then ``<metric>_mean,_low,_high,_sd,_n`` for each of ``SWEEP_METRICS`` (``undefined`` in each part
    of an undefined metric; the reason is in the point's ``metrics.json``)."""
    params = _param_keys(point.params for point in points)

    def parts(summary: Summary) -> list[Any]:
        return [summary if isinstance(summary, Undefined) else getattr(summary, part) for part in ESTIMATE_PARTS]

    header = [*params, "seeds", *(f"{m}_{part}" for m in SWEEP_METRICS for part in ESTIMATE_PARTS)]
    return _write_table(out_dir, "sweep.csv", header, (
        [point.params.get(key) for key in params] + [len(point.seeds)]
        + [cell for name in SWEEP_METRICS for cell in parts(point.estimates[name])]
        for point in points
    ))  # fmt: skip
