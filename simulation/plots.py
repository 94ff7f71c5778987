"""Figures of a run and of a sweep a paper can print: each as PNG (200 dpi), SVG and PDF side by side
(matplotlib, Agg canvas: no display needed).

Runs over seeds (``plot_seeded``) draw every metric's mean with its 95% interval as an error bar; a metric
undefined for a grid point is marked ``undefined`` on its bar's place, never drawn as 0. Layouts are
constrained (no overlapping labels; long tick labels are rotated); bar and revenue axes start at 0, and an
axis that does not show its whole natural range says so in its label. Builders' accuracy is named for what
it is: *validation* accuracy (on the builders' validation split), apart from the accuracy of the answers
consumers paid for (on held-out test rows).

Figures are built on ``matplotlib.figure.Figure`` with an Agg canvas, never through pyplot, so nothing
touches global state and plotting is safe in worker processes.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib
import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from marketplace.chain.units import UNIT
from simulation.metrics import lorenz
from simulation.results import Estimate, RunMetrics, RunResult, SeededMetrics, SweepRow, Undefined

#: File names ``plot_run`` writes, in order.
RUN_FIGURES = ("revenue_vs_quality.png", "lorenz.png", "money_flow.png", "rounds.png")
#: File names ``plot_sweep`` and ``plot_seeded`` write, in order.
SWEEP_FIGURES = ("sweep_distribution.png", "sweep_welfare.png")

_ORIGINAL, _DUPLICATE = "tab:blue", "tab:orange"
#: Most producers named next to their points (more would overlap: then the CSVs name them).
_MAX_NAMED = 12
_PARTY_COLOURS = {"consumers": "tab:green", "builders": "tab:purple", "producers": "tab:blue", "protocol": "tab:gray"}
#: Resolution of the PNG files (dots per inch; written in the PNG's pHYs chunk).
DPI = 200
#: Formats each figure is written in, beside each other (``name.png``, ``name.svg``, ``name.pdf``).
FORMATS = ("png", "svg", "pdf")
#: Metadata left out of each format, so the same figure gives the same bytes (no dates, no software version).
_METADATA = {"png": {"Software": None}, "svg": {"Date": None, "Creator": None},
             "pdf": {"CreationDate": None, "Creator": None, "Producer": None}}  # fmt: skip


def _figure(width: float, height: float) -> Figure:
    """A figure on an Agg canvas."""
    figure = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _save(figure: Figure, out_dir: Path, name: str) -> Path:
    """Write ``figure`` as ``out_dir/name`` (a ``.png`` name; PNG at :data:`DPI`) and beside it as SVG and PDF
    (:data:`FORMATS`), without timestamps; returns the PNG's path."""
    path = out_dir / name
    with matplotlib.rc_context({"svg.hashsalt": "agentmarket", "svg.fonttype": "none"}):
        for kind in FORMATS:
            figure.savefig(path.with_suffix(f".{kind}"), format=kind, dpi=DPI, metadata=_METADATA[kind])
    return path


def _readable_ticks(axis: Axes, labels: Sequence[str]) -> None:
    """Rotate x tick labels that would otherwise run into each other (long or many)."""
    if sum(len(label) for label in labels) > 40 or any(len(label) > 12 for label in labels):
        axis.tick_params(axis="x", labelrotation=30)
        for label in axis.get_xticklabels():
            label.set_horizontalalignment("right")
            label.set_rotation_mode("anchor")


def _tusd(units: float) -> float:
    """Base units as tUSD (for axes)."""
    return units / UNIT


def _rule(result: RunResult) -> str:
    """The royalty rule(s) of the run's builders, for titles."""
    rules = sorted({b.rule for b in result.builders})
    return ", ".join(rules) or "n/a"


# --------------------------------------------------------------------------------------------------
# One run


