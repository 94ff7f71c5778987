"""Markdown reports of a run and of a sweep: a one-screen summary table, then the figures, each explained.

``summary_rows`` gives the same summary as (label, value) pairs, for a terminal table.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from marketplace.chain.units import format_units
from simulation.results import RunMetrics, RunResult, SweepRow

#: Title and one-sentence explanation of each figure, by file name.
FIGURE_CAPTIONS: dict[str, tuple[str, str]] = {
    "revenue_vs_quality.png": (
        "Revenue vs. data quality",
        "Each producer's revenue against its label-noise rate (left) and its data's true leave-one-out value "
        "(right); crosses mark producers that resell another producer's rows.",
    ),
    "lorenz.png": (
        "Lorenz curve of producer revenue",
        "The further the curve sags below the diagonal, the more unequally revenue is spread across producers.",
    ),
    "money_flow.png": (
        "Money flow",
        "What consumers paid for model calls, what builders earned and spent on data, what producers earned "
        "and what the protocol kept as fees.",
    ),
    "rounds.png": (
        "Per round",
        "Consumer spend per round (left) and the fraction of paid answers that were correct, next to each "
        "builder's test accuracy (right).",
    ),
    "sweep_distribution.png": (
        "How value reaches producers",
        "Per grid point: correlation between producer revenue and true data value, Gini of producer revenue, "
        "and producer revenue as a share of consumer spend.",
    ),
    "sweep_welfare.png": (
        "Who gains",
        "Per grid point: total builder profit, consumer surplus, protocol fees and answer accuracy.",
    ),
}


def tusd(units: int) -> str:
    """Base units as a short tUSD string: at least two decimals, no trailing zeros beyond them."""
    text = format_units(int(units))
    whole, fraction = text.split(".")
    return f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"


def _ratio(value: float | None, digits: int = 3) -> str:
    """A float with ``digits`` decimals, or n/a."""
    return "n/a" if value is None else f"{value:.{digits}f}"


def _percent(value: float | None) -> str:
    """A fraction as a percentage, or n/a."""
    return "n/a" if value is None else f"{100 * value:.1f}%"


def summary_rows(summary: RunMetrics) -> list[tuple[str, str]]:
    """The run's headline figures as ``(label, value)`` pairs, amounts in tUSD."""
    correlation = summary.revenue_value_correlation
    timing = summary.timing
    return [
        ("producer revenue (total)", tusd(summary.producer_revenue_total)),
        ("producer revenue (each)", ", ".join(tusd(units) for units in summary.producer_revenue) or "-"),
        ("revenue-value correlation (Pearson)", _ratio(correlation.pearson)),
        ("revenue-value correlation (Spearman)", _ratio(correlation.spearman)),
        ("Gini of producer revenue", _ratio(summary.gini_producer_revenue)),
        ("producer share of consumer spend", _percent(summary.producer_share)),
        ("consumer spend", tusd(summary.consumer_spend)),
        ("builder profit (total)", tusd(summary.builder_profit.total)),
        ("consumer surplus (total)", tusd(summary.consumer_surplus.total)),
        ("protocol fee", tusd(summary.protocol_fee)),
        ("answers correct", f"{summary.correct} / {summary.answered} ({_percent(summary.accuracy)})"),
        ("gas used / transactions", f"{summary.gas_used:,} / {summary.tx_count:,}"),
        ("wall time", f"{timing.wall_time:.1f} s"),
        ("on-chain actions per second", _ratio(timing.actions_per_second, 1)),
    ]


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """A Markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(cell).replace("|", "\\|") for cell in row) + " |" for row in rows]
    return lines


def _figures(images: Sequence[str | Path], out_dir: Path) -> list[str]:
    """Each image as a heading, its embed (path relative to the report) and its one-sentence caption."""
    lines: list[str] = []
    for image in images:
        path = Path(image)
        title, caption = FIGURE_CAPTIONS.get(path.name, (path.stem.replace("_", " ").capitalize(), ""))
        relative = Path(os.path.relpath(path.resolve(), out_dir.resolve())).as_posix()
        lines += [f"### {title}", "", f"![{title}]({relative})", ""]
        if caption:
            lines += [caption, ""]
    return lines


def write_report(
    result: RunResult,
    summary: RunMetrics,
    images: Sequence[str | Path],
    out_dir: str | Path,
    title: str | None = None,
) -> Path:
    """Write ``out_dir/report.md``: summary, producers and builders tables, then ``images`` with captions."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = title or result.scenario or "simulation"
    rules = sorted({b.rule for b in result.builders})
    lines = [
        f"# Simulation report: {name}",
        "",
        f"Chain: {result.chain.kind} (chain id {result.chain.chain_id}) · "
        f"rounds: {len(result.rounds)} · royalty rule: {', '.join(rules) or 'n/a'}. "
        "Amounts in tUSD.",
        "",
        "## Summary",
        "",
        *_table(["Metric", "Value"], summary_rows(summary)),
        "",
        "## Producers",
        "",
    ]
    producers = sorted(result.producers, key=lambda p: p.index)
    lines += _table(
        ["Producer", "Label noise", "Duplicate of", "Rows", "Revenue", "True value"],
        [
            [
                p.index, f"{p.label_noise:.2f}", "-" if p.duplicate_of is None else p.duplicate_of,
                p.rows, tusd(p.revenue), f"{p.true_value:.4f}",
            ]
            for p in producers
        ],
    )  # fmt: skip
    lines += ["", "## Builders", ""]
    builders = sorted(result.builders, key=lambda b: b.index)
    lines += _table(
        ["Builder", "Model", "Rule", "Spend", "Revenue", "Profit", "Test accuracy", "Parent shares (bps)"],
        [
            [
                b.index, b.model, b.rule, tusd(b.spend), tusd(b.revenue), tusd(b.profit), f"{b.accuracy:.3f}",
                ", ".join(f"{parent}: {share}" for parent, share in zip(b.parents, b.shares_bps, strict=False))
                or "-",
            ]
            for b in builders
        ],
    )  # fmt: skip
    lines += ["", "## Figures", "", *_figures(images, out)]
    path = out / "report.md"
    path.write_text("\n".join(lines).rstrip("\n") + "\n", encoding="utf-8")
    return path


