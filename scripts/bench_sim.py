"""The simulator at scale, measured in one run: the fast engine on anvil (on-chain actions/s, paid calls/s, the
large scenario's wall time, peak memory at two round counts) and the fast/full ratio on the baseline.

    python scripts/bench_sim.py                      # table: large (fast, anvil) + baseline fast vs full
    python scripts/bench_sim.py --json               # machine-readable
    python scripts/bench_sim.py --rounds 10 --small-rounds 2 --profile prof.out

Each measurement runs in its own process (spawned), so its peak RSS is its own. Targets (issue 15) are
reported PASS/FAIL, never asserted: >= 1,000 on-chain actions/s and >= 5,000 paid calls/s with the fast
engine on anvil, the large scenario in <= 180 s, peak RSS flat in rounds (the longer run within 15% of
the shorter one, and the last round's within 15% of the first's). The profile is the shorter run's (the
large run is timed unprofiled).

Definitions (printed with the figures; see DEFINITIONS): on-chain actions are the transactions the run sent
(funding, licenses, channel approvals and deposits, claims, releases, withdrawals), counted from the blocks;
paid model calls are vouchers checked by the gateway's gate and committed to its ledger. Each throughput is
given twice: as a whole-run average (divided by the run's wall time, which also holds deploying, training,
the true value and the reads of the end) and as a phase throughput (divided by the seconds spent on that
work only: signing, sending, mining and checking receipts of transactions; deciding, signing, checking and
committing calls). Every phase's seconds are printed, so the two can be told apart.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import multiprocessing
import pstats
import resource
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

TARGETS = {"onchain_actions_per_s": 1_000, "paid_calls_per_s": 5_000, "large_wall_time_s": 180.0, "rss_growth": 0.15}
#: What each figure means.
DEFINITIONS = {
    "onchain_actions_per_s": "transactions / the run's wall time (whole-run average)",
    "onchain_actions_per_tx_second": "transactions / seconds signing (BatchSender.queue) and sending, mining and "
    "checking every receipt (BatchSender.flush): the chain phase's throughput",
    "paid_calls_per_s": "paid model calls / the run's wall time (whole-run average)",
    "paid_calls_per_call_second": "paid model calls / seconds deciding them (play_round's own time: brains, "
    "budget guards, answers) plus signing each voucher, checking it in the gate and committing it (_pay_calls)",
    "paid_calls_per_check_second": "paid model calls / seconds signing, checking and committing vouchers only",
}


#: Where a run's time goes: (phase, owner, method) wrapped with a timer in the measuring process. Times are
#: exclusive (a phase nested in another is subtracted from it); what no timer covers is "other".
PHASES = (
    ("world set-up (deploy)", "simulation.world:World", "__enter__"),
    ("set-up/publish", "simulation.engine:_Run", "publish_datasets"),
    ("build/train", "simulation.engine:_Run", "build_models"),
    ("build/train", "simulation.fast:FastRun", "build_models"),
    ("rounds: decide", "simulation.engine:_Run", "play_round"),
    ("rounds: decide", "simulation.fast:FastRun", "play_round"),
    ("channel opens on chain", "simulation.fast:FastRun", "_open_channels"),
    ("voucher checks", "simulation.fast:FastRun", "_pay_calls"),
    ("settle", "simulation.engine:_Run", "settle"),
    ("settle", "simulation.fast:FastRun", "settle"),
    ("release+withdraw", "simulation.engine:_Run", "release_and_withdraw"),
    ("release+withdraw", "simulation.fast:FastRun", "release_and_withdraw"),
    ("result (chain reads)", "simulation.engine:_Run", "result"),
    ("result (chain reads)", "simulation.fast:FastRun", "result"),
    ("ground truth", "simulation.engine:_Run", "ground_truth"),
    ("reconcile", "simulation.engine:reconcile", None),
)
#: Transactions: signing (``queue``) and sending, mining and checking receipts (``flush``), wherever they happen.
CHAIN_TIMERS = (("sign", "marketplace.chain.rawtx:BatchSender", "queue"),
                ("send+mine", "marketplace.chain.rawtx:BatchSender", "flush"))  # fmt: skip


class Timers:
    """Exclusive seconds per phase, from wrappers installed on the run's methods (see :data:`PHASES`)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.chain: dict[str, float] = {}
        self._stack: list[str] = []

    def install(self) -> None:
        """Wrap every method of :data:`PHASES` and :data:`CHAIN_TIMERS` (a missing one is skipped)."""
        import importlib

        for phase, where, method in PHASES:
            module_name, _, owner_name = where.partition(":")
            module = importlib.import_module(module_name)
            owner = getattr(module, owner_name, None)
            if owner is None:
                continue
            if method is None:  # a module-level function, called by the engine under this name
                setattr(module, owner_name, self._wrap(phase, owner))
            elif method in vars(owner):
                setattr(owner, method, self._wrap(phase, vars(owner)[method]))
        for name, where, method in CHAIN_TIMERS:
            module_name, _, owner_name = where.partition(":")
            owner = getattr(importlib.import_module(module_name), owner_name)
            setattr(owner, method, self._wrap_chain(name, vars(owner)[method]))

    def _wrap(self, phase: str, function: Any) -> Any:
        timers = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            timers._stack.append(phase)
            try:
                return function(*args, **kwargs)
            finally:
                timers._stack.pop()
                elapsed = time.perf_counter() - started
                timers.seconds[phase] = timers.seconds.get(phase, 0.0) + elapsed
                if timers._stack:  # exclusive: not the enclosing phase's own time
                    parent = timers._stack[-1]
                    timers.seconds[parent] = timers.seconds.get(parent, 0.0) - elapsed

        return timed

    def _wrap_chain(self, name: str, function: Any) -> Any:
        timers = self

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                timers.chain[name] = timers.chain.get(name, 0.0) + time.perf_counter() - started

        return timed


