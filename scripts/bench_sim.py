"""The simulator at scale, measured in one run: the fast engine on anvil (on-chain actions/s, paid calls/s, the
large scenario's wall time, peak memory at two round counts) and the fast/full ratio on the baseline.

    python scripts/bench_sim.py                      # table: large (fast, anvil) + baseline fast vs full
    python scripts/bench_sim.py --json               # machine-readable
    python scripts/bench_sim.py --rounds 10 --small-rounds 2 --profile prof.out

Each measurement runs in its own process (spawned), so its peak RSS is its own. Targets (issue 15) are
reported PASS/FAIL, never asserted: >= 1,000 on-chain actions/s and >= 5,000 paid calls/s with the fast
engine on anvil, the large scenario in <= 180 s, peak RSS flat in rounds (the longer run within 15% of
the shorter one). The profile is the shorter run's (the large run is timed unprofiled). On-chain actions
are the transactions the run sent (funding, licenses, channel deposits, claims, releases, withdrawals);
paid model calls are vouchers checked by the gateway's gate.
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


def measure(job: tuple[str, list[str], str, str, str | None]) -> dict[str, Any]:
    """Run one scenario (name, overrides, chain, engine, profile file) in this process; its figures."""
    from simulation.engine import run_simulation
    from simulation.scenario import load_scenario

    name, overrides, chain, engine, profile = job
    scenario = load_scenario(name, overrides)
    profiler = cProfile.Profile() if profile else None
    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        result = run_simulation(scenario, chain_target=chain, work_dir=Path(work), engine=engine)
        if profiler:
            profiler.disable()
            profiler.dump_stats(profile)
        wall = time.perf_counter() - started
    calls = sum(c.answered for c in result.consumers)
    return {
        "scenario": name, "rounds": scenario.rounds, "chain": chain, "engine": engine, "wall_time_s": round(wall, 2),
        "tx_count": result.chain.tx_count, "gas_used": result.chain.gas_used,
        "onchain_actions_per_s": round(result.chain.tx_count / wall, 1), "paid_model_calls": calls,
        "paid_calls_per_s": round(calls / wall, 1), "consumer_spend": result.consumer_spend,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
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
    checks = {
        "onchain_actions_per_s": large["onchain_actions_per_s"] >= TARGETS["onchain_actions_per_s"],
        "paid_calls_per_s": large["paid_calls_per_s"] >= TARGETS["paid_calls_per_s"],
        "large_wall_time_s": large["wall_time_s"] <= TARGETS["large_wall_time_s"],
        "rss_flat_in_rounds": growth <= TARGETS["rss_growth"],
    }
    report = {
        "runs": [large, small, fast, full], "fast_full_ratio": round(full["wall_time_s"] / fast["wall_time_s"], 2),
        "same_economics_on_baseline": fast["consumer_spend"] == full["consumer_spend"],
        "rss_growth": round(growth, 3), "targets": TARGETS, "pass": checks, "profile": where_time_goes(profile),
    }  # fmt: skip
    if args.json:
        print(json.dumps(report, indent=2))
        return
    console = Console(width=200)
    table = Table(title="simulation benchmark (one run)")
    for column in large:
        table.add_column(column.replace("_", " "), justify="right")
    for row in report["runs"]:
        table.add_row(*(f"{v:,}" if isinstance(v, int) else str(v) for v in row.values()))
    console.print(table)
    console.print(f"fast/full wall-time ratio on {args.baseline}: {report['fast_full_ratio']}x "
                  f"(same consumer spend: {report['same_economics_on_baseline']})")  # fmt: skip
    console.print(f"peak RSS {small['rounds']} -> {large['rounds']} rounds: {small['peak_rss_mb']} -> "
                  f"{large['peak_rss_mb']} MB ({growth:+.1%})")  # fmt: skip
    for name, ok in checks.items():
        console.print(f"{'PASS' if ok else 'FAIL'}  {name} (target {TARGETS.get(name, TARGETS['rss_growth'])})")
    console.print(report["profile"])


if __name__ == "__main__":
    main()
