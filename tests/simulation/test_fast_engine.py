"""The fast engine agrees with the full stack: the same scenario and seed give the same economic results.

Every shipped scenario runs under both engines, on both chains (embedded py-evm and anvil), and every
payment, revenue, spend and metric of ``metrics.json`` must be equal to the unit — everything but gas and
transaction counts (the fast engine sends fewer transactions: no ``setListed`` after an upload) and
wall-clock. Sizes: to stay within ~2 minutes of CI, each scenario runs with ``rounds=1`` and
``consumers.queries_per_round=4``; ``large`` is shrunk to 5 producers, 2 builders and 3 consumers (the
full engine at its own size takes far longer: ``scripts/bench_sim.py`` runs it with the fast engine).
Both engines reconcile every party's on-chain holdings with their own ledger (``LedgerMismatch``). The same
check on anvil is ``test_fast_engine_anvil.py`` (a file of its own, so the suite's two workers share them).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from simulation.engine import FAST_FROM_CALLS, choose_engine
from simulation.scenario import load_scenario, packaged_scenarios
from tests.helpers.simulation import assert_engines_agree


@pytest.mark.parametrize("name", packaged_scenarios())
def test_fast_and_full_engines_agree_on_the_embedded_chain(name: str, tmp_path: Path) -> None:
    assert_engines_agree(name, "embedded", tmp_path)


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