def plot_run(result: RunResult, summary: RunMetrics, out_dir: str | Path) -> list[Path]:
    """Write the run's figures (``RUN_FIGURES``) into ``out_dir``; returns their paths in that order."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [
        _revenue_vs_quality(result, summary, out),
        _lorenz(summary, out),
        _money_flow(result, summary, out),
        _rounds(result, out),
    ]


def _revenue_vs_quality(result: RunResult, summary: RunMetrics, out: Path) -> Path:
    """Producer revenue against label noise and against true value; duplicating producers marked."""
    producers = sorted(result.producers, key=lambda p: p.index)
    figure = _figure(10, 4.2)
    axes = figure.subplots(1, 2, sharey=True)
    correlation = summary.revenue_value_correlation
    top = max((_tusd(p.revenue) for p in producers), default=0.0) or 1.0
    spans = {id(axes[0]): float(np.ptp([p.label_noise for p in producers])) if producers else 0.0,
             id(axes[1]): float(np.ptp([p.true_value for p in producers])) if producers else 0.0}  # fmt: skip
    spans = {key: span or 1.0 for key, span in spans.items()}
    for axis, quality, label in (
        (axes[0], lambda p: p.label_noise, "label noise (fraction of labels flipped)"),
        (axes[1], lambda p: p.true_value, "ground-truth value (base units: exact Shapley split of royalties)"),
    ):
        for duplicate, colour, marker in ((False, _ORIGINAL, "o"), (True, _DUPLICATE, "X")):
            chosen = [p for p in producers if (p.duplicate_of is not None) == duplicate]
            if not chosen:
                continue
            axis.scatter(
                [float(quality(p)) for p in chosen], [_tusd(p.revenue) for p in chosen],
                c=colour, marker=marker, s=60, label="resells duplicates" if duplicate else "original data",
            )  # fmt: skip
            # producers within 2% of the axes' ranges of each other share one label
            at: dict[tuple[int, int], tuple[tuple[float, float], list[str]]] = {}
            for p in chosen if len(producers) <= _MAX_NAMED else ():  # names of many points would overlap
                text = f"P{p.index}" + (f"←P{p.duplicate_of}" if duplicate else "")
                point = (float(quality(p)), _tusd(p.revenue))
                key = (round(point[0] / spans[id(axis)] * 50), round(point[1] / top * 50))
                at.setdefault(key, (point, []))[1].append(text)
            for point, names in at.values():
                axis.annotate(", ".join(names), point, textcoords="offset points", xytext=(5, 4), fontsize="small")
        axis.set_xlabel(label)
        axis.margins(x=0.1)
        axis.grid(alpha=0.3)
    axes[0].set_ylim(0, top * 1.15)  # from 0, with room for the names above the points
    axes[0].set_ylabel("producer revenue (tUSD)")
    axes[0].legend(loc="best", fontsize="small")
    pearson, spearman = correlation.pearson, correlation.spearman
    figure.suptitle(
        f"Revenue vs. data quality — rule: {_rule(result)}\n"
        f"revenue-value correlation: Pearson {_number(pearson)}, Spearman {_number(spearman)}",
        fontsize="medium",
    )
    return _save(figure, out, "revenue_vs_quality.png")


def _number(value: float | Undefined | None) -> str:
    """Two decimals, or ``undefined`` / n/a."""
    if isinstance(value, Undefined):
        return "undefined"
    return "n/a" if value is None else f"{value:.2f}"


def _lorenz(summary: RunMetrics, out: Path) -> Path:
    """Lorenz curve of producer revenue against the line of equality."""
    figure = _figure(5, 5)
    axis = figure.subplots()
    revenue = summary.producer_revenue
    if revenue:
        x, y = lorenz(revenue)
        axis.plot(x, y, marker="o", color=_ORIGINAL, label="producer revenue")
        axis.fill_between(x, y, x, color=_ORIGINAL, alpha=0.15)
    axis.plot([0, 1], [0, 1], linestyle="--", color="gray", label="perfect equality")
    axis.set_xlim(0, 1)
    axis.set_ylim(0, 1)
    axis.set_xlabel("share of producers (poorest first)")
    axis.set_ylabel("share of producer revenue")
    axis.set_title(f"Lorenz curve — Gini {_number(summary.gini_producer_revenue)}")
    axis.legend(loc="upper left", fontsize="small")
    axis.grid(alpha=0.3)
    return _save(figure, out, "lorenz.png")


def _money_flow(result: RunResult, summary: RunMetrics, out: Path) -> Path:
    """Stacked bars for each stage of the money path: consumers → builders → producers → protocol fee."""
    producers, builders = result.producers, result.builders
    producer_total = sum(p.revenue for p in producers)
    royalty_revenue = [p.royalty_revenue for p in producers]
    if producers and None not in royalty_revenue:
        royalties = sum(r for r in royalty_revenue if r is not None)
        producer_parts = [("royalties", royalties), ("license sales", producer_total - royalties)]
    else:
        producer_parts = [("revenue", producer_total)]
    stages: list[tuple[str, str, list[tuple[str, int]]]] = [
        ("consumers\npaid", "consumers", [("model calls", summary.consumer_spend)]),
        ("builders\nearned", "builders", [("model revenue", sum(b.revenue for b in builders))]),
        ("builders\nspent", "builders", [("data licenses", sum(b.spend for b in builders))]),
        ("producers\nearned", "producers", producer_parts),
        ("protocol\nfee", "protocol", [("fee", summary.protocol_fee)]),
    ]
    figure = _figure(9, 4.5)
    axis = figure.subplots()
    for position, (_, party, parts) in enumerate(stages):
        bottom = 0.0
        for part_index, (part, amount) in enumerate(parts):
            height = _tusd(amount)
            axis.bar(
                position, height, bottom=bottom, color=_PARTY_COLOURS[party], alpha=1.0 - 0.35 * part_index,
                edgecolor="black", linewidth=0.5,
            )  # fmt: skip
            if height > 0 and len(parts) > 1:
                axis.text(position, bottom + height / 2, part, ha="center", va="center", fontsize="x-small")
            bottom += height
        axis.text(position, bottom, f"{bottom:.2f}", ha="center", va="bottom", fontsize="small")
    axis.set_xticks(range(len(stages)), [label for label, _, _ in stages])
    axis.set_ylabel("tUSD")
    axis.set_title("Money flow: consumers → builders → producers → protocol fee")
    axis.grid(axis="y", alpha=0.3)
    return _save(figure, out, "money_flow.png")


def _rounds(result: RunResult, out: Path) -> Path:
    """Consumer spend and answer accuracy per round; builders' test accuracy for reference."""
    rounds = sorted(result.rounds, key=lambda r: r.round)
    numbers = [r.round for r in rounds]
    figure = _figure(10, 4)
    spend_axis, accuracy_axis = figure.subplots(1, 2)
    spend_axis.bar(numbers, [_tusd(r.consumer_spend) for r in rounds], color=_PARTY_COLOURS["consumers"])
    spend_axis.set_xlabel("round")
    spend_axis.set_ylabel("consumer spend (tUSD)")
    spend_axis.set_title("Consumer spend per round")
    accuracy = [r.correct / r.answered if r.answered else math.nan for r in rounds]
    accuracy_axis.plot(numbers, accuracy, marker="o", color="black", label="paid answers correct (test rows)")
    for builder in sorted(result.builders, key=lambda b: b.index):
        accuracy_axis.axhline(
            builder.accuracy, linestyle=":", color=f"C{builder.index % 10}",
            label=f"builder {builder.index} ({builder.model}) validation accuracy",
        )  # fmt: skip
    accuracy_axis.set_ylim(0, 1.05)
    accuracy_axis.set_xlabel("round")
    accuracy_axis.set_ylabel("fraction correct")
    accuracy_axis.set_title("Accuracy of paid answers per round")
    accuracy_axis.legend(loc="lower right", fontsize="x-small")
    for axis in (spend_axis, accuracy_axis):
        axis.grid(alpha=0.3)
        if 0 < len(numbers) <= 20:
            axis.set_xticks(numbers)
        else:  # many rounds: integer ticks chosen by matplotlib, not one label per round
            axis.xaxis.set_major_locator(MaxNLocator(integer=True))
    return _save(figure, out, "rounds.png")


