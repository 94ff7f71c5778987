"""The study: which royalty rule pays producers in line with their data's value, and how robust is it?

One command (``agentmarket study``) runs three seeded sweeps over royalty rules, the same seeds under every
rule, and answers with numbers and 95% intervals:

- **noisy data** (``noisy-producers``): how far each rule's royalty splits are from the ground truth
  (``truth_distance``, ``simulation.groundtruth``: exact Shapley shares), how much more of the royalties the
  noisy producers received than their ground-truth share (``defective.excess``), and what each rule costs the
  builders and consumers (profit and surplus: builders react to royalties when they choose data and price);
- **copying** (``free-riders``): what a copier earns in royalties per unit its original earns (1 = copying
  pays as much as producing the data; 0 = it pays nothing), without and with ``royalty.provenance``;
- **Sybil splitting** (``sybil``): what an owner earns after splitting its data across identities over what it
  earns unsplit, same seed (1 = splitting does not pay), under ``flat`` and ``per_row`` license pricing.

Every figure is computed per seed from the runs' own ``result.json`` and ``metrics.json`` (so it reconciles
with the chain to the unit, as every run does), then estimated over the seeds with
``simulation.metrics.estimate`` (mean, 95% Student-t interval), and every rule is compared seed by seed with
the reference rule (the first): a paired difference with its interval, "within noise" when it contains 0.

Writes, into the study folder: one sweep folder per question (each a full seeded sweep), ``study.json``,
``study.csv`` (question, rule, measure, mean, low, high, n), ``study.md`` (the answer in sentences) and the
figure ``study.png`` (with ``.svg`` and ``.pdf`` beside it).
"""

from __future__ import annotations

import csv
import json
import textwrap
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from simulation.metrics import estimate
from simulation.results import Estimate, Summary, Undefined, Value
from simulation.runner import point_dir, seed_list, sweep_seeds
from simulation.scenario import Scenario, ScenarioError, load_scenario, parse_sweep, sweep_scenarios

#: The royalty rules a study compares by default; the first is the reference of every paired comparison.
STUDY_RULES: tuple[str, ...] = ("equal", "leave_one_out", "knn_shapley", "mc_shapley", "banzhaf", "beta_shapley")

#: How many identities the split owner of the Sybil question uses (against 1, its unsplit control).
SYBIL_IDENTITIES = 3

#: The license pricing mechanisms the Sybil question compares (``producers.pricing``).
SYBIL_PRICING: tuple[str, ...] = ("flat", "per_row")

#: Runs per rule and seed: noisy (1), copying with provenance off and on (2), Sybil split and control under
#: each pricing mechanism (2 x ``SYBIL_PRICING``).
RUNS_PER_RULE_AND_SEED = 3 + 2 * len(SYBIL_PRICING)

UNIT = 1_000_000  # base units per tUSD


@dataclass(frozen=True)
class Measure:
    """One figure of the study, per rule: ``name`` (a ``study.csv`` value), a label, the question it answers,
    the value that means "no effect" (drawn as a line; None: none) and the estimate for each rule."""

    question: str
    name: str
    label: str
    neutral: float | None
    by_rule: dict[str, Summary]
    per_seed: dict[str, list[Value]]


def _field(data: dict[str, Any], dotted: str) -> Value:
    """``metrics.json``'s value at ``dotted`` (``a.b``), ``Undefined`` where the run wrote one."""
    value: Any = data
    for part in dotted.split("."):
        value = value[part]
    if isinstance(value, dict) and "undefined" in value:
        return Undefined(value["undefined"])
    return value


def copier_ratio(result: dict[str, Any]) -> Value:
    """Royalties the copiers received over the royalties of the producers they copy (1 = copying pays as much)."""
    producers = result["producers"]
    copied = {p["duplicate_of"] for p in producers if p.get("duplicate_of") is not None}
    originals = sum(p.get("royalty_revenue", 0) for p in producers if p["index"] in copied)
    if originals <= 0:
        return Undefined("the copied producers received no royalty")
    return sum(p.get("royalty_revenue", 0) for p in producers if p.get("duplicate_of") is not None) / originals


