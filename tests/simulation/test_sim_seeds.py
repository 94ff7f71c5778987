"""Monte Carlo over seeds (issue 15 §3): each metric's mean with its 95% Student-t interval checked against values
computed by hand (quantiles from a t table, not from scipy), paired comparisons between grid points, undefined
metrics that say why, and ``simulate``/``sweep --seeds`` through the CLI as a subprocess on a tiny world."""

from __future__ import annotations

import csv
import json
import math
import statistics
from dataclasses import replace
from pathlib import Path

import pytest

from simulation.metrics import (
    SWEEP_METRICS,
    aggregate_seeds,
    compare_points,
    estimate,
    paired_difference,
    write_seeded_sweep_csv,
    write_seeds_csv,
)
from simulation.plots import SWEEP_FIGURES, plot_seeded
from simulation.report import comparison_sentences, estimate_text, write_seeded_report
from simulation.results import Comparison, Estimate, SweepMetrics, Undefined
from simulation.runner import MAX_SEED, seed_list
from simulation.scenario import ScenarioError, load_scenario
from tests.helpers.cli import assert_one_line_error, run_cli
from tests.helpers.simulation import assert_png

BASELINE = Path(__file__).parents[2] / "scenarios" / "baseline.toml"
TUSD = 1_000_000
#: 0.975 quantiles of Student's t (any printed t table): 1, 2 and 3 degrees of freedom.
T_975 = {1: 12.706204736174698, 2: 4.302652729749464, 3: 3.182446305284263}
#: The smallest world that still moves every kind of payment (one round).
TINY = ["rounds=1", "producers.count=3", "producers.shard_size=60", "builders.count=1", "builders.models=['logreg']",
        "consumers.count=2", "consumers.queries_per_round=3"]  # fmt: skip


def by_hand(values: list[float]) -> tuple[float, float, float, float]:
    """Mean, low, high and sd of ``values``: mean ± t(0.975, n-1) · sd / √n, sd with n - 1 in the denominator."""
    n = len(values)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = T_975[n - 1] * sd / math.sqrt(n)
    return mean, mean - half, mean + half, sd


def sweep_metrics(**changes: object) -> SweepMetrics:
    """Scalar metrics of one synthetic run, with ``changes``."""
    base = SweepMetrics(
        revenue_value_pearson=0.5, revenue_value_spearman=0.5, gini_producer_revenue=0.2, producer_share=0.8,
        producer_share_license=0.7, producer_share_royalty=0.1, producer_revenue_total=12 * TUSD,
        builder_profit_total=-2 * TUSD, consumer_surplus_total=1 * TUSD, protocol_fee=150_000,
        consumer_spend=5 * TUSD, accuracy=0.9, gas_used=1_000_000, tx_count=50,
    )  # fmt: skip
    return replace(base, **changes)


def test_an_estimate_is_the_mean_with_its_student_t_interval() -> None:
    result = estimate([1, 2, 3, 4])
    mean, low, high, sd = by_hand([1, 2, 3, 4])
    assert (mean, sd) == (2.5, pytest.approx(math.sqrt(5 / 3)))
    assert result == Estimate(mean=2.5, low=pytest.approx(low), high=pytest.approx(high), n=4, sd=pytest.approx(sd))
    assert result.low == pytest.approx(2.5 - 2.0542, abs=1e-4)  # 3.1824 · 1.2910 / 2
    assert estimate([7, 7, 7]) == Estimate(mean=7.0, low=7.0, high=7.0, n=3, sd=0.0)


def test_an_estimate_leaves_out_undefined_seeds_and_is_undefined_below_two() -> None:
    flat = Undefined("every producer earned the same revenue")
    partial = estimate([0.2, flat, 0.4])
    mean, low, high, _ = by_hand([0.2, 0.4])
    assert isinstance(partial, Estimate) and partial.n == 2
    assert (partial.mean, partial.low, partial.high) == (pytest.approx(mean), pytest.approx(low), pytest.approx(high))
    assert estimate([0.2, flat, flat]) == Undefined(
        "defined in 1 of 3 seeds, an interval needs at least 2: every producer earned the same revenue"
    )
    assert estimate([flat, flat]).reason.startswith("defined in 0 of 2 seeds")  # type: ignore[union-attr]


