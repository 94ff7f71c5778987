"""Simulations: every payment through the contracts, checked against the run's own ledger; the same
scenario and seed give the same metrics.json; sweeps run grid points in parallel processes."""

from __future__ import annotations

import ast
import json
from dataclasses import replace
from pathlib import Path

import pytest

from marketplace.chain.units import to_units
from marketplace.errors import AgentmarketError
from simulation.engine import ExpectedLedger, call_price, holdings
from simulation.metrics import summarize, write_csvs, write_metrics
from simulation.results import BuilderResult, ChainActivity, ProducerResult, RunResult
from simulation.runner import simulate
from simulation.scenario import load_scenario
from simulation.world import GAS_ETH, Holding, LedgerMismatch, World, derived_account, reconcile
from tests.helpers.cli import assert_one_line_error, run_cli
from tests.helpers.simulation import TINY

BASELINE = Path(__file__).parents[2] / "scenarios" / "baseline.toml"


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
    assert 0 < metrics["producer_share"]["royalty"] < metrics["producer_share"]["total"] < 1
    # The ground truth is in the identical bytes: the royalty splits' distance from it and its correlation.
    assert 0 <= metrics["truth_distance"] <= 1 and "pearson" in metrics["royalty_value_correlation"]
    # Exact-Shapley splits of the same pools would have paid the same total in royalties (up to the floors).
    royalties = sum(p["royalty_revenue"] for p in run["producers"])
    assert sum(metrics["producer_true_value"]) == pytest.approx(royalties, abs=len(run["producers"]) * 2)


def test_a_chain_that_disagrees_with_the_ledger_fails_loudly():
    expected = ExpectedLedger(producer={0: 100}, builder={0: 50}, fee=3, consumer_paid=70, model_paid={2: 70})
    producer = ProducerResult(index=0, address="0xP0", asset_id=1, label_noise=0.0, duplicate_of=None, rows=10,
                              revenue=100, true_value=0.0)  # fmt: skip
    builder = BuilderResult(index=0, address="0xB0", model_id=2, model="knn", rule="equal", spend=10, revenue=50,
                            accuracy=0.9, parents=(1,), shares_bps=(5000,))  # fmt: skip
    result = RunResult(scenario="s", seed=1, producers=(producer,), builders=(builder,), consumers=(), protocol_fee=3,
                       consumer_spend=70, rounds=(), channel_revenue_claimed=70,
                       chain=ChainActivity(kind="embedded", chain_id=1, gas_used=0, tx_count=0))  # fmt: skip
    reconcile(holdings(result, expected))  # agrees: nothing raised
    result = replace(result, producers=(replace(producer, revenue=99),), channel_revenue_claimed=69)
    with pytest.raises(LedgerMismatch, match="producer 0: chain 99, ledger 100; channel claims: chain 69, vouchers 70"):
        reconcile(holdings(result, expected))


def test_a_world_reads_holdings_from_the_chain_and_catches_money_its_ledger_never_saw(tmp_path):
    """The harness on a real chain: a party is funded from the seed; a transfer outside the run's ledger
    (a stray mint) makes the reconciliation fail, naming the party and both amounts."""
    with World("embedded", fee_bps=100, seed=5, work_dir=tmp_path) as world:
        set_up = world.activity().tx_count
        consumer = world.party("consumer", 0, tusd=7)
        assert consumer.address == derived_account(5, "consumer", 0).address
        assert (
            world.names[consumer.address] == "consumer" and world.names[world.deployer.address] == "protocol treasury"
        )
        assert world.chain.w3.eth.get_balance(consumer.address) == GAS_ETH
        assert consumer.wallet.client.address == consumer.address  # the wallet's one client signs as the party
        ledger = {consumer.address: 7}
        reconcile([Holding("consumer 0", world.balance(consumer.address), ledger[consumer.address])])
        world.market.token.mint(world.deployer, consumer.address, 1)
        with pytest.raises(LedgerMismatch, match="consumer 0: chain 8, ledger 7"):
            reconcile([Holding("consumer 0", world.balance(consumer.address), ledger[consumer.address])])
        assert world.activity().tx_count - set_up == 3  # gas, tUSD, the stray mint
    with pytest.raises(AgentmarketError, match="not set up"):
        world.market  # noqa: B018 - the property raises once the world is shut down


