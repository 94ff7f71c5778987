"""Markdown reports of a run and of a sweep: a one-screen summary table, then the figures, each explained.

``summary_rows`` gives the same summary as (label, value) pairs, for a terminal table. Over seeds
(``write_seeded_report``) every metric is its mean with the 95% Student-t interval over the seeds, and each
grid point is compared with the first by the paired per-seed difference and its interval, said in words:
``within noise`` when the interval contains 0. An undefined metric reads ``undefined (reason)``.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from marketplace.chain.units import format_units
from simulation.metrics import SWEEP_METRICS
from simulation.results import Comparison, Estimate, RunMetrics, RunResult, SeededMetrics, Summary, SweepRow, Undefined

#: The headline metric over seeds and its label: how far each rule's royalty splits were from the exact
#: Shapley shares (``simulation.metrics.truth_distance``).
HEADLINE = "truth_distance"
HEADLINE_LABEL = "distance of royalty splits from ground-truth shares"

#: Title and one-sentence explanation of each figure, by file name.
FIGURE_CAPTIONS: dict[str, tuple[str, str]] = {
    "revenue_vs_quality.png": (
        "Revenue vs. data quality",
        "Each producer's revenue against its label-noise rate (left) and its data's ground-truth value "
        "(right: what exact Shapley splits of every model's royalty pool would have paid it); crosses mark "
        "producers that resell another producer's rows.",
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
        "Consumer spend per round (left) and the fraction of paid answers that were correct (held-out test "
        "rows), next to each builder's validation accuracy (on its validation split; right).",
    ),
    "sweep_distribution.png": (
        "How value reaches producers",
        "Per grid point: correlation between producer revenue and true data value, Gini of producer revenue, "
        "and producer revenue (license sales and royalties) as a share of everything spent in the market. "
        "Over seeds: bars are means, error bars 95% Student-t intervals.",
    ),
    "sweep_welfare.png": (
        "Who gains",
        "Per grid point: total builder profit, consumer surplus, protocol fees and answer accuracy. "
        "Over seeds: bars are means, error bars 95% Student-t intervals.",
    ),
}


def tusd(units: int) -> str:
    """Base units as a short tUSD string: at least two decimals, no trailing zeros beyond them."""
    text = format_units(int(units))
    whole, fraction = text.split(".")
    return f"{whole}.{fraction.rstrip('0').ljust(2, '0')}"


def undefined(value: Undefined) -> str:
    """``undefined (reason)``."""
    return f"undefined ({value.reason})"


def _ratio(value: float | Undefined | None, digits: int = 3) -> str:
    """A float with ``digits`` decimals, ``undefined (reason)``, or n/a."""
    if isinstance(value, Undefined):
        return undefined(value)
    return "n/a" if value is None else f"{value:.{digits}f}"


def _percent(value: float | Undefined | None) -> str:
    """A fraction as a percentage, ``undefined (reason)``, or n/a."""
    if isinstance(value, Undefined):
        return undefined(value)
    return "n/a" if value is None else f"{100 * value:.1f}%"


def summary_rows(summary: RunMetrics) -> list[tuple[str, str]]:
    """The run's headline figures as ``(label, value)`` pairs, amounts in tUSD."""
    correlation = summary.revenue_value_correlation
    timing = summary.timing
    royalty = summary.royalty_value_correlation
    defective = summary.defective
    return [
        (f"{HEADLINE_LABEL} (headline, lower is better)", _ratio(summary.truth_distance)),
        ("royalty-value correlation (Pearson)", _ratio(royalty.pearson)),
        ("royalty-value correlation (Spearman)", _ratio(royalty.spearman)),
        ("royalty share reaching noisy or copied data", _percent(defective.royalty)),
        ("  their ground-truth share", _percent(defective.truth)),
        ("producer revenue (total)", tusd(summary.producer_revenue_total)),
        ("producer revenue (each)", ", ".join(tusd(units) for units in summary.producer_revenue) or "-"),
        ("revenue-value correlation (Pearson)", _ratio(correlation.pearson)),
        ("revenue-value correlation (Spearman)", _ratio(correlation.spearman)),
        ("Gini of producer revenue", _ratio(summary.gini_producer_revenue)),
        ("producer share of all spend", _percent(summary.producer_share.total)),
        ("  of which license sales", _percent(summary.producer_share.license)),
        ("  of which royalties", _percent(summary.producer_share.royalty)),
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
        ["Producer", "Label noise", "Duplicate of", "Rows", "Revenue", "Royalties", "Ground-truth value"],
        [
            [
                p.index, f"{p.label_noise:.2f}", "-" if p.duplicate_of is None else p.duplicate_of,
                p.rows, tusd(p.revenue), "-" if p.royalty_revenue is None else tusd(p.royalty_revenue),
                tusd(round(p.true_value)),
            ]
            for p in producers
        ],
    )  # fmt: skip
    lines += ["", "## Builders", ""]
    builders = sorted(result.builders, key=lambda b: b.index)
    lines += _table(
        ["Builder", "Model", "Rule", "Spend", "Revenue", "Profit", "Validation accuracy", "Parent shares (bps)"],
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
    ("truth_distance", "Distance from truth", _ratio),
    ("royalty_value_pearson", "Royalty-value r", _ratio),
    ("defective_excess", "Excess to noisy/copied", _percent),
    ("revenue_value_pearson", "Pearson r", _ratio),
    ("revenue_value_spearman", "Spearman rho", _ratio),
    ("gini_producer_revenue", "Gini", _ratio),
    ("producer_share", "Producer share", _percent),
    ("producer_share_license", "of it licenses", _percent),
    ("producer_share_royalty", "of it royalties", _percent),
    ("builder_profit_total", "Builder profit", tusd),
    ("consumer_surplus_total", "Consumer surplus", tusd),
    ("protocol_fee", "Protocol fee", tusd),
    ("accuracy", "Answer accuracy", _percent),
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
            cells.append(undefined(value) if isinstance(value, Undefined) else fmt(value))
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


# --------------------------------------------------------------------------------------------------
# Over seeds

#: Every metric of ``SWEEP_METRICS``: its label and how its values read (``ratio``, ``percent``, ``tusd``, ``count``).
METRIC_LABELS: dict[str, tuple[str, str]] = {
    "truth_distance": (HEADLINE_LABEL, "ratio"),
    "royalty_value_pearson": ("royalty-value correlation (Pearson)", "ratio"),
    "royalty_value_spearman": ("royalty-value correlation (Spearman)", "ratio"),
    "defective_royalty_share": ("royalty share reaching noisy or copied data", "percent"),
    "defective_truth_share": ("  their ground-truth share", "percent"),
    "defective_excess": ("  excess over their ground-truth share", "percent"),
    "revenue_value_pearson": ("revenue-value correlation (Pearson)", "ratio"),
    "revenue_value_spearman": ("revenue-value correlation (Spearman)", "ratio"),
    "gini_producer_revenue": ("Gini of producer revenue", "ratio"),
    "producer_share": ("producer share of all spend", "percent"),
    "producer_share_license": ("  of which license sales", "percent"),
    "producer_share_royalty": ("  of which royalties", "percent"),
    "producer_revenue_total": ("producer revenue (total, tUSD)", "tusd"),
    "builder_profit_total": ("builder profit (total, tUSD)", "tusd"),
    "consumer_surplus_total": ("consumer surplus (total, tUSD)", "tusd"),
    "protocol_fee": ("protocol fee (tUSD)", "tusd"),
    "consumer_spend": ("consumer spend (tUSD)", "tusd"),
    "accuracy": ("answer accuracy", "percent"),
    "gas_used": ("gas used", "count"),
    "tx_count": ("transactions", "count"),
}
assert set(METRIC_LABELS) == set(SWEEP_METRICS), "every sweep metric needs a label"


def _number(value: float, kind: str, signed: bool = False) -> str:
    """``value`` as its kind reads: 3 decimals, a percentage (points for a difference), tUSD, or a count; a
    value that is not 0 but would round to it shows two significant digits instead (``-1.2e-05 pp``)."""
    sign = "+" if signed else ""
    scaled, unit, digits = {
        "percent": (100 * value, " pp" if signed else "%", ".1f"),
        "tusd": (value / 10**6, "", ",.2f"),
        "count": (value, "", ",.0f"),
    }.get(kind, (value, "", ".3f"))
    text = f"{scaled:{sign}{digits}}"
    if scaled != 0 and float(text.replace(",", "")) == 0:
        text = f"{scaled:{sign}.2g}"
    return text + unit


def estimate_text(summary: Summary, kind: str = "ratio", signed: bool = False) -> str:
    """``mean [low, high]`` in the metric's units (``kind`` as in ``METRIC_LABELS``), or ``undefined (reason)``."""
    if isinstance(summary, Undefined):
        return undefined(summary)
    if signed and summary.low == summary.high == 0:
        return "0"
    if summary.low == summary.high:
        return f"{_number(summary.mean, kind, signed)} (the same in every seed)"
    return (
        f"{_number(summary.mean, kind, signed)} [{_number(summary.low, kind, signed)}, "
        f"{_number(summary.high, kind, signed)}]"
    )


def verdict(comparison: Comparison) -> str:
    """The comparison in words: ``higher`` / ``lower`` (the interval excludes 0), ``within noise (the interval
    contains 0)``, ``no difference (0 in every seed)``, or ``no verdict`` (the difference is undefined;
    ``estimate_text`` says why)."""
    difference = comparison.difference
    if isinstance(difference, Undefined):
        return "no verdict"
    if difference.low == difference.high == 0:
        return "no difference (0 in every seed)"
    if difference.contains(0.0):
        return "within noise (the interval contains 0)"
    return "higher" if difference.mean > 0 else "lower"


def _label(params: dict[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in params.items()) or "run"


def point_names(points: list[SeededMetrics]) -> list[str]:
    """``point N (key=value, …)`` for each grid point, naming only the parameters that vary across the grid."""
    keys = list(dict.fromkeys(k for point in points for k in point.params))
    varying = [k for k in keys if len({point.params.get(k) for point in points}) > 1]
    names = []
    for number, point in enumerate(points, start=1):
        label = ", ".join(f"{k}={point.params.get(k)}" for k in varying)
        names.append(f"point {number}" + (f" ({label})" if label else ""))
    return names


def comparison_sentences(comparisons: Sequence[Comparison]) -> list[str]:
    """One sentence per comparison: ``point vs reference: metric differs by d [low, high] — verdict``."""
    lines = []
    for comparison in comparisons:
        label, kind = METRIC_LABELS[comparison.metric]
        seeds = f", {comparison.difference.n} paired seeds" if isinstance(comparison.difference, Estimate) else ""
        head = f"{_label(comparison.point)} vs {_label(comparison.reference)}: {label.strip()}"
        if isinstance(comparison.difference, Undefined):
            lines.append(f"{head}: no verdict, {undefined(comparison.difference)}.")
            continue
        difference = estimate_text(comparison.difference, kind, signed=True)
        lines.append(f"{head} differs by {difference}{seeds}: {verdict(comparison)}.")
    return lines


def headline_lines(
    points: Sequence[SeededMetrics], comparisons: Sequence[Comparison], names: Sequence[str]
) -> list[str]:
    """The report's headline section: what the headline metric (:data:`HEADLINE`) measures, its estimate at
    every grid point, and each point's paired comparison with the first in words (``within noise`` when the
    interval contains 0)."""
    lines = [
        f"## Headline: {HEADLINE_LABEL}",
        "",
        "For every model that pays royalties, the total-variation distance between the royalty shares its rule "
        "set on chain and its parents' exact Shapley shares on the test set (the accuracy of the builder's model "
        "type trained on each coalition of its parents; `simulation.groundtruth`), averaged over models weighted "
        "by the royalty each owed: 0 means every rule paid exactly the ground-truth shares, 1 disjoint shares. "
        "Lower is better.",
        "",
    ]
    lines += [
        f"- {name}: {estimate_text(point.estimates[HEADLINE])}" for name, point in zip(names, points, strict=True)
    ]
    by_point = {tuple(sorted(point.params.items())): name for name, point in zip(names, points, strict=True)}
    chosen = [c for c in comparisons if c.metric == HEADLINE]
    if chosen:
        lines += ["", "Paired over the same seeds, each point against the first (point minus reference):", ""]
    for comparison in chosen:
        point, reference = (by_point.get(tuple(sorted(p.items())), _label(p))
                            for p in (comparison.point, comparison.reference))  # fmt: skip
        difference = comparison.difference
        if isinstance(difference, Undefined):
            lines.append(f"- {point} vs {reference}: no verdict, {undefined(difference)}.")
        else:
            lines.append(f"- {point} vs {reference}: {estimate_text(difference, 'ratio', signed=True)} "
                         f"({difference.n} paired seeds): {verdict(comparison)}.")  # fmt: skip
    return [*lines, ""]


def write_seeded_report(
    points: Sequence[SeededMetrics],
    comparisons: Sequence[Comparison],
    images: Sequence[str | Path],
    out_dir: str | Path,
    title: str | None = None,
) -> Path:
    """Write ``out_dir/report.md`` for grid points run over seeds: every metric as mean [95% interval] per point,
    then each point against the first (paired per-seed differences, with a verdict in words), then ``images``."""
    if not points:
        raise ValueError("a report over seeds needs at least one grid point")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seeds = points[0].seeds
    names = point_names(points)
    header = ["Metric", *names]
    rows = [
        [label, *(estimate_text(point.estimates[name], kind) for point in points)]
        for name, (label, kind) in METRIC_LABELS.items()
    ]
    lines = [
        f"# Report over seeds: {title or 'simulation'}",
        "",
        f"{len(points)} grid point{'s' if len(points) > 1 else ''}, each run with seeds {seeds[0]} to {seeds[-1]} "
        f"(n = {len(seeds)}). Each metric is its mean over the seeds with the 95% Student-t interval of that mean "
        "in brackets (mean ± t(0.975, n - 1) · sd / √n); a seed where a metric is undefined is left out of it and "
        "n in `metrics.json` says how many remained. Amounts in tUSD; per-seed figures in `seeds.csv`.",
        "",
        *_table(["Grid point", "Parameters"], [[n, _label(p.params)] for n, p in zip(names, points, strict=True)]),
        "",
        "## Metrics",
        "",
        *_table(header, rows),
        "",
    ]
    lines += headline_lines(points, comparisons, names)
    if comparisons:
        reference = names[0]
        lines += [
            f"## Compared with {reference}",
            "",
            "Each grid point against the first, seed by seed (the same seeds under both): the mean per-seed "
            "difference (point minus reference) with its 95% Student-t interval. A difference whose interval "
            "contains 0 is within noise: these seeds cannot tell the two apart.",
            "",
        ]
        each = len(comparisons) // max(len(points) - 1, 1)  # compare_points: point by point, metrics in order
        for number in range(len(points) - 1):
            chosen = comparisons[number * each : (number + 1) * each]
            lines += [f"### {names[number + 1]} vs {reference}", ""]
            lines += _table(
                ["Metric", "Difference [95% interval]", "Verdict"],
                [
                    [METRIC_LABELS[c.metric][0].strip(),
                     estimate_text(c.difference, METRIC_LABELS[c.metric][1], signed=True), verdict(c)]
                    for c in chosen
                ],
            )  # fmt: skip
            lines.append("")
    lines += ["## Figures", "", *_figures(images, out)]
    path = out / "report.md"
    path.write_text("\n".join(lines).rstrip("\n") + "\n", encoding="utf-8")
    return path