def split_owner_revenue(result: dict[str, Any]) -> int:
    """Everything the split owner's identities earned (base units)."""
    owner = result["split_owner"]
    return sum(p["revenue"] for p in result["producers"] if p.get("owner", p["index"]) == owner)


#: The study's sweeps: question -> (scenario, folder, grid beyond the rules).
_IDENTITIES = "producers.split.identities"
SWEEPS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "noisy": ("noisy-producers", "noisy-producers", ()),
    "copying": ("free-riders", "free-riders", ("royalty.provenance=false,true",)),
    "sybil": ("sybil", "sybil", (f"producers.pricing={','.join(SYBIL_PRICING)}",
                                  f"{_IDENTITIES}=1,{SYBIL_IDENTITIES}")),
}  # fmt: skip


def _grid(question: str, rules: Sequence[str]) -> list[str]:
    """The ``--param`` grid of ``question``'s sweep: its own parameters, then the rules."""
    return [*SWEEPS[question][2], f"royalty.rule={','.join(rules)}"]


def _runs(out_dir: Path, question: str, rules: Sequence[str], seeds: Sequence[int], overrides: dict[str, str],
          file: str) -> list[dict[str, Any]]:  # fmt: skip
    """Every seed's ``file`` (JSON) of the grid point ``overrides`` of ``question``'s sweep, in seed order."""
    grid = parse_sweep(_grid(question, rules))
    folder = out_dir / SWEEPS[question][1] / point_dir(grid.index(overrides) + 1, overrides)
    return [json.loads((folder / f"seed-{seed}" / file).read_text()) for seed in seeds]


def _measure(question: str, name: str, label: str, neutral: float | None, rules: Sequence[str],
             values: Callable[[str], list[Value]]) -> Measure:  # fmt: skip
    per_seed = {rule: values(rule) for rule in rules}
    return Measure(question, name, label, neutral, {rule: estimate(v) for rule, v in per_seed.items()}, per_seed)


def _paired(measure: Measure, rule: str, reference: str) -> Summary:
    """``rule`` minus ``reference`` on ``measure``, seed by seed."""
    diffs: list[Value] = []
    for a, b in zip(measure.per_seed[rule], measure.per_seed[reference], strict=True):
        diffs.append(a if isinstance(a, Undefined) else b if isinstance(b, Undefined) else float(a) - float(b))
    return estimate(diffs)


def run_study(
    out_dir: Path,
    *,
    seeds: int = 10,
    first_seed: int = 7,
    rules: Sequence[str] = STUDY_RULES,
    workers: int = 1,
    chain_target: str = "embedded",
    overrides: Sequence[str] = (),
    on_run: Callable[[Any], None] | None = None,
) -> list[Measure]:
    """Run the three questions' sweeps (every rule over ``seeds`` seeds from ``first_seed``; ``overrides``
    ``KEY=VALUE`` applied to every scenario, e.g. ``rounds=2``) and write the study files into ``out_dir``;
    returns the measures. Raises ``ScenarioError`` for a bad seed count or override."""
    chosen = seed_list(first_seed, seeds)
    for scenario, params, folder in plan_study(rules, first_seed, overrides, out_dir):
        sweep_seeds(scenario, params, folder, seeds, workers=workers, chain_target=chain_target, on_run=on_run)
    return read_study(out_dir, rules, chosen)


def plan_study(rules: Sequence[str], first_seed: int, overrides: Sequence[str],
               out_dir: Path) -> list[tuple[Scenario, list[str], Path]]:  # fmt: skip
    """The study's sweeps — (scenario with ``overrides``, its grid, its folder) per question — with every grid
    point checked, so a bad rule or override is a ``ScenarioError`` before anything runs."""
    if not rules:
        raise ScenarioError("a study needs at least one royalty rule (--rules equal,knn_shapley,...)")
    base = [*overrides, f"seed={first_seed}"]
    sweeps = [(load_scenario(name, base), _grid(question, rules), out_dir / folder)
              for question, (name, folder, _params) in SWEEPS.items()]  # fmt: skip
    for scenario, params, _folder in sweeps:
        sweep_scenarios(scenario, params)
    return sweeps