def test_paired_differences_see_what_separate_intervals_cannot() -> None:
    """Two rules over the same three seeds: their Gini intervals overlap widely, but seed by seed the second is
    always higher, so the paired difference's interval excludes 0; a Spearman difference that flips sign from
    seed to seed is within noise."""
    seeds = (7, 8, 9)
    runs_a = [sweep_metrics(gini_producer_revenue=g, revenue_value_spearman=r) for g, r in ((0.2, 0.1), (0.3, 0.5),
                                                                                             (0.4, 0.3))]  # fmt: skip
    runs_b = [sweep_metrics(gini_producer_revenue=g, revenue_value_spearman=r) for g, r in ((0.25, 0.3), (0.33, 0.2),
                                                                                             (0.46, 0.4))]  # fmt: skip
    reference = aggregate_seeds({"royalty.rule": "none"}, seeds, runs_a)
    point = aggregate_seeds({"royalty.rule": "equal"}, seeds, runs_b)
    gini_a, gini_b = reference.estimates["gini_producer_revenue"], point.estimates["gini_producer_revenue"]
    assert isinstance(gini_a, Estimate) and isinstance(gini_b, Estimate)
    assert gini_a.low < gini_b.mean < gini_a.high  # separately: no telling them apart
    difference = paired_difference(point, reference, "gini_producer_revenue")
    mean, low, high, sd = by_hand([0.05, 0.03, 0.06])
    assert sd == pytest.approx(statistics.stdev([0.05, 0.03, 0.06]))
    assert difference == Estimate(mean=pytest.approx(mean), low=pytest.approx(low), high=pytest.approx(high), n=3,
                                  sd=pytest.approx(sd))  # fmt: skip
    assert difference.low > 0  # type: ignore[union-attr]

    comparisons = {c.metric: c for c in compare_points([reference, point])}
    assert set(comparisons) == set(SWEEP_METRICS)
    assert comparisons["gini_producer_revenue"].within_noise is False
    spearman = comparisons["revenue_value_spearman"]
    assert spearman.within_noise is True and spearman.difference.mean == pytest.approx(0.0)  # type: ignore[union-attr]
    sentences = comparison_sentences([comparisons["gini_producer_revenue"], spearman])
    assert sentences[0].startswith(
        "royalty.rule=equal vs royalty.rule=none: Gini of producer revenue differs by +0.047 ["
    )
    assert sentences[0].endswith(", 3 paired seeds: higher.")
    assert sentences[1].endswith(": within noise (the interval contains 0).")
    assert comparisons["tx_count"].difference == Estimate(mean=0.0, low=0.0, high=0.0, n=3, sd=0.0)

    with pytest.raises(ValueError, match="same seeds"):
        paired_difference(aggregate_seeds({}, (1, 2, 3), point.runs), reference, "gini_producer_revenue")


def test_an_undefined_metric_says_so_in_metrics_json_csvs_report_and_comparisons(tmp_path: Path) -> None:
    flat = Undefined("every producer earned the same revenue")
    seeds = (1, 2)
    none = aggregate_seeds({"royalty.rule": "none"}, seeds, [sweep_metrics(revenue_value_pearson=flat)] * 2)
    runs = [sweep_metrics(revenue_value_pearson=0.4), sweep_metrics(revenue_value_pearson=0.6)]
    equal = aggregate_seeds({"royalty.rule": "equal"}, seeds, runs)
    why = "defined in 0 of 2 seeds, an interval needs at least 2: every producer earned the same revenue"
    assert none.to_json()["metrics"]["revenue_value_pearson"] == {"undefined": why}
    assert json.loads(json.dumps(equal.to_json()))["metrics"]["accuracy"] == {
        "mean": 0.9, "low": 0.9, "high": 0.9, "n": 2, "sd": 0.0,
    }  # fmt: skip
    comparisons = compare_points([none, equal])
    pearson = next(c for c in comparisons if c.metric == "revenue_value_pearson")
    assert pearson.within_noise is None and pearson.to_json()["difference"]["undefined"].startswith("defined in 0 of 2")

    rows = list(csv.DictReader(write_seeds_csv([none, equal], tmp_path).open()))
    assert [(row["royalty.rule"], row["seed"], row["revenue_value_pearson"]) for row in rows] == [
        ("none", "1", "undefined"), ("none", "2", "undefined"), ("equal", "1", "0.4"), ("equal", "2", "0.6"),
    ]  # fmt: skip
    table = list(csv.DictReader(write_seeded_sweep_csv([none, equal], tmp_path).open()))
    assert table[0]["revenue_value_pearson_mean"] == "undefined" and table[0]["seeds"] == "2"
    mean, low, high, _ = by_hand([0.4, 0.6])
    assert [float(table[1][f"revenue_value_pearson_{part}"]) for part in ("mean", "low", "high")] == [
        pytest.approx(mean), pytest.approx(low), pytest.approx(high),
    ]  # fmt: skip

    images = plot_seeded([none, equal], tmp_path)
    assert [image.name for image in images] == list(SWEEP_FIGURES)
    for image in images:
        assert_png(image)
    text = write_seeded_report([none, equal], comparisons, images, tmp_path, title="rules").read_text()
    assert f"| revenue-value correlation (Pearson) | undefined ({why}) | 0.500 [" in text
    assert "### point 2 (royalty.rule=equal) vs point 1 (royalty.rule=none)" in text
    assert "| point 1 (royalty.rule=none) | royalty.rule=none |" in text
    assert "| answer accuracy | 0 | no difference (0 in every seed) |" in text
    assert "nan" not in text.lower() and "| n/a" not in text
    assert estimate_text(Estimate(1.5 * TUSD, 1 * TUSD, 2 * TUSD, 2, 0.1), "tusd") == "1.50 [1.00, 2.00]"