def measure(job: tuple[str, list[str], str, str, str | None]) -> dict[str, Any]:
    """Run one scenario (name, overrides, chain, engine, profile file) in this process; its figures."""
    timers = Timers()
    timers.install()
    from simulation.engine import run_simulation
    from simulation.scenario import load_scenario

    name, overrides, chain, engine, profile = job
    scenario = load_scenario(name, overrides)
    rss: list[float] = []

    def on_round(_number: int, _figures: Any) -> None:
        rss.append(round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1))

    profiler = cProfile.Profile() if profile else None
    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        result = run_simulation(scenario, chain_target=chain, work_dir=Path(work), engine=engine, on_round=on_round)
        if profiler:
            profiler.disable()
            profiler.dump_stats(profile)
        wall = time.perf_counter() - started
    calls = sum(c.answered for c in result.consumers)
    txs = result.chain.tx_count
    phases = {k: round(v, 2) for k, v in timers.seconds.items()}
    phases["other"] = round(wall - sum(timers.seconds.values()), 2)
    chain_s = sum(timers.chain.values())  # signing, sending, mining, receipts: every transaction's own time
    calls_s = timers.seconds.get("rounds: decide", 0.0) + timers.seconds.get("voucher checks", 0.0)
    checks_s = timers.seconds.get("voucher checks", 0.0)
    return {
        "scenario": name, "rounds": scenario.rounds, "chain": chain, "engine": engine, "wall_time_s": round(wall, 2),
        "tx_count": txs, "gas_used": result.chain.gas_used,
        "onchain_actions_per_s": round(txs / wall, 1), "paid_model_calls": calls,
        "paid_calls_per_s": round(calls / wall, 1), "consumer_spend": result.consumer_spend,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "tx_seconds": round(chain_s, 2), "onchain_actions_per_tx_second": round(txs / chain_s, 1) if chain_s else None,
        "call_seconds": round(calls_s, 2), "paid_calls_per_call_second": round(calls / calls_s, 1) if calls_s else None,
        "voucher_check_seconds": round(checks_s, 2),
        "paid_calls_per_check_second": round(calls / checks_s, 1) if checks_s else None,
        "chain_seconds": {k: round(v, 2) for k, v in timers.chain.items()}, "phases": phases, "rss_by_round_mb": rss,
    }  # fmt: skip


def in_child(job: tuple[str, list[str], str, str, str | None]) -> dict[str, Any]:
    """``measure`` in a fresh spawned process (its own peak RSS, its own chain)."""
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(measure, (job,))