def read_study(out_dir: Path, rules: Sequence[str], seeds: Sequence[int]) -> list[Measure]:
    """The study's measures from the runs' files in ``out_dir`` (as :func:`run_study` left them, for ``rules``
    over ``seeds``), written again as ``study.json``, ``study.csv``, ``study.md`` and the figure; returns them.
    Re-reads a study without running it (e.g. after changing a measure or a figure)."""
    chosen = tuple(seeds)
    identities = _IDENTITIES

    def point(question: str, file: str, **grid: str) -> list[dict[str, Any]]:
        return _runs(out_dir, question, rules, chosen, grid, file)

    def noisy(dotted: str, scale: float = 1.0) -> Callable[[str], list[Value]]:
        def values(rule: str) -> list[Value]:
            found = [_field(m, dotted) for m in point("noisy", "metrics.json", **{"royalty.rule": rule})]
            return [v if isinstance(v, Undefined) else v / scale for v in found]

        return values

    def copying(provenance: str) -> Callable[[str], list[Value]]:
        def values(rule: str) -> list[Value]:
            grid = {"royalty.provenance": provenance, "royalty.rule": rule}
            return [copier_ratio(x) for x in point("copying", "result.json", **grid)]

        return values

    def sybil(pricing: str) -> Callable[[str], list[Value]]:
        def values(rule: str) -> list[Value]:
            def runs(split: int) -> list[dict[str, Any]]:
                grid = {"producers.pricing": pricing, identities: str(split), "royalty.rule": rule}
                return point("sybil", "result.json", **grid)

            return [split_owner_revenue(a) / split_owner_revenue(b) if split_owner_revenue(b)
                    else Undefined("the unsplit owner earned nothing")
                    for a, b in zip(runs(SYBIL_IDENTITIES), runs(1), strict=True)]  # fmt: skip

        return values

    measures = [
        _measure("noisy data", "truth_distance", "distance of royalty splits from the ground truth (0 = by value)",
                 None, rules, noisy("truth_distance")),
        _measure("noisy data", "defective_excess", "royalty share to noisy data minus its ground-truth share", 0.0,
                 rules, noisy("defective.excess")),
        _measure("noisy data", "builder_profit", "builders' profit (tUSD)", None, rules,
                 noisy("builder_profit.total", UNIT)),
        _measure("noisy data", "consumer_surplus", "consumers' surplus (tUSD)", None, rules,
                 noisy("consumer_surplus.total", UNIT)),
        _measure("copying", "copier_ratio", "copier's royalty / original's", 1.0, rules, copying("false")),
        _measure("copying", "copier_ratio_provenance", "the same with provenance", 1.0, rules, copying("true")),
        *(_measure("Sybil splitting", f"sybil_gain_{pricing}",
                   f"gain of {SYBIL_IDENTITIES} identities over 1, {pricing} licenses", 1.0, rules, sybil(pricing))
          for pricing in SYBIL_PRICING),
    ]  # fmt: skip
    write_study(measures, rules, chosen, out_dir)
    return measures


def summary_lines(measures: Sequence[Measure], rules: Sequence[str]) -> list[str]:
    """One line per measure: each rule's ``mean [low, high]``."""
    return [f"{m.question}, {m.label}: " + "; ".join(f"{rule} {_text(m.by_rule[rule])}" for rule in rules)
            for m in measures]  # fmt: skip


def _text(summary: Summary, signed: bool = False) -> str:
    if isinstance(summary, Undefined):
        return f"undefined ({summary.reason})"
    sign = "+" if signed else ""
    return f"{summary.mean:{sign}.3f} [{summary.low:{sign}.3f}, {summary.high:{sign}.3f}]"