# --------------------------------------------------------------------------------------------------
# Sweeps


#: A bar: (mean, low, high) of a metric at a grid point (low == high: no error bar), ``Undefined``, or None
#: where the grid has no such point.
Bar = tuple[float, float, float] | Undefined | None

#: Panels of the two sweep figures: (field of ``SweepMetrics``, title, scale).
_DISTRIBUTION_PANELS = (
    ("revenue_value_pearson", "revenue-value correlation (Pearson)", 1.0),
    ("revenue_value_spearman", "revenue-value correlation (Spearman)", 1.0),
    ("gini_producer_revenue", "Gini of producer revenue", 1.0),
    ("producer_share", "producer revenue / all spend (licenses + calls)", 1.0),
)
_WELFARE_PANELS = (
    ("builder_profit_total", "builder profit (tUSD)", UNIT),
    ("consumer_surplus_total", "consumer surplus (tUSD)", UNIT),
    ("protocol_fee", "protocol fee (tUSD)", UNIT),
    ("accuracy", "accuracy of paid answers (held-out test rows)", 1.0),
)


def _swept_keys(params: Sequence[dict[str, str]]) -> list[str]:
    """The parameters that take more than one value across the grid, in first-seen order (a parameter fixed for
    every point says nothing on an axis); the first parameter when none varies."""
    keys = list(dict.fromkeys(key for point in params for key in point))
    varying = [key for key in keys if len({point.get(key) for point in params}) > 1]
    return varying or keys[:1]


