"""Metrics over a simulation's results: pure functions, deterministic output.

The engine hands over a ``simulation.results.RunResult`` (amounts in base units): its producers, builders,
consumers, per-round figures, protocol fee, consumer spend and chain activity. ``summarize`` turns it into
the ``RunMetrics`` a researcher compares; ``write_metrics`` writes them as ``metrics.json`` (identical for
the same scenario and seed) plus ``timing.json`` (wall-clock figures, which vary from run to run).
``write_csvs`` writes one CSV per entity kind.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from simulation.results import (
    STRATEGY_METRICS,
    BuilderProfit,
    ConsumerSurplus,
    Correlation,
    ProducerResult,
    RunMetrics,
    RunResult,
    SweepMetrics,
    SweepRow,
    Timing,
)

#: Columns of each per-entity CSV, in order (list values are joined with ``;``).
CSV_COLUMNS: dict[str, tuple[str, ...]] = {
    "producers": (
        "index", "address", "asset_id", "label_noise", "duplicate_of", "rows", "revenue", "true_value",
    ),
    "builders": (
        "index", "address", "model_id", "model", "rule", "spend", "revenue", "accuracy", "parents", "shares_bps",
    ),
    "consumers": ("index", "address", "spend", "answered", "correct", "value"),
    "rounds": ("round", "consumer_spend", "answered", "correct"),
}  # fmt: skip

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


def summarize(result: RunResult) -> RunMetrics:
    """The figures of one run (amounts in base units).

    ``producer_share`` is producer revenue over consumer spend; when every producer carries
    ``royalty_revenue`` only that part counts (license sales are paid from builders' budgets, not from
    consumer spend). ``timing`` holds the wall-clock figures, the only ones that differ between identical runs.
    """
    producers = sorted(result.producers, key=lambda p: p.index)
    builders = sorted(result.builders, key=lambda b: b.index)
    consumers = sorted(result.consumers, key=lambda c: c.index)
    revenue = [p.revenue for p in producers]
    values = [p.true_value for p in producers]
    royalties = [p.royalty_revenue for p in producers]
    reaching = sum(r for r in royalties if r is not None) if producers and None not in royalties else sum(revenue)
    builder_profit = tuple(b.profit for b in builders)
    surplus = tuple(c.surplus for c in consumers)
    answered = sum(c.answered for c in consumers)
    correct = sum(c.correct for c in consumers)
    return RunMetrics(
        **_strategy_figures(result),
        producer_revenue=tuple(revenue),
        producer_revenue_total=sum(revenue),
        producer_true_value=tuple(values),
        revenue_value_correlation=Correlation(pearson=pearson(revenue, values), spearman=spearman(revenue, values)),
        gini_producer_revenue=gini(revenue) if revenue else None,
        producer_share=_ratio(reaching, result.consumer_spend),
        builder_profit=BuilderProfit(per_builder=builder_profit, total=sum(builder_profit)),
        consumer_surplus=ConsumerSurplus(per_consumer=surplus, total=sum(surplus)),
        consumer_spend=result.consumer_spend,
        protocol_fee=result.protocol_fee,
        answered=answered,
        correct=correct,
        accuracy=_ratio(correct, answered),
        builder_accuracy=tuple(b.accuracy for b in builders),
        gas_used=result.chain.gas_used,
        tx_count=result.chain.tx_count,
        timing=Timing(
            wall_time=result.wall_time,
            onchain_actions=result.onchain_actions,
            actions_per_second=_ratio(result.onchain_actions, result.wall_time),
        ),
    )


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
    """A CSV cell: lists joined with ``;``, None as empty."""
    if value is None:
        return ""
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
                writer.writerow([_cell(getattr(row, column)) for column in columns])
        paths.append(path)
    return paths


def write_sweep_csv(rows: Sequence[SweepRow], out_dir: str | Path) -> Path:
    """Write ``sweep.csv``: one line per grid point, parameter columns then ``SWEEP_METRICS`` (a strategy
    figure only when some row has it)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = list(dict.fromkeys(key for row in rows for key in row.params))
    strategy = [f.name for f in fields(SweepMetrics) if f.name in STRATEGY_METRICS]
    columns = [*SWEEP_METRICS, *(m for m in strategy if any(getattr(row.metrics, m) is not None for row in rows))]
    path = out / "sweep.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow([*params, *columns])
        for row in rows:
            metrics = asdict(row.metrics)
            cells = [row.params.get(key) for key in params] + [metrics[m] for m in columns]
            writer.writerow([_cell(cell) for cell in cells])
    return path