def where_time_goes(profile: str, top: int = 15) -> str:
    """The entries with the most cumulative time in a profile."""
    out = io.StringIO()
    pstats.Stats(profile, stream=out).strip_dirs().sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", default="large", help="the large scenario (name or TOML path)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds of the large run (default: the scenario's)")
    parser.add_argument("--small-rounds", type=int, default=2, help="rounds of the second run, for peak RSS")
    parser.add_argument("--baseline", default="baseline", help="the scenario for the fast/full ratio")
    parser.add_argument("--chain", default="anvil")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--profile", default=None, help="keep the short run's cProfile here (default: a temp file)")
    args = parser.parse_args()
    profile = args.profile or tempfile.mktemp(suffix=".prof")
    rounds = [f"rounds={args.rounds}"] if args.rounds else []
    large = in_child((args.scenario, rounds, args.chain, "fast", None))  # timed without the profiler's overhead
    small = in_child((args.scenario, [f"rounds={args.small_rounds}"], args.chain, "fast", profile))
    fast = in_child((args.baseline, [], args.chain, "fast", None))
    full = in_child((args.baseline, [], args.chain, "full", None))
    growth = large["peak_rss_mb"] / small["peak_rss_mb"] - 1
    by_round = large["rss_by_round_mb"]
    in_rounds = by_round[-1] / by_round[0] - 1 if by_round else 0.0
    checks = {
        "onchain_actions_per_s": large["onchain_actions_per_s"] >= TARGETS["onchain_actions_per_s"],
        "onchain_actions_per_tx_second": (large["onchain_actions_per_tx_second"] or 0)
        >= TARGETS["onchain_actions_per_s"],
        "paid_calls_per_s": large["paid_calls_per_s"] >= TARGETS["paid_calls_per_s"],
        "paid_calls_per_call_second": (large["paid_calls_per_call_second"] or 0) >= TARGETS["paid_calls_per_s"],
        "large_wall_time_s": large["wall_time_s"] <= TARGETS["large_wall_time_s"],
        "rss_flat_in_rounds": growth <= TARGETS["rss_growth"] and in_rounds <= TARGETS["rss_growth"],
    }
    report = {
        "runs": [large, small, fast, full], "fast_full_ratio": round(full["wall_time_s"] / fast["wall_time_s"], 2),
        "same_economics_on_baseline": fast["consumer_spend"] == full["consumer_spend"],
        "rss_growth": round(growth, 3), "rss_growth_over_rounds": round(in_rounds, 3), "targets": TARGETS,
        "definitions": DEFINITIONS, "pass": checks, "profile": where_time_goes(profile),
    }  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=2))
        return
    console = Console(width=200)
    table = Table(title="simulation benchmark (one run)")
    columns = ["scenario", "rounds", "engine", "wall_time_s", "tx_count", "paid_model_calls", "onchain_actions_per_s",
               "onchain_actions_per_tx_second", "paid_calls_per_s", "paid_calls_per_call_second",
               "paid_calls_per_check_second", "peak_rss_mb"]  # fmt: skip
    for column in columns:
        table.add_column(column.replace("_", " "), justify="right")
    for row in report["runs"]:
        table.add_row(*(f"{row[c]:,}" if isinstance(row[c], int) else str(row[c]) for c in columns))
    console.print(table)
    for name, meaning in DEFINITIONS.items():
        console.print(f"  {name.replace('_', ' ')}: {meaning}")
    phases = Table(title=f"where the {large['scenario']} run's {large['wall_time_s']} s go (exclusive seconds)")
    phases.add_column("phase")
    phases.add_column("seconds", justify="right")
    for phase, seconds in large["phases"].items():
        phases.add_row(phase, f"{seconds:.2f}")
    console.print(phases)
    console.print(f"transactions: {large['chain_seconds']} s (sign = BatchSender.queue; send+mine = flush)")
    console.print(f"fast/full wall-time ratio on {args.baseline}: {report['fast_full_ratio']}x "
                  f"(same consumer spend: {report['same_economics_on_baseline']})")  # fmt: skip
    console.print(f"peak RSS {small['rounds']} -> {large['rounds']} rounds: {small['peak_rss_mb']} -> "
                  f"{large['peak_rss_mb']} MB ({growth:+.1%}); after each round of the long run: {by_round} MB "
                  f"({in_rounds:+.1%} first to last)")  # fmt: skip
    for name, ok in checks.items():
        target = TARGETS.get(name.replace("per_tx_second", "per_s").replace("per_call_second", "per_s"))
        console.print(f"{'PASS' if ok else 'FAIL'}  {name} (target {target or TARGETS['rss_growth']})")
    console.print(report["profile"])


if __name__ == "__main__":
    main()
