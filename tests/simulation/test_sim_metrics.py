"""Simulation metrics on hand-computed inputs; CSVs and metrics.json; plots are real PNGs; reports link them."""

from __future__ import annotations

import csv
import json
import math
import re
from dataclasses import replace
from pathlib import Path

import pytest

from simulation.metrics import (
    SWEEP_METRICS,
    gini,
    lorenz,
    pearson,
    ranks,
    spearman,
    summarize,
    sweep_row,
    write_csvs,
    write_metrics,
    write_sweep_csv,
)
from simulation.plots import RUN_FIGURES, SWEEP_FIGURES, plot_run, plot_sweep
from simulation.report import summary_rows, tusd, write_report, write_sweep_report
from simulation.results import (
    BuilderProfit,
    ConsumerSurplus,
    Correlation,
    ProducerShare,
    RunResult,
    Timing,
    Undefined,
)
from tests.helpers.simulation import assert_png, synthetic_data, synthetic_result

TUSD = 1_000_000


# --------------------------------------------------------------------------------------------------
# Gini, Lorenz, correlations


def test_gini_of_equal_values_is_zero_and_of_one_takes_all_is_n_minus_one_over_n() -> None:
    assert gini([5, 5, 5, 5]) == pytest.approx(0.0, abs=1e-12)
    for n in (2, 3, 4, 10):
        assert gini([0] * (n - 1) + [7]) == pytest.approx((n - 1) / n)
    assert gini([0, 0, 0]) == 0.0  # nobody earned anything: equal


def test_gini_matches_the_mean_absolute_difference_formula() -> None:
    values = [4, 1, 3, 2]  # sum over pairs |xi - xj| = 20; G = 20 / (2 * 4**2 * 2.5) = 0.25
    assert gini(values) == pytest.approx(0.25)
    assert gini([2, 4, 6]) == pytest.approx(8 / 36)


def test_gini_refuses_empty_or_negative_input() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        gini([])
    with pytest.raises(ValueError, match="non-negative"):
        gini([1, -1])