def test_cost_recovery_prices_calls_to_repay_the_licenses_with_the_margin():
    assert call_price(load_scenario(BASELINE), to_units("8"), 5_000) == to_units("0.02")  # fixed
    scenario = load_scenario(BASELINE, ["builders.pricing=cost_recovery"])
    # 4 licenses at 2 tUSD, +20%, over 3 consumers x 8 queries x 5 rounds / 2 builders = 60 calls each, of
    # which the builder keeps 99% (fee) x 50% (royalties): ceil(9.6 tUSD / 29.7)
    assert call_price(scenario, to_units("8"), 5_000) == -(-to_units("9.6") * 10 // 297) == 323_233


def test_a_seeded_runs_files_are_its_typed_result_and_its_money_adds_up(tmp_path):
    """Regression guard for the typed results: what a seeded run writes (result.json, metrics.json, the CSVs) is
    exactly what its typed result serializes to, read back and written again; and the money in the result adds
    up the way the ledger says (every voucher claimed, licenses + royalties = producer revenue, nothing created).
    The files were byte-identical to those of the dict-based engine this replaced (commit cbb2cec)."""
    scenario = load_scenario(BASELINE, TINY)
    rounds_seen = []
    summary = simulate(scenario, tmp_path / "run", on_round=lambda number, figures: rounds_seen.append(figures))
    data = json.loads((tmp_path / "run" / "result.json").read_text())
    result = RunResult.from_json(data)
    assert result.to_json() == data
    assert (
        summarize(result).to_json() == summary.to_json() == json.loads((tmp_path / "run" / "metrics.json").read_text())
    )
    write_metrics(summarize(result), tmp_path / "again")
    written = write_csvs(result, tmp_path / "again")
    for name in ["metrics.json", *(path.name for path in written)]:
        assert (tmp_path / "again" / name).read_bytes() == (tmp_path / "run" / name).read_bytes(), name

    assert list(result.rounds) == rounds_seen and [r.round for r in result.rounds] == [1, 2]
    assert (
        result.consumer_spend == sum(r.consumer_spend for r in result.rounds) == sum(c.spend for c in result.consumers)
    )
    assert result.channel_revenue_claimed == result.consumer_spend > 0
    assert all(p.revenue == p.license_revenue + p.royalty_revenue and p.royalty_revenue > 0 for p in result.producers)
    paid_in = sum(b.spend for b in result.builders) + result.consumer_spend
    paid_out = sum(p.revenue for p in result.producers) + sum(b.revenue for b in result.builders) + result.protocol_fee
    assert 0 <= paid_in - paid_out < 10  # only the vaults' rounding dust (a unit per payee and hop) stays behind
    assert summary.timing.onchain_actions == result.chain.tx_count == summary.tx_count > 20


def declared_attributes(node: ast.ClassDef) -> set[str]:
    """Names a class declares: class-level annotations and assignments, and ``self.x`` targets in ``__init__``."""
    names = {
        t.id for item in node.body if isinstance(item, ast.Assign) for t in item.targets if isinstance(t, ast.Name)
    }
    names |= {
        item.target.id for item in node.body if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)
    }
    names |= {item.name for item in node.body if isinstance(item, ast.FunctionDef | ast.AsyncFunctionDef)}
    for item in node.body:
        if isinstance(item, ast.FunctionDef) and item.name == "__init__":
            names |= {target.attr for target in self_targets(item)}
    return names


def self_targets(function: ast.FunctionDef | ast.AsyncFunctionDef) -> list[ast.Attribute]:
    """Every ``self.x`` assigned in ``function`` (plain, annotated, augmented, tuple unpacking, chained)."""
    found = []
    for node in ast.walk(function):
        targets: list[ast.expr] = []
        if isinstance(node, ast.Assign):
            targets = list(node.targets)
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            targets = [node.target]
        while targets:
            target = targets.pop()
            if isinstance(target, ast.Tuple | ast.List):
                targets.extend(target.elts)
            elif isinstance(target, ast.Attribute) and isinstance(target.value, ast.Name) and target.value.id == "self":
                found.append(target)
    return found


def test_no_attribute_is_set_outside_init_in_the_simulation_package():
    """Every attribute of a simulation class is declared in its ``__init__`` (or its class body), so a reader
    finds an object's whole state in one place."""
    package = Path(__file__).parents[2] / "simulation"
    offences = []
    for path in sorted(package.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ClassDef):
                continue
            declared = declared_attributes(node)
            for method in node.body:
                if isinstance(method, ast.FunctionDef | ast.AsyncFunctionDef) and method.name != "__init__":
                    offences += [f"{path.name}:{t.lineno} {node.name}.{t.attr}" for t in self_targets(method)
                                 if t.attr not in declared]  # fmt: skip
    assert offences == []


def test_the_attribute_check_finds_an_attribute_set_outside_init():
    tree = ast.parse(
        "class A:\n"
        "    def __init__(self):\n        self.a, self.b = 1, 2\n"
        "    def step(self):\n        self.a += 1\n        self.c = 3\n"
        "        self.b: int = 4\n        (self.d, x) = 5, 6\n"
    )
    (node,) = [n for n in tree.body if isinstance(n, ast.ClassDef)]
    assert declared_attributes(node) == {"a", "b", "__init__", "step"}
    step = node.body[1]
    assert isinstance(step, ast.FunctionDef)
    assert sorted(t.attr for t in self_targets(step) if t.attr not in declared_attributes(node)) == ["c", "d"]


def test_a_bad_scenario_is_a_one_line_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text(BASELINE.read_text().replace('rule = "knn_shapley"', 'rule = "vibes"'))
    assert_one_line_error(run_cli("simulate", str(bad), "--out", str(tmp_path)), "royalty.rule", "knn_shapley")