#: Sweep table columns: (field of ``simulation.results.SweepMetrics``, header, formatter).
_SWEEP_COLUMNS: tuple[tuple[str, str, Callable[[Any], str]], ...] = (
    ("revenue_value_pearson", "Pearson r", _ratio),
    ("revenue_value_spearman", "Spearman rho", _ratio),
    ("gini_producer_revenue", "Gini", _ratio),
    ("producer_share", "Producer share", _percent),
    ("builder_profit_total", "Builder profit", tusd),
    ("consumer_surplus_total", "Consumer surplus", tusd),
    ("protocol_fee", "Protocol fee", tusd),
    ("accuracy", "Accuracy", _percent),
)


def write_sweep_report(
    rows: Sequence[SweepRow], images: Sequence[str | Path], out_dir: str | Path, title: str | None = None
) -> Path:
    """Write ``out_dir/report.md`` for a sweep: one table line per grid point, then ``images`` with captions."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = list(dict.fromkeys(key for row in rows for key in row.params))
    table_rows = []
    for row in rows:
        cells = [row.params.get(key, "") for key in params]
        for metric, _, fmt in _SWEEP_COLUMNS:
            value = getattr(row.metrics, metric)
            cells.append("n/a" if value is None else fmt(value))
        table_rows.append(cells)
    lines = [
        f"# Sweep report: {title or 'sweep'}",
        "",
        f"{len(rows)} grid points over {', '.join(params) or 'no parameters'}. Amounts in tUSD.",
        "",
        "## Grid",
        "",
        *_table([*params, *(header for _, header, _ in _SWEEP_COLUMNS)], table_rows),
        "",
        "## Figures",
        "",
        *_figures(images, out),
    ]
    path = out / "report.md"
    path.write_text("\n".join(lines).rstrip("\n") + "\n", encoding="utf-8")
    return path
