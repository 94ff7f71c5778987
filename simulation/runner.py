"""Run a scenario (or a grid of them) and write its results: metrics, CSVs, plots and a report."""

from __future__ import annotations

import json
import multiprocessing
import tempfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

from simulation.engine import run_simulation
from simulation.metrics import summarize, sweep_row, write_csvs, write_metrics, write_sweep_csv
from simulation.plots import plot_run, plot_sweep
from simulation.report import write_report, write_sweep_report
from simulation.scenario import Scenario, sweep_scenarios


def simulate(
    scenario: Scenario,
    out_dir: Path,
    *,
    chain_target: str = "embedded",
    on_round: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run ``scenario`` and write ``metrics.json``, ``timing.json``, ``result.json``, CSVs, PNGs and
    ``report.md`` into ``out_dir``; returns the summary."""
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="agentmarket-sim-") as work:
        result = run_simulation(scenario, chain_target=chain_target, work_dir=Path(work), on_round=on_round)
    summary = summarize(result)
    write_metrics(summary, out_dir)
    write_csvs(result, out_dir)
    stable = {k: v for k, v in result.items() if k not in ("wall_time", "onchain_actions")}
    (out_dir / "result.json").write_text(json.dumps(stable, indent=2, sort_keys=True) + "\n")
    (out_dir / "scenario.json").write_text(scenario.model_dump_json(indent=2) + "\n")
    images = plot_run(result, summary, out_dir)
    write_report(result, summary, images, out_dir)
    return summary


def _point_dir(number: int, overrides: dict[str, str]) -> str:
    """``point-03-royalty.rule=equal``: numbered, so a grid may repeat a point (replicates)."""
    label = "-".join(f"{k}={v}" for k, v in overrides.items())
    return f"point-{number:02d}" + (f"-{label}" if label else "")


def _grid_point(job: tuple[dict[str, str], Scenario, Path, str]) -> dict[str, Any]:
    params, scenario, out_dir, chain_target = job
    return sweep_row(params, simulate(scenario, out_dir, chain_target=chain_target))


def sweep(
    scenario: Scenario,
    params: list[str],
    out_dir: Path,
    *,
    workers: int = 1,
    chain_target: str = "embedded",
    on_point: Callable[[dict[str, Any]], None] | None = None,
) -> list[dict[str, Any]]:
    """Run every grid point of ``params`` (each in its own process with its own chain) and write
    ``sweep.csv``, ``sweep.json``, comparison plots and ``report.md``; returns one row per point."""
    grid = sweep_scenarios(scenario, params)
    jobs = [
        (overrides, point, out_dir / _point_dir(number, overrides), chain_target)
        for number, (overrides, point) in enumerate(grid, start=1)
    ]
    rows: list[dict[str, Any]] = []
    if workers <= 1:
        for job in jobs:
            rows.append(_grid_point(job))
            if on_point:
                on_point(rows[-1])
    else:
        context = multiprocessing.get_context("spawn")  # a fresh interpreter (and chain) per worker
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            for row in pool.map(_grid_point, jobs):
                rows.append(row)
                if on_point:
                    on_point(row)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_sweep_csv(rows, out_dir)
    (out_dir / "sweep.json").write_text(json.dumps(rows, indent=2, sort_keys=True) + "\n")
    images = plot_sweep(rows, out_dir)
    write_sweep_report(rows, images, out_dir)
    return rows