def _axes(params: Sequence[dict[str, str]]) -> tuple[list[str], list[str], list[tuple[str, str]]]:
    """x labels (first swept parameter's values), series labels (the other swept parameters) and each point's
    (x, series); see :func:`_swept_keys`."""
    keys = _swept_keys(params)
    primary, others = (keys[0], keys[1:]) if keys else (None, [])
    xs: list[str] = []
    series: list[str] = []
    places = []
    for point in params:
        x = f"{point.get(primary)}" if primary else "run"
        name = ", ".join(f"{key}={point.get(key)}" for key in others) or "all"
        if x not in xs:
            xs.append(x)
        if name not in series:
            series.append(name)
        places.append((x, name))
    return xs, series, places


def _mean_bar(values: list[float | int | Undefined]) -> Bar:
    """The mean of repeated grid points' values (no error bar); ``Undefined`` when none is defined."""
    present = [float(v) for v in values if not isinstance(v, Undefined)]
    if present:
        mean = float(np.mean(present))
        return mean, mean, mean
    reasons = [v for v in values if isinstance(v, Undefined)]
    return reasons[0] if reasons else None


def _estimate_bar(summary: Estimate | Undefined) -> Bar:
    """An estimate's mean and interval."""
    return summary if isinstance(summary, Undefined) else (summary.mean, summary.low, summary.high)