def test_seeds_are_the_scenarios_seed_upwards_and_a_bad_count_is_refused() -> None:
    assert seed_list(7, 3) == (7, 8, 9)
    with pytest.raises(ScenarioError, match="at least 2 seeds"):
        seed_list(7, 1)
    with pytest.raises(ScenarioError, match="pass the largest seed"):
        seed_list(MAX_SEED, 2)
    assert seed_list(MAX_SEED - 1, 2) == (MAX_SEED - 1, MAX_SEED)


def test_bad_seed_options_are_one_line_errors_before_any_run(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert_one_line_error(run_cli("simulate", "baseline", "--seeds", "1", "--out", str(out)), "at least 2 seeds")
    assert_one_line_error(
        run_cli("sweep", "baseline", "--param", "seed=1,2", "--seeds", "2", "--out", str(out)), "do not sweep seed"
    )
    assert not out.exists()


def tiny_params(*extra: str) -> list[str]:
    return [f"--param={p}" for p in [*TINY, *extra]]


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open() as handle:
        return list(csv.DictReader(handle))


def test_a_seeded_sweep_from_the_cli_writes_intervals_recomputable_from_its_seed_rows(tmp_path: Path) -> None:
    """Two identical grid points over seeds 7 and 8, in two processes: the same seeds give the same seeds.csv
    (gas aside: it may differ by multiples of 12, see the wave's known issue), each metric's interval is the t
    interval of the per-seed rows, and every paired difference between the identical points is 0, within noise."""
    params = [*tiny_params(), "--param", "royalty.rule=equal,equal"]
    result = run_cli("sweep", "baseline", *params, "--seeds", "2", "--workers", "2", "--out", str(tmp_path),
                     timeout=600, env={"COLUMNS": "80"})  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    points = [line for line in lines if line.startswith(("point 1: ", "point 2: "))]
    assert len(points) == 2, result.stdout  # one line per grid point, unwrapped in an 80-column terminal
    assert "Gini of producer revenue" in points[0] and "answer accuracy" in points[0]
    compared = [line for line in lines if line.startswith("point 2 vs point 1: ")]
    assert len(compared) == 1 and compared[0].count("no difference (0 in every seed)") == 7, result.stdout

    first, second = sorted(tmp_path.glob("point-*"))
    assert {p.name for p in first.iterdir()} == {"seed-7", "seed-8", "metrics.json", "seeds.csv"}
    assert (first / "seed-8" / "metrics.json").is_file() and (first / "seed-8" / "report.md").is_file()
    rows_a, rows_b = read_rows(first / "seeds.csv"), read_rows(second / "seeds.csv")
    assert [row["seed"] for row in rows_a] == ["7", "8"]
    for a, b in zip(rows_a, rows_b, strict=True):
        gas_a, gas_b = int(a.pop("gas_used")), int(b.pop("gas_used"))
        assert a == b and (gas_a - gas_b) % 12 == 0
    seed_run = json.loads((first / "seed-7" / "metrics.json").read_text())
    assert float(rows_a[0]["gini_producer_revenue"]) == seed_run["gini_producer_revenue"]

    summary = json.loads((first / "metrics.json").read_text())
    assert summary["seeds"] == [7, 8] and summary["params"]["royalty.rule"] == "equal"
    for name in ("consumer_surplus_total", "gini_producer_revenue", "producer_share", "accuracy"):
        values = [float(row[name]) for row in rows_a]
        mean, low, high, sd = by_hand(values)
        assert summary["metrics"][name] == {"mean": pytest.approx(mean), "low": pytest.approx(low),
                                            "high": pytest.approx(high), "n": 2, "sd": pytest.approx(sd)}  # fmt: skip
    share = summary["metrics"]
    assert share["producer_share_license"]["mean"] + share["producer_share_royalty"]["mean"] == pytest.approx(
        share["producer_share"]["mean"]
    )

    assert len(read_rows(tmp_path / "sweep.csv")) == 2 and len(read_rows(tmp_path / "seeds.csv")) == 4
    comparisons = json.loads((tmp_path / "comparisons.json").read_text())
    assert {c["metric"] for c in comparisons} == set(SWEEP_METRICS)
    for comparison in comparisons:
        if comparison["metric"].startswith("defective_"):  # baseline has no noisy or copied data
            assert comparison["within_noise"] is None, comparison
            assert "no producer has label noise or copied rows" in comparison["difference"]["undefined"]
        elif comparison["metric"] != "gas_used":
            assert comparison["within_noise"] is True and comparison["difference"]["mean"] == 0, comparison
    report = (tmp_path / "report.md").read_text()
    assert "## Compared with point 1" in report and "### point 2 vs point 1" in report
    assert "| Gini of producer revenue | 0 | no difference (0 in every seed) |" in report
    for image in SWEEP_FIGURES:
        assert_png(tmp_path / image)


def test_simulate_over_seeds_says_when_a_rule_leaves_a_metric_undefined(tmp_path: Path) -> None:
    """Rule ``none`` on a world where one builder buys every shard at one price: every producer earns the same
    license revenue, so the revenue-value correlation is undefined in every seed, and says so in metrics.json,
    the report and the terminal; its producers' share is all license sales, not 0."""
    result = run_cli("simulate", "baseline", *tiny_params("royalty.rule=none"), "--seeds", "2", "--workers", "2",
                     "--out", str(tmp_path), timeout=600, env={"COLUMNS": "250"})  # fmt: skip
    assert result.returncode == 0, result.stderr
    why = "defined in 0 of 2 seeds, an interval needs at least 2: every producer earned the same revenue"
    assert f"undefined ({why})" in result.stdout
    metrics = json.loads((tmp_path / "metrics.json").read_text())["metrics"]
    assert metrics["revenue_value_pearson"] == metrics["revenue_value_spearman"] == {"undefined": why}
    assert metrics["producer_share_royalty"] == {"mean": 0.0, "low": 0.0, "high": 0.0, "n": 2, "sd": 0.0}
    license_share = metrics["producer_share_license"]["mean"]
    assert 0 < license_share < 1 and license_share == pytest.approx(metrics["producer_share"]["mean"])
    rows = read_rows(tmp_path / "seeds.csv")
    assert [(row["seed"], row["revenue_value_pearson"]) for row in rows] == [("7", "undefined"), ("8", "undefined")]
    run = json.loads((tmp_path / "seed-7" / "metrics.json").read_text())
    assert run["revenue_value_correlation"]["pearson"] == {"undefined": "every producer earned the same revenue"}
    assert f"| revenue-value correlation (Pearson) | undefined ({why}) |" in (tmp_path / "report.md").read_text()
    assert load_scenario(BASELINE).seed == 7  # the seeds above are the scenario's seed upwards


def test_a_comparison_serializes_its_verdict() -> None:
    within = Comparison("accuracy", {"r": "b"}, {"r": "a"}, Estimate(0.01, -0.02, 0.04, 3, 0.01))
    assert within.to_json() == {
        "metric": "accuracy", "point": {"r": "b"}, "reference": {"r": "a"}, "within_noise": True,
        "difference": {"mean": 0.01, "low": -0.02, "high": 0.04, "n": 3, "sd": 0.01},
    }  # fmt: skip
