"""Metrics over a simulation's results: pure functions, deterministic output.

The engine hands over a JSON-able ``result`` dict (amounts in base units)::

    producers: [{index, address, asset_id, label_noise, duplicate_of, rows, revenue, true_value}]
               (optional ``royalty_revenue``: the part of ``revenue`` that came from model royalties)
    builders:  [{index, address, model_id, model, rule, spend, revenue, accuracy, parents, shares_bps}]
    consumers: [{index, address, spend, answered, correct, value}]
    protocol_fee, consumer_spend: int
    rounds:    [{round, consumer_spend, answered, correct}]
    chain:     {kind, chain_id, gas_used, tx_count}
    wall_time: float (seconds), onchain_actions: int

``summarize`` turns it into the figures a researcher compares; ``write_metrics`` writes them as
``metrics.json`` (identical for the same scenario and seed) plus ``timing.json`` (wall-clock figures,
which vary from run to run). ``write_csvs`` writes one CSV per entity kind.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

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

#: Scalar metrics a sweep compares across its grid (keys of ``flat_metrics``).
SWEEP_METRICS: tuple[str, ...] = (
    "revenue_value_pearson",
    "revenue_value_spearman",
    "gini_producer_revenue",
    "producer_share",
    "producer_revenue_total",
    "builder_profit_total",
    "consumer_surplus_total",
    "protocol_fee",
    "consumer_spend",
    "accuracy",
    "gas_used",
    "tx_count",
)


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


def summarize(result: Mapping[str, Any]) -> dict[str, Any]:
    """The figures of one run (amounts in base units); see the module docstring for ``result``.

    ``producer_share`` is producer revenue over consumer spend; when producers carry ``royalty_revenue``
    only that part counts (license sales are paid from builders' budgets, not from consumer spend).
    ``timing`` holds the wall-clock figures, the only ones that differ between identical runs.
    """
    producers = sorted(result["producers"], key=lambda p: p["index"])
    builders = sorted(result["builders"], key=lambda b: b["index"])
    consumers = sorted(result["consumers"], key=lambda c: c["index"])
    revenue = [int(p["revenue"]) for p in producers]
    values = [float(p["true_value"]) for p in producers]
    consumer_spend = int(result["consumer_spend"])
    reaching = (
        sum(int(p["royalty_revenue"]) for p in producers)
        if producers and all("royalty_revenue" in p for p in producers)
        else sum(revenue)
    )
    builder_profit = [int(b["revenue"]) - int(b["spend"]) for b in builders]
    surplus = [int(c["value"]) - int(c["spend"]) for c in consumers]
    answered = sum(int(c["answered"]) for c in consumers)
    correct = sum(int(c["correct"]) for c in consumers)
    chain = result.get("chain", {})
    wall_time = float(result.get("wall_time", 0.0))
    actions = int(result.get("onchain_actions", 0))
    return {
        "producer_revenue": revenue,
        "producer_revenue_total": sum(revenue),
        "producer_true_value": values,
        "revenue_value_correlation": {"pearson": pearson(revenue, values), "spearman": spearman(revenue, values)},
        "gini_producer_revenue": gini(revenue) if revenue else None,
        "producer_share": _ratio(reaching, consumer_spend),
        "builder_profit": {"per_builder": builder_profit, "total": sum(builder_profit)},
        "consumer_surplus": {"per_consumer": surplus, "total": sum(surplus)},
        "consumer_spend": consumer_spend,
        "protocol_fee": int(result["protocol_fee"]),
        "answered": answered,
        "correct": correct,
        "accuracy": _ratio(correct, answered),
        "builder_accuracy": [float(b["accuracy"]) for b in builders],
        "gas_used": int(chain.get("gas_used", 0)),
        "tx_count": int(chain.get("tx_count", 0)),
        "timing": {
            "wall_time": wall_time,
            "onchain_actions": actions,
            "actions_per_second": _ratio(actions, wall_time),
        },
    }


def flat_metrics(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The scalar metrics of ``summary`` under the names of ``SWEEP_METRICS`` (for sweep tables and plots)."""
    correlation = summary["revenue_value_correlation"]
    return {
        "revenue_value_pearson": correlation["pearson"],
        "revenue_value_spearman": correlation["spearman"],
        "gini_producer_revenue": summary["gini_producer_revenue"],
        "producer_share": summary["producer_share"],
        "producer_revenue_total": summary["producer_revenue_total"],
        "builder_profit_total": summary["builder_profit"]["total"],
        "consumer_surplus_total": summary["consumer_surplus"]["total"],
        "protocol_fee": summary["protocol_fee"],
        "consumer_spend": summary["consumer_spend"],
        "accuracy": summary["accuracy"],
        "gas_used": summary["gas_used"],
        "tx_count": summary["tx_count"],
    }


def sweep_row(params: Mapping[str, str], summary: Mapping[str, Any]) -> dict[str, Any]:
    """One grid point of a sweep: ``{"params": {dotted key: value}, "metrics": flat_metrics(summary)}``."""
    return {"params": dict(params), "metrics": flat_metrics(summary)}


# --------------------------------------------------------------------------------------------------
# Files


def write_metrics(summary: Mapping[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``metrics.json`` (everything but timing; same scenario and seed → same bytes) and ``timing.json``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    stable = {key: value for key, value in summary.items() if key != "timing"}
    metrics_path, timing_path = out / "metrics.json", out / "timing.json"
    metrics_path.write_text(json.dumps(stable, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    timing_path.write_text(json.dumps(summary.get("timing", {}), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return metrics_path, timing_path


def _cell(value: Any) -> Any:
    """A CSV cell: lists joined with ``;``, None as empty."""
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ";".join(str(item) for item in value)
    return value


def write_csvs(result: Mapping[str, Any], out_dir: str | Path) -> list[Path]:
    """Write ``producers.csv``, ``builders.csv``, ``consumers.csv`` and ``rounds.csv`` (columns of ``CSV_COLUMNS``)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for kind, columns in CSV_COLUMNS.items():
        key = "round" if kind == "rounds" else "index"
        rows = sorted(result.get(kind, []), key=lambda row, key=key: row[key])
        path = out / f"{kind}.csv"
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(columns)
            for row in rows:
                writer.writerow([_cell(row.get(column)) for column in columns])
        paths.append(path)
    return paths


def write_sweep_csv(rows: Sequence[Mapping[str, Any]], out_dir: str | Path) -> Path:
    """Write ``sweep.csv``: one line per grid point, parameter columns then ``SWEEP_METRICS``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = list(dict.fromkeys(key for row in rows for key in row["params"]))
    path = out / "sweep.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow([*params, *SWEEP_METRICS])
        for row in rows:
            cells = [row["params"].get(key) for key in params] + [row["metrics"].get(m) for m in SWEEP_METRICS]
            writer.writerow([_cell(cell) for cell in cells])
    return path