def write_study(measures: Sequence[Measure], rules: Sequence[str], seeds: Sequence[int], out_dir: Path) -> list[Path]:
    """Write ``study.json``, ``study.csv``, ``study.md`` and the figure; returns their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    reference = rules[0]

    def plain(summary: Summary) -> dict[str, Any]:
        if isinstance(summary, Undefined):
            return {"undefined": summary.reason}
        return {"mean": summary.mean, "low": summary.low, "high": summary.high, "n": summary.n, "sd": summary.sd}

    data = {
        "seeds": list(seeds), "rules": list(rules), "reference": reference,
        "measures": [
            {"question": m.question, "measure": m.name, "label": m.label,
             "by_rule": {r: plain(s) for r, s in m.by_rule.items()},
             "vs_reference": {r: plain(_paired(m, r, reference)) for r in rules[1:]}}
            for m in measures
        ],
    }  # fmt: skip
    json_path = out_dir / "study.json"
    json_path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    csv_path = out_dir / "study.csv"
    with csv_path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["question", "measure", "rule", "mean", "low", "high", "n"])
        for m in measures:
            for rule, s in m.by_rule.items():
                cells = ["undefined"] * 4 if isinstance(s, Undefined) else [s.mean, s.low, s.high, s.n]
                writer.writerow([m.question, m.name, rule, *cells])
    lines = ["# Which royalty rule pays producers in line with their data's value?", "",
             f"Seeds {seeds[0]} to {seeds[-1]} ({len(seeds)} per rule, the same under every rule); every figure "
             "is a mean with its 95% interval; differences are paired seed by seed against "
             f"`{reference}`.", ""]  # fmt: skip
    for m in measures:
        lines += [f"## {m.question}: {m.label}", "", "| rule | mean [95% interval] | vs " + reference + " |",
                  "|---|---|---|"]  # fmt: skip
        for rule in rules:
            if rule == reference:
                versus = "reference"
            else:
                diff = _paired(m, rule, reference)
                noise = (
                    ""
                    if isinstance(diff, Undefined)
                    else (", within noise" if diff.contains(0.0) else ", a real difference")
                )
                versus = _text(diff, signed=True) + noise
            lines.append(f"| {rule} | {_text(m.by_rule[rule])} | {versus} |")
        lines.append("")
    lines += ["![the study](study.png)", ""]
    md_path = out_dir / "study.md"
    md_path.write_text("\n".join(lines), encoding="utf-8")
    return [json_path, csv_path, md_path, *plot_study(measures, rules, seeds, out_dir)]


def plot_study(measures: Sequence[Measure], rules: Sequence[str], seeds: Sequence[int], out_dir: Path) -> list[Path]:
    """One panel per measure: a bar per rule at its mean, the 95% interval as an error bar, ``undefined`` written
    where a rule has no value, the no-effect value as a dashed line; PNG (200 dpi), SVG and PDF."""
    columns = min(4, len(measures))
    rows = -(-len(measures) // columns)
    figure = Figure(figsize=(3.4 * columns, 3.6 * rows), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for axis in axes[len(measures) :]:
        axis.set_visible(False)
    positions = np.arange(len(rules))
    for axis, measure in zip(axes, measures, strict=False):
        for x, rule in zip(positions, rules, strict=True):
            s = measure.by_rule[rule]
            if isinstance(s, Undefined):
                axis.text(x, 0, "undefined", ha="center", va="bottom", rotation=90, fontsize="x-small")
                continue
            assert isinstance(s, Estimate)
            axis.bar(x, s.mean, color=f"C{x % 10}", yerr=[[s.mean - s.low], [s.high - s.mean]], capsize=3)
        if measure.neutral is not None:
            axis.axhline(measure.neutral, color="black", linestyle="--", linewidth=0.8)
        axis.axhline(0, color="black", linewidth=0.5)
        axis.set_xticks(positions, rules, rotation=35, ha="right", fontsize="small")
        axis.set_title(f"{measure.question}\n" + textwrap.fill(measure.label, 36), fontsize="small")
        axis.grid(axis="y", alpha=0.3)
    figure.suptitle(f"Royalty rules over seeds {seeds[0]} to {seeds[-1]} (mean, 95% interval)", fontsize="medium")
    paths = []
    for suffix in ("png", "svg", "pdf"):
        path = out_dir / f"study.{suffix}"
        figure.savefig(path, format=suffix, dpi=200, metadata={"Software": None} if suffix == "png" else None)
        paths.append(path)
    return paths
