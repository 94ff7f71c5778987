"""Simulations: every payment through the contracts, checked against the run's own ledger; the same
scenario and seed give the same metrics.json; sweeps run grid points in parallel processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from marketplace.chain.units import to_units
from simulation.engine import LedgerMismatch, _World
from simulation.scenario import load_scenario
from tests.test_cli import assert_one_line_error, run_cli

BASELINE = Path(__file__).parents[1] / "scenarios" / "baseline.toml"
TINY = ["rounds=2", "producers.count=3", "producers.shard_size=80", "builders.count=1", "builders.models=['logreg']",
        "consumers.count=2", "consumers.queries_per_round=4"]  # fmt: skip


def test_a_sweep_of_replicates_runs_in_parallel_and_every_replicate_is_identical(tmp_path):
    """Two grid points with the same seed, in two processes with a chain each: identical metrics.json."""
    params = [f"--param={p}" for p in TINY] + ["--param", "royalty.rule=leave_one_out,leave_one_out"]
    result = run_cli(
        "sweep", str(BASELINE), *params, "--workers", "2", "--out", str(tmp_path), timeout=400, env={"COLUMNS": "200"}
    )
    assert result.returncode == 0, result.stderr
    assert "2 grid points" in result.stdout and "leave_one_out" in result.stdout
    first, second = sorted(tmp_path.glob("point-*"))
    assert (first / "metrics.json").read_bytes() == (second / "metrics.json").read_bytes()
    assert (tmp_path / "sweep.csv").read_text().count("\n") == 3 and (tmp_path / "report.md").exists()

    produced = {p.name for p in first.iterdir()}
    assert {"metrics.json", "timing.json", "producers.csv", "builders.csv", "consumers.csv", "rounds.csv",
            "report.md", "lorenz.png", "money_flow.png", "revenue_vs_quality.png"} <= produced  # fmt: skip
    run = json.loads((first / "result.json").read_text())
    metrics = json.loads((first / "metrics.json").read_text())
    # Real money moved: licenses from the builder, calls from consumers, royalties up to producers.
    call_price = load_scenario(BASELINE).builders.price_per_call_units
    assert run["consumer_spend"] == 2 * 2 * 4 * call_price == metrics["consumer_spend"]
    assert all(p["revenue"] > p["license_revenue"] > 0 for p in run["producers"])
    assert run["channel_revenue_claimed"] == run["consumer_spend"]
    assert metrics["answered"] == 16 and metrics["accuracy"] > 0.7
    assert metrics["tx_count"] > 20 and metrics["gas_used"] > 1_000_000
    assert 0 < metrics["producer_share"] < 1


def test_a_chain_that_disagrees_with_the_ledger_fails_loudly():
    world = object.__new__(_World)
    world.expected_ledger = {"producer": {0: 100}, "builder": {0: 50}, "fee": 3, "consumer_paid": 70}
    result = {"producers": [{"index": 0, "revenue": 100}], "builders": [{"index": 0, "revenue": 50}],
              "protocol_fee": 3, "channel_revenue_claimed": 70}  # fmt: skip
    world.reconcile(result)  # agrees: nothing raised
    result["producers"][0]["revenue"] = 99
    with pytest.raises(LedgerMismatch, match="producer 0: chain 99, ledger 100"):
        world.reconcile(result)


def test_cost_recovery_prices_calls_to_repay_the_licenses_with_the_margin():
    world = object.__new__(_World)
    world.scenario = load_scenario(BASELINE)
    assert world._call_price() == to_units("0.02")  # fixed
    world.scenario = load_scenario(BASELINE, ["builders.pricing=cost_recovery"])
    # 4 licenses at 2 tUSD, +20%, over 3 consumers x 8 queries x 5 rounds / 2 builders = 60 calls each
    assert world._call_price() == to_units("9.6") // 60 == to_units("0.16")


def test_a_bad_scenario_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(BASELINE.read_text().replace('rule = "knn_shapley"', 'rule = "vibes"'))
    assert_one_line_error(run_cli("simulate", str(bad), "--out", str(tmp_path)), "royalty.rule", "knn_shapley")