def test_lorenz_runs_from_origin_to_one_and_sags_below_equality() -> None:
    x, y = lorenz([3, 1])
    assert x.tolist() == [0.0, 0.5, 1.0]
    assert y.tolist() == [0.0, 0.25, 1.0]
    x, y = lorenz([0, 0, 9])
    assert (x[0], y[0], x[-1], y[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert y.tolist() == pytest.approx([0.0, 0.0, 0.0, 1.0])
    x, y = lorenz([0, 0])
    assert y.tolist() == x.tolist()  # all zero: the line of equality


def test_pearson_on_hand_computed_inputs() -> None:
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([1, 2, 3], [1, 3, 2]) == pytest.approx(0.5)


def test_correlations_are_none_when_undefined() -> None:
    assert pearson([1, 1, 1], [1, 2, 3]) is None
    assert pearson([0.1, 0.1, 0.1], [3, 2, 1]) is None
    assert pearson([1], [2]) is None
    assert spearman([4, 4, 4], [1, 2, 3]) is None
    with pytest.raises(ValueError, match="same length"):
        pearson([1, 2], [1, 2, 3])


def test_spearman_uses_average_ranks() -> None:
    assert ranks([10, 20, 20, 30]).tolist() == [1.0, 2.5, 2.5, 4.0]
    cubes = [1, 8, 27, 64]
    assert spearman([1, 2, 3, 4], cubes) == pytest.approx(1.0)
    assert pearson([1, 2, 3, 4], cubes) < 0.99  # monotone but not linear
    assert spearman([6, 2, 4], [0.05, 0.01, 0.0]) == pytest.approx(0.5)


# --------------------------------------------------------------------------------------------------
# Summary


def test_summarize_synthetic_result_by_hand() -> None:
    summary = summarize(synthetic_result())
    assert summary.producer_revenue == (6 * TUSD, 2 * TUSD, 4 * TUSD)  # by producer index
    assert summary.producer_revenue_total == 12 * TUSD
    assert summary.producer_true_value == (0.05, 0.01, 0.0)
    # revenue deviations (2, -2, 0), value deviations (.03, -.01, -.02): r = .08 / sqrt(8 * .0014)
    assert summary.revenue_value_correlation.pearson == pytest.approx(0.08 / math.sqrt(8 * 0.0014))
    assert summary.revenue_value_correlation.spearman == pytest.approx(0.5)
    assert summary.gini_producer_revenue == pytest.approx(8 / 36)
    # 12 tUSD reached producers of 15 spent (10 on licenses, 5 on calls); no split given: the parts are undefined
    unsplit = Undefined("the engine did not split producer revenue into license sales and royalties")
    assert summary.producer_share == ProducerShare(total=pytest.approx(0.8), license=unsplit, royalty=unsplit)
    assert summary.builder_profit == BuilderProfit(per_builder=(1 * TUSD, -3_500_000), total=-2_500_000)
    assert summary.consumer_surplus == ConsumerSurplus(per_consumer=(2 * TUSD, -1 * TUSD), total=1 * TUSD)
    assert summary.consumer_spend == 5 * TUSD
    assert summary.protocol_fee == 150_000
    assert (summary.answered, summary.correct, summary.accuracy) == (50, 30, pytest.approx(0.6))
    assert summary.builder_accuracy == (0.9, 0.8)
    assert (summary.gas_used, summary.tx_count) == (1_234_567, 89)
    assert summary.timing == Timing(wall_time=2.5, onchain_actions=50, actions_per_second=pytest.approx(20.0))


def test_producer_share_counts_license_sales_and_royalties_named_apart() -> None:
    data = synthetic_data()
    by_index = sorted(data["producers"], key=lambda p: p["index"])
    for producer, royalty in zip(by_index, [1_000_000, 500_000, 0], strict=True):
        producer["royalty_revenue"] = royalty
        producer["license_revenue"] = producer["revenue"] - royalty
    share = summarize(RunResult.from_json(data)).producer_share
    # of 15 tUSD spent (10 licenses + 5 calls): 10.5 reached producers as license sales, 1.5 as royalties
    assert (share.total, share.license, share.royalty) == (pytest.approx(0.8), pytest.approx(0.7), pytest.approx(0.1))


def test_rule_none_pays_no_royalty_yet_its_license_sales_reach_producers() -> None:
    """The metric this replaced counted only royalties over consumer spend: 0 under rule ``none`` while producers
    earned license fees."""
    data = synthetic_data()
    for producer in data["producers"]:
        producer.update(royalty_revenue=0, license_revenue=producer["revenue"])
    share = summarize(RunResult.from_json(data)).producer_share
    assert share == ProducerShare(total=pytest.approx(0.8), license=pytest.approx(0.8), royalty=0.0)


def test_summarize_reports_none_for_undefined_ratios() -> None:
    data = synthetic_data()
    data.update(consumer_spend=0, wall_time=0.0)
    for consumer in data["consumers"]:
        consumer.update(answered=0, correct=0)
    for builder in data["builders"]:
        builder["spend"] = 0
    for producer in data["producers"]:
        producer.update(revenue=1 * TUSD, license_revenue=1 * TUSD, royalty_revenue=0)
    summary = summarize(RunResult.from_json(data))
    nothing = Undefined("nothing was spent in the market (no licenses bought, no calls paid)")
    assert summary.producer_share == ProducerShare(total=nothing, license=nothing, royalty=nothing)
    assert summary.accuracy == Undefined("no query was answered")
    assert summary.timing.actions_per_second is None
    same = Undefined("every producer earned the same revenue")
    assert summary.revenue_value_correlation == Correlation(pearson=same, spearman=same)
    assert summary.gini_producer_revenue == 0.0
    written = summary.to_json()
    assert written["revenue_value_correlation"]["pearson"] == {"undefined": "every producer earned the same revenue"}
    assert written["accuracy"] == {"undefined": "no query was answered"}
    rows = dict(summary_rows(summary))
    assert rows["revenue-value correlation (Pearson)"] == "undefined (every producer earned the same revenue)"


def test_a_correlation_over_too_few_producers_or_equal_values_says_why() -> None:
    data = synthetic_data()
    for producer in data["producers"]:
        producer["true_value"] = 0.02
    same_value = Undefined("every producer's data has the same true value")
    assert summarize(RunResult.from_json(data)).revenue_value_correlation == Correlation(same_value, same_value)
    data["producers"] = data["producers"][:1]
    one = Undefined("a correlation needs at least 2 producers, the run has 1")
    assert summarize(RunResult.from_json(data)).revenue_value_correlation == Correlation(one, one)


def test_metrics_json_is_identical_for_identical_runs_and_timing_is_kept_apart(tmp_path: Path) -> None:
    first, second = synthetic_result(), replace(synthetic_result(), wall_time=9.75)
    paths_a = write_metrics(summarize(first), tmp_path / "a")
    paths_b = write_metrics(summarize(second), tmp_path / "b")
    assert paths_a[0].read_bytes() == paths_b[0].read_bytes()
    assert "timing" not in json.loads(paths_a[0].read_text())
    assert json.loads(paths_b[1].read_text())["wall_time"] == 9.75


def test_write_csvs_one_file_per_entity_sorted_with_lists_joined(tmp_path: Path) -> None:
    paths = write_csvs(synthetic_result(), tmp_path)
    assert [p.name for p in paths] == ["producers.csv", "builders.csv", "consumers.csv", "rounds.csv"]
    producers = list(csv.DictReader(paths[0].open()))
    assert [row["index"] for row in producers] == ["0", "1", "2"]
    assert producers[0]["duplicate_of"] == "" and producers[2]["duplicate_of"] == "0"
    assert producers[0]["revenue"] == str(6 * TUSD)
    builders = list(csv.DictReader(paths[1].open()))
    assert builders[1]["parents"] == "1;2;3" and builders[1]["shares_bps"] == "1667;1667;1666"
    rounds = list(csv.DictReader(paths[3].open()))
    assert [(row["round"], row["correct"]) for row in rounds] == [("1", "10"), ("2", "20")]


def test_write_sweep_csv_has_parameter_then_metric_columns(tmp_path: Path) -> None:
    summary = summarize(synthetic_result())
    rows = [sweep_row({"royalty.rule": rule}, summary) for rule in ("none", "equal")]
    lines = list(csv.reader(write_sweep_csv(rows, tmp_path).open()))
    # the synthetic run has a free rider: its strategy figures follow, the Sybil ones (absent) do not
    assert lines[0] == ["royalty.rule", *SWEEP_METRICS, "copier_revenue", "copied_revenue"]
    assert [line[0] for line in lines[1:]] == ["none", "equal"]
    assert float(lines[1][1 + SWEEP_METRICS.index("gini_producer_revenue")]) == pytest.approx(8 / 36)


# --------------------------------------------------------------------------------------------------
# Plots and reports


def linked_files(report: Path) -> list[str]:
    """The targets of the Markdown image links in ``report``."""
    return re.findall(r"!\[[^\]]*\]\(([^)]+)\)", report.read_text())


@pytest.fixture(scope="module")
def run_output(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path], Path]:
    """Figures and report of the synthetic run."""
    out = tmp_path_factory.mktemp("run")
    result = synthetic_result()
    summary = summarize(result)
    images = plot_run(result, summary, out)
    return out, images, write_report(result, summary, images, out)


def test_plot_run_writes_the_four_figures_as_png(run_output: tuple[Path, list[Path], Path]) -> None:
    out, images, _ = run_output
    assert [image.name for image in images] == list(RUN_FIGURES)
    for image in images:
        assert image.parent == out
        assert_png(image)


def test_run_report_links_exactly_the_figures_and_shows_the_summary(run_output: tuple[Path, list[Path], Path]) -> None:
    out, images, report = run_output
    assert report == out / "report.md"
    assert linked_files(report) == [image.name for image in images]
    text = report.read_text()
    assert text.startswith("# Simulation report: synthetic\n")
    assert "| Gini of producer revenue | 0.222 |" in text
    assert "| producer share of all spend | 80.0% |" in text
    assert "| builder profit (total) | -2.50 |" in text
    assert "| 2 | 0.00 | 0 | 100 | 4.00 | - | 0.00 |" in text  # producer 2 copies producer 0; royalties not split
    assert text.count("### ") == len(images)


def test_report_paths_are_relative_to_the_report(tmp_path: Path, run_output: tuple[Path, list[Path], Path]) -> None:
    _, images, _ = run_output
    figures = tmp_path / "figures"
    figures.mkdir()
    moved = figures / images[1].name
    moved.write_bytes(images[1].read_bytes())
    result = synthetic_result()
    report = write_report(result, summarize(result), [moved], tmp_path, title="moved")
    assert linked_files(report) == ["figures/lorenz.png"]


def test_summary_rows_format_amounts_and_missing_values() -> None:
    result = replace(synthetic_result(), consumer_spend=0)
    rows = dict(summary_rows(summarize(result)))
    assert rows["producer revenue (each)"] == "6.00, 2.00, 4.00"
    assert rows["producer share of all spend"] == "120.0%"  # 12 tUSD reached producers of 10 spent on licenses
    assert rows["  of which royalties"].startswith("undefined (the engine did not split")
    assert rows["answers correct"] == "30 / 50 (60.0%)"
    assert tusd(1_234_567) == "1.234567" and tusd(-1_500_000) == "-1.50"


def test_sweep_plots_and_report(tmp_path: Path) -> None:
    base = summarize(synthetic_result())
    rows = []
    for rule in ("none", "equal", "knn_shapley"):
        for count in ("3", "5"):
            summary = replace(base, gini_producer_revenue=0.1 * len(rule) / int(count))
            if rule == "none":
                summary = replace(summary, revenue_value_correlation=Correlation(Undefined("flat"), Undefined("flat")))
            rows.append(sweep_row({"royalty.rule": rule, "producers.count": count}, summary))
    images = plot_sweep(rows, tmp_path)
    assert [image.name for image in images] == list(SWEEP_FIGURES)
    for image in images:
        assert_png(image)
    report = write_sweep_report(rows, images, tmp_path, title="rules")
    assert linked_files(report) == list(SWEEP_FIGURES)
    text = report.read_text()
    table = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| royalty.rule")]
    assert len(table) == len(rows)
    assert table[0].startswith("| none | 3 | undefined (the engine did not compute the ground truth) |")
    assert "| undefined (flat) | undefined (flat) | 0.133 |" in table[0]
    with pytest.raises(ValueError, match="at least one row"):
        plot_sweep([], tmp_path)


def test_a_result_round_trips_through_its_json_without_the_wall_clock() -> None:
    result = synthetic_result()
    data = result.to_json()
    assert "wall_time" not in data and "onchain_actions" not in data
    assert "royalty_revenue" not in data["producers"][0]  # no split given: none written
    assert json.loads(json.dumps(data)) == data
    assert RunResult.from_json(data) == replace(result, wall_time=0.0, onchain_actions=0)
