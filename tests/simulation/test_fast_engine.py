"""The fast engine agrees with the full stack: the same scenario and seed give the same economic results.

Every shipped scenario runs under both engines, on both chains (embedded py-evm and anvil), and every
payment, revenue, spend and metric of ``metrics.json`` must be equal to the unit — everything but gas and
transaction counts (the fast engine sends fewer transactions: no ``setListed`` after an upload) and
wall-clock. Sizes: to stay within ~2 minutes of CI, each scenario runs with ``rounds=1`` and
``consumers.queries_per_round=4``; ``large`` is shrunk to 5 producers, 2 builders and 3 consumers (the
full engine at its own size takes far longer: ``scripts/bench_sim.py`` runs it with the fast engine).
Both engines reconcile every party's on-chain holdings with their own ledger (``LedgerMismatch``).
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import pytest

from simulation.engine import FAST_FROM_CALLS, choose_engine, run_simulation
from simulation.metrics import summarize
from simulation.scenario import load_scenario, packaged_scenarios

SMALL = ["rounds=1", "consumers.queries_per_round=4"]
SHRINK = {"large": ["producers.count=5", "producers.shard_size=100", "builders.count=2", "consumers.count=3"]}
#: Figures that may differ between engines: they count transactions, gas and time, not money.
NOT_ECONOMIC = {"gas_used", "tx_count", "timing", "onchain_actions", "wall_time", "chain"}


def _economics(result: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    metrics = {k: v for k, v in summarize(result).to_json().items() if k not in NOT_ECONOMIC}
    raw = {k: v for k, v in asdict(result).items() if k not in NOT_ECONOMIC}
    return metrics, raw


@pytest.mark.parametrize("chain_target", ["embedded", "anvil"])
@pytest.mark.parametrize("name", packaged_scenarios())
def test_fast_and_full_engines_agree(name: str, chain_target: str, tmp_path: Path) -> None:
    scenario = load_scenario(name, SMALL + SHRINK.get(name, []))
    full = run_simulation(scenario, chain_target=chain_target, work_dir=tmp_path / "full", engine="full")
    fast = run_simulation(scenario, chain_target=chain_target, work_dir=tmp_path / "fast", engine="fast")
    full_metrics, full_raw = _economics(full)
    fast_metrics, fast_raw = _economics(fast)
    assert fast_metrics == full_metrics
    assert fast_raw == full_raw
    assert full.consumer_spend > 0 and full.channel_revenue_claimed == full.consumer_spend  # something was paid
    assert fast.chain.gas_used > 0 and fast.chain.tx_count > 0


def test_engine_choice() -> None:
    """``auto`` picks the fast engine from FAST_FROM_CALLS paid calls up; a named engine wins; others refused."""
    baseline = load_scenario("baseline")
    assert choose_engine(baseline) == "full"
    assert choose_engine(load_scenario("large")) == "fast"
    calls = baseline.consumers.count * baseline.consumers.queries_per_round
    rounds = -(-FAST_FROM_CALLS // calls)
    assert choose_engine(baseline.with_overrides({"rounds": str(rounds)})) == "fast"
    assert choose_engine(baseline.with_overrides({"rounds": str(rounds - 1)})) == "full"
    assert choose_engine(load_scenario("large"), "full") == "full"
    with pytest.raises(ValueError, match="unknown engine 'warp'"):
        choose_engine(baseline, "warp")


def test_cli_refuses_an_unknown_engine() -> None:
    """``simulate --engine`` is checked like the scenario's key: one line, exit 1, no traceback."""
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "marketplace.cli", "simulate", "baseline", "--engine", "warp"],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.returncode == 1
    assert "unknown engine 'warp'; allowed: auto, fast, full" in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
