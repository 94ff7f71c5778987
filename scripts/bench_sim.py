"""Wall time and on-chain actions per second of a simulation scenario, on the embedded chain and on
anvil, measured in one run (this machine is shared and noisy: compare the columns, not other runs).

    python scripts/bench_sim.py                          # the baseline scenario, table
    python scripts/bench_sim.py --json                   # machine-readable
    python scripts/bench_sim.py --profile prof.out       # also cProfile the embedded run; prints where time goes

On-chain actions are the transactions the run sent (licenses, channel opens, claims, releases, …);
paid model calls are off-chain vouchers and are counted separately.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import pstats
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from simulation.engine import run_simulation
from simulation.scenario import load_scenario

ROOT = Path(__file__).resolve().parents[1]


def measure(scenario_path: Path, chain_target: str, profile: Path | None = None) -> dict[str, float]:
    """Run the scenario once on ``chain_target``; returns its timing and activity figures."""
    scenario = load_scenario(scenario_path)
    profiler = cProfile.Profile() if profile else None
    with tempfile.TemporaryDirectory() as work:
        started = time.perf_counter()
        if profiler:
            profiler.enable()
        result = run_simulation(scenario, chain_target=chain_target, work_dir=Path(work))
        if profiler:
            profiler.disable()
            profiler.dump_stats(profile)
        wall = time.perf_counter() - started
    calls = sum(c.answered for c in result.consumers)
    return {
        "chain": chain_target, "wall_time_s": round(wall, 2), "tx_count": result.chain.tx_count,
        "gas_used": result.chain.gas_used, "onchain_actions_per_s": round(result.chain.tx_count / wall, 2),
        "paid_model_calls": calls, "paid_calls_per_s": round(calls / wall, 2),
    }  # fmt: skip


def where_time_goes(profile: Path, top: int = 12) -> str:
    """The functions with the most cumulative time in a profile."""
    out = io.StringIO()
    pstats.Stats(str(profile), stream=out).sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", type=Path, default=ROOT / "scenarios" / "baseline.toml")
    parser.add_argument("--chains", default="embedded,anvil", help="comma-separated: embedded, anvil, RPC URLs")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--profile", type=Path, help="cProfile the embedded run into this file")
    args = parser.parse_args()
    rows = [
        measure(args.scenario, chain, args.profile if chain == "embedded" else None) for chain in args.chains.split(",")
    ]
    if args.json:
        print(json.dumps({"scenario": args.scenario.stem, "runs": rows}, indent=2))
        return
    table = Table(title=f"simulation benchmark: {args.scenario.stem}")
    for column in rows[0]:
        table.add_column(column.replace("_", " "), justify="right")
    for row in rows:
        table.add_row(*(f"{v:,}" if isinstance(v, int) else str(v) for v in row.values()))
    console = Console()
    console.print(table)
    if len(rows) > 1:
        console.print(
            f"wall time {rows[0]['chain']} / {rows[1]['chain']}: {rows[0]['wall_time_s'] / rows[1]['wall_time_s']:.2f}x"
        )
    if args.profile:
        console.print(where_time_goes(args.profile))


if __name__ == "__main__":
    main()
