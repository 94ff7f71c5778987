"""Run a scenario (or a grid of them) and write its results: metrics, CSVs, plots and a report."""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import tempfile
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from simulation.backends import make_backend, pack_folder, unpack_folder
from simulation.engine import run_simulation
from simulation.metrics import summarize, sweep_row, with_sybil_gains, write_csvs, write_metrics, write_sweep_csv
from simulation.plots import plot_run, plot_sweep
from simulation.report import write_report, write_sweep_report
from simulation.results import RoundFigures, RunMetrics, SweepRow
from simulation.scenario import Scenario, sweep_scenarios


def simulate(
    scenario: Scenario,
    out_dir: Path,
    *,
    chain_target: str = "embedded",
    on_round: Callable[[int, RoundFigures], None] | None = None,
) -> RunMetrics:
    """Run ``scenario`` and write ``metrics.json``, ``timing.json``, ``result.json``, CSVs, PNGs and
    ``report.md`` into ``out_dir``; returns the summary."""
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)  # an unwritable place fails before the run, not after
    try:
        with tempfile.TemporaryDirectory(prefix="agentmarket-sim-") as work:
            result = run_simulation(scenario, chain_target=chain_target, work_dir=Path(work), on_round=on_round)
    except BaseException:
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()  # interrupted or failed: leave no empty folder behind
        raise
    summary = summarize(result)
    write_metrics(summary, out_dir)
    write_csvs(result, out_dir)
    (out_dir / "result.json").write_text(json.dumps(result.to_json(), indent=2, sort_keys=True) + "\n")
    (out_dir / "scenario.json").write_text(scenario.model_dump_json(indent=2) + "\n")
    images = plot_run(result, summary, out_dir)
    write_report(result, summary, images, out_dir)
    return summary


def _point_dir(number: int, overrides: dict[str, str]) -> str:
    """``point-03-royalty.rule=equal``: numbered, so a grid may repeat a point (replicates)."""
    label = "-".join(f"{k}={v}" for k, v in overrides.items())
    return f"point-{number:02d}" + (f"-{label}" if label else "")


#: Suffix of the folder a grid point writes into until it has finished (then renamed to its own name).
INCOMPLETE = ".incomplete"


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) stopped a sweep: the running grid points were stopped at once and their
    unfinished folders removed; ``finished`` grid points (of ``total``) kept their results in ``out_dir``."""

    def __init__(self, finished: int, total: int, out_dir: Path) -> None:
        self.finished, self.total, self.out_dir = finished, total, out_dir
        super().__init__(
            f"{finished} of {total} grid points finished (their folders are in {out_dir}); the unfinished ones were "
            "stopped and their folders removed"
        )


def _grid_point(job: tuple[int, dict[str, str], Scenario, Path, str]) -> tuple[int, SweepRow]:
    """Run one grid point into ``<its folder>.incomplete``, renamed to its folder once every file is written
    (a folder of a previous run by that name is replaced only then)."""
    index, params, scenario, out_dir, chain_target = job
    staging = out_dir.with_name(out_dir.name + INCOMPLETE)
    if staging.exists():
        shutil.rmtree(staging)
    try:
        row = sweep_row(params, simulate(scenario, staging, chain_target=chain_target))
    except SystemExit as stop:  # SIGTERM in a worker: the simulation unwound (temporary files, nodes) ...
        if multiprocessing.parent_process() is None:
            raise
        os._exit(stop.code if isinstance(stop.code, int) else 1)  # ... so skip the interpreter's slow teardown
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)
    return index, row


def _shipped_point(job: tuple[int, dict[str, str], Scenario, Path, str]) -> tuple[int, SweepRow, dict[str, bytes]]:
    """Run one grid point into a temporary folder of the worker (which may be another machine) and return
    its files, for a backend without a shared file system."""
    index, params, scenario, out_dir, chain_target = job
    with tempfile.TemporaryDirectory(prefix="agentmarket-point-") as work:
        local = Path(work) / out_dir.name
        index, row = _grid_point((index, params, scenario, local, chain_target))
        return index, row, pack_folder(local)


def _store_point(files: dict[str, bytes], out_dir: Path) -> None:
    """Write a shipped point's files into ``<its folder>.incomplete``, then rename it to its folder."""
    staging = out_dir.with_name(out_dir.name + INCOMPLETE)
    shutil.rmtree(staging, ignore_errors=True)
    unpack_folder(files, staging)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    staging.rename(out_dir)


def _remove_unfinished(jobs: list[tuple[int, dict[str, str], Scenario, Path, str]], done: set[int]) -> None:
    for index, _params, _scenario, out_dir, _chain in jobs:
        if index not in done:
            shutil.rmtree(out_dir.with_name(out_dir.name + INCOMPLETE), ignore_errors=True)


def sweep(
    scenario: Scenario,
    params: list[str],
    out_dir: Path,
    *,
    workers: int = 1,
    chain_target: str = "embedded",
    on_point: Callable[[SweepRow], None] | None = None,
    backend: str = "process",
    ray_address: str | None = None,
) -> list[SweepRow]:
    """Run every grid point of ``params`` (each point with its own chain: on ``workers`` processes, or as Ray
    tasks with ``backend="ray"``, on the cluster at ``ray_address`` if given; see ``simulation.backends``) and write
    ``sweep.csv``, ``sweep.json``, comparison plots and ``report.md``; returns one row per point, in grid order.

    A point writes into ``point-NN-….incomplete`` and is renamed to ``point-NN-…`` once finished. On Ctrl-C
    (KeyboardInterrupt, or SIGTERM where the caller turns it into one) the worker processes are terminated at
    once, the unfinished points' folders removed, and :class:`SweepInterrupted` raised; a failing point
    stops the sweep the same way and its exception is raised. ``BackendUnavailable`` is raised before any
    point runs when the backend cannot (Ray not installed, its cluster unreachable).
    """
    grid = sweep_scenarios(scenario, params)
    jobs = [
        (index, overrides, point, out_dir / _point_dir(index + 1, overrides), chain_target)
        for index, (overrides, point) in enumerate(grid)
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    rows: dict[int, SweepRow] = {}

    def finished(index: int, row: SweepRow) -> None:
        rows[index] = row
        if on_point:
            on_point(row)

    runner = make_backend(backend, workers=workers, ray_address=ray_address)
    try:
        if runner.shared_filesystem:
            with closing(runner.map(_grid_point, jobs)) as results:  # closing stops every job still running
                for index, row in results:
                    finished(index, row)
        else:
            with closing(runner.map(_shipped_point, jobs)) as shipped:
                for index, row, files in shipped:
                    _store_point(files, jobs[index][3])
                    finished(index, row)
    except KeyboardInterrupt:
        _remove_unfinished(jobs, set(rows))
        raise SweepInterrupted(len(rows), len(jobs), out_dir) from None
    except BaseException:
        _remove_unfinished(jobs, set(rows))
        raise
    ordered = with_sybil_gains([rows[index] for index in sorted(rows)])
    write_sweep_csv(ordered, out_dir)
    (out_dir / "sweep.json").write_text(json.dumps([row.to_json() for row in ordered], indent=2, sort_keys=True) + "\n")
    images = plot_sweep(ordered, out_dir)
    write_sweep_report(ordered, images, out_dir)
    return ordered