def _grouped_bars(
    figure: Figure,
    params: Sequence[dict[str, str]],
    bar: Callable[[int, str], Bar],
    panels: Sequence[tuple[str, str, float]],
    xlabel: str,
) -> None:
    """One panel per ``(metric, title, scale)``: grouped bars, x = first parameter, one bar per series; a bar's
    height is ``bar(point index, metric)``'s mean, its error bar the interval, ``undefined`` written in place."""
    xs, series, places = _axes(params)
    columns = 2
    axes = figure.subplots(math.ceil(len(panels) / columns), columns, squeeze=False).ravel()
    width = 0.8 / max(len(series), 1)
    labelled: set[str] = set()  # each series named once in the legend (of the first panel)
    for axis, (metric, title, scale) in zip(axes, panels, strict=False):
        bounded = metric.startswith("revenue_value_")  # correlations: the axis is their whole range, -1 to 1
        clipped = False
        for index, name in enumerate(series):
            for x_index, x in enumerate(xs):
                position = x_index + (index - (len(series) - 1) / 2) * width
                bars = [bar(point, metric) for point, place in enumerate(places) if place == (x, name)]
                means = [b if isinstance(b, Undefined) else b[0] for b in bars if b is not None]
                value = bars[0] if len(bars) == 1 else _mean_bar(means)  # repeated grid points: averaged
                if value is None:
                    continue
                if isinstance(value, Undefined):
                    axis.text(position, 0, "undefined", ha="center", va="bottom", fontsize="x-small", rotation=90)
                    continue
                mean, low, high = (v / scale for v in value)
                if bounded and (low < -1 or high > 1):  # an interval past the range is cut there, and said so
                    low, high, clipped = max(low, -1.0), min(high, 1.0), True
                errors = [[mean - low], [high - mean]] if high > low else None
                axis.bar(position, mean, width=width, color=f"C{index % 10}", yerr=errors, capsize=3,
                         label=None if name in labelled else name)  # fmt: skip
                labelled.add(name)
        axis.axhline(0, color="black", linewidth=0.5)
        axis.set_xticks(range(len(xs)), xs, fontsize="small")
        _readable_ticks(axis, xs)
        axis.set_xlabel(xlabel)
        axis.set_title(title + ("\n(intervals cut at ±1)" if clipped else ""), fontsize="medium")
        if bounded:
            axis.set_ylim(-1.05, 1.05)
        axis.grid(axis="y", alpha=0.3)
    for axis in axes[len(panels) :]:
        axis.set_visible(False)
    if len(series) > 1:
        figure.legend(fontsize="x-small", loc="outside lower center", ncols=min(len(series), 4))


def _two_figures(params: Sequence[dict[str, str]], bar: Callable[[int, str], Bar], out: Path, note: str) -> list[Path]:
    """The distribution and welfare figures (``SWEEP_FIGURES``)."""
    keys = _swept_keys(params)
    xlabel = keys[0] if keys else ""
    distribution = _figure(10, 7)
    _grouped_bars(distribution, params, bar, _DISTRIBUTION_PANELS, xlabel)
    distribution.suptitle("How value reaches producers, per grid point" + note)
    welfare = _figure(10, 7)
    _grouped_bars(welfare, params, bar, _WELFARE_PANELS, xlabel)
    welfare.suptitle("Who gains, per grid point" + note)
    return [_save(distribution, out, SWEEP_FIGURES[0]), _save(welfare, out, SWEEP_FIGURES[1])]


def plot_sweep(rows: Sequence[SweepRow], out_dir: str | Path) -> list[Path]:
    """Write comparison figures (``SWEEP_FIGURES``) across a sweep's grid; ``rows`` come from ``sweep_row``.

    The first swept parameter is the x axis; the other parameters' combinations are bar groups; grid
    points with the same parameters (repeated seeds) are averaged.
    """
    if not rows:
        raise ValueError("a sweep needs at least one row to plot")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def bar(point: int, metric: str) -> Bar:
        return _mean_bar([getattr(rows[point].metrics, metric)])

    return _two_figures([row.params for row in rows], bar, out, "")


def plot_seeded(points: Sequence[SeededMetrics], out_dir: str | Path) -> list[Path]:
    """Write the sweep figures (``SWEEP_FIGURES``) for grid points run over seeds: each bar the metric's mean
    over the seeds, its error bar the 95% Student-t interval; ``undefined`` written where a metric has none."""
    if not points:
        raise ValueError("a sweep needs at least one grid point to plot")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    def bar(point: int, metric: str) -> Bar:
        return _estimate_bar(points[point].estimates[metric])

    seeds = points[0].seeds
    note = f" (mean over seeds {seeds[0]} to {seeds[-1]}, 95% interval)"
    return _two_figures([point.params for point in points], bar, out, note)


def grid_labels(rows: Sequence[SweepRow]) -> list[str]:
    """``key=value, ...`` for each row's parameters (stable order), e.g. for tables."""
    return [", ".join(f"{k}={v}" for k, v in row.params.items()) or "run" for row in rows]
