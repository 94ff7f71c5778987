"""Run a scenario (or a grid of them), once or over several seeds, and write its results: metrics, CSVs,
plots and a report.

Over seeds (``simulate_seeds``, ``sweep_seeds``) every grid point runs seeds ``seed, seed + 1, …,
seed + N - 1`` (``seed`` the scenario's), each run a job of the same backend a sweep uses (processes, or
Ray tasks), in its own ``seed-S`` folder; the point's ``metrics.json`` holds every metric as a mean with its
95% Student-t interval and ``seeds.csv`` the per-seed rows. Grid points run the same seeds, so they compare
seed by seed (paired).
"""

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
from simulation.engine import choose_engine, run_simulation
from simulation.manifest import run_manifest, sweep_manifest, write_manifest
from simulation.metrics import (
    aggregate_seeds,
    compare_points,
    summarize,
    sweep_row,
    with_sybil_gains,
    write_csvs,
    write_metrics,
    write_seeded_metrics,
    write_seeded_sweep_csv,
    write_seeds_csv,
    write_sweep_csv,
)
from simulation.plots import plot_run, plot_seeded, plot_sweep
from simulation.report import write_report, write_seeded_report, write_sweep_report
from simulation.results import Comparison, RoundFigures, RunMetrics, SeededMetrics, SweepRow
from simulation.scenario import Scenario, ScenarioError, parse_sweep, sweep_scenarios
from simulation.txlog import RunRecord, write_records


def simulate(
    scenario: Scenario,
    out_dir: Path,
    *,
    chain_target: str = "embedded",
    on_round: Callable[[int, RoundFigures], None] | None = None,
) -> RunMetrics:
    """Run ``scenario`` and write into ``out_dir``: ``metrics.json``, ``timing.json``, ``result.json``, the CSVs
    per producer, builder, consumer and round, the money's records (``transactions.csv``, ``vouchers.csv``,
    ``round_revenue.csv``, Parquet beside them with pyarrow: ``simulation.txlog``), ``manifest.json`` and
    ``scenario.toml`` (``simulation.manifest``), plots (PNG, SVG, PDF) and ``report.md``; returns the summary."""
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)  # an unwritable place fails before the run, not after
    record = RunRecord()
    try:
        with tempfile.TemporaryDirectory(prefix="agentmarket-sim-") as work:
            result = run_simulation(scenario, chain_target=chain_target, work_dir=Path(work), on_round=on_round,
                                    record=record)  # fmt: skip
    except BaseException:
        if created and not any(out_dir.iterdir()):
            out_dir.rmdir()  # interrupted or failed: leave no empty folder behind
        raise
    summary = summarize(result)
    write_metrics(summary, out_dir)
    write_csvs(result, out_dir)
    write_records(record, out_dir)
    manifest = run_manifest(scenario, chain_target=chain_target, chain_kind=result.chain.kind,
                            chain_id=result.chain.chain_id, engine=choose_engine(scenario))  # fmt: skip
    write_manifest(manifest, scenario, out_dir)
    (out_dir / "result.json").write_text(json.dumps(result.to_json(), indent=2, sort_keys=True) + "\n")
    (out_dir / "scenario.json").write_text(scenario.model_dump_json(indent=2) + "\n")
    images = plot_run(result, summary, out_dir)
    write_report(result, summary, images, out_dir)
    return summary


def point_dir(number: int, overrides: dict[str, str]) -> str:
    """``point-03-royalty.rule=equal``: numbered, so a grid may repeat a point (replicates)."""
    label = "-".join(f"{k}={v}" for k, v in overrides.items())
    return f"point-{number:02d}" + (f"-{label}" if label else "")


#: Suffix of the folder a grid point writes into until it has finished (then renamed to its own name).
INCOMPLETE = ".incomplete"


class SweepInterrupted(KeyboardInterrupt):
    """Ctrl-C (or SIGTERM) stopped a sweep: the running grid points were stopped at once and their
    unfinished folders removed; ``finished`` grid points (of ``total``) kept their results in ``out_dir``."""

    def __init__(self, finished: int, total: int, out_dir: Path, unit: str = "grid points") -> None:
        self.finished, self.total, self.out_dir = finished, total, out_dir
        super().__init__(
            f"{finished} of {total} {unit} finished (their folders are in {out_dir}); the unfinished ones were "
            "stopped and their folders removed"
        )


#: One simulation of a sweep: (job index, the grid point's overrides, its scenario, its folder, chain target).
Job = tuple[int, dict[str, str], Scenario, Path, str]


def _grid_point(job: Job) -> tuple[int, SweepRow]:
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


def _shipped_point(job: Job) -> tuple[int, SweepRow, dict[str, bytes]]:
    """Run one simulation into a temporary folder of the worker (which may be another machine) and return
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


def _remove_unfinished(jobs: list[Job], done: set[int]) -> None:
    for index, _params, _scenario, out_dir, _chain in jobs:
        if index not in done:
            shutil.rmtree(out_dir.with_name(out_dir.name + INCOMPLETE), ignore_errors=True)


def _run_jobs(
    jobs: list[Job],
    out_dir: Path,
    *,
    workers: int,
    backend: str = "process",
    ray_address: str | None = None,
    on_done: Callable[[SweepRow], None] | None = None,
    unit: str = "grid points",
) -> dict[int, SweepRow]:
    """Run ``jobs`` (each one simulation into its own folder) on ``backend`` (``workers`` processes, or Ray
    tasks: ``simulation.backends``); their rows by job index.

    On Ctrl-C the running jobs are stopped at once, the unfinished folders removed and :class:`SweepInterrupted`
    raised; a failing job stops the others the same way and its exception is raised. ``BackendUnavailable``
    is raised before any job runs when the backend cannot (Ray not installed, its cluster unreachable)."""
    rows: dict[int, SweepRow] = {}

    def finished(index: int, row: SweepRow) -> None:
        rows[index] = row
        if on_done:
            on_done(row)

    runner = make_backend(backend, workers=min(workers, len(jobs)), ray_address=ray_address)
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
        raise SweepInterrupted(len(rows), len(jobs), out_dir, unit) from None
    except BaseException:
        _remove_unfinished(jobs, set(rows))
        raise
    return rows


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
    stops the sweep the same way and its exception is raised.
    """
    grid = sweep_scenarios(scenario, params)
    jobs = [
        (index, overrides, point, out_dir / point_dir(index + 1, overrides), chain_target)
        for index, (overrides, point) in enumerate(grid)
    ]
    out_dir.mkdir(parents=True, exist_ok=True)
    write_manifest(sweep_manifest(scenario, params=params, seeds=None, chain_target=chain_target, workers=workers,
                                  backend=backend, ray_address=ray_address), scenario, out_dir)  # fmt: skip
    rows = _run_jobs(jobs, out_dir, workers=workers, backend=backend, ray_address=ray_address, on_done=on_point)
    ordered = with_sybil_gains([rows[index] for index in sorted(rows)])
    write_sweep_csv(ordered, out_dir)
    (out_dir / "sweep.json").write_text(json.dumps([row.to_json() for row in ordered], indent=2, sort_keys=True) + "\n")
    images = plot_sweep(ordered, out_dir)
    write_sweep_report(ordered, images, out_dir)
    return ordered


# --------------------------------------------------------------------------------------------------
# Over seeds

#: Largest seed a scenario accepts.
MAX_SEED = 2**32 - 1


def seed_list(first: int, count: int) -> tuple[int, ...]:
    """The ``count`` seeds a run over seeds uses: ``first, first + 1, …``. Raises ``ScenarioError`` when
    ``count`` < 2 (an interval needs two) or the last seed would pass ``MAX_SEED``."""
    if count < 2:
        raise ScenarioError(f"--seeds needs at least 2 seeds for an interval, got {count}")
    if first + count - 1 > MAX_SEED:
        raise ScenarioError(
            f"seeds {first}..{first + count - 1} pass the largest seed {MAX_SEED}; "
            "give a smaller --seed or fewer --seeds"
        )
    return tuple(range(first, first + count))


def check_seeded_sweep(params: list[str]) -> None:
    """Raise ``ScenarioError`` when a sweep over seeds varies ``seed`` itself (the points must share their seeds
    to be compared seed by seed)."""
    if any("seed" in overrides for overrides in parse_sweep(params)):
        raise ScenarioError("--seeds runs every grid point on the same seeds; do not sweep seed itself")


def _seed_jobs(
    grid: list[tuple[dict[str, str], Scenario, Path]], seeds: tuple[int, ...], chain_target: str
) -> list[Job]:
    """One job per (grid point, seed), point-major: job ``p * len(seeds) + s`` runs seed ``seeds[s]`` of point
    ``p`` into ``<point folder>/seed-S``."""
    jobs: list[Job] = []
    for overrides, point, folder in grid:
        for seed in seeds:
            job_scenario = point.with_overrides({"seed": str(seed)})
            jobs.append((len(jobs), overrides, job_scenario, folder / f"seed-{seed}", chain_target))
    return jobs


def _seeded_points(
    grid: list[tuple[dict[str, str], Scenario, Path]],
    seeds: tuple[int, ...],
    out_dir: Path,
    *,
    workers: int,
    chain_target: str,
    on_run: Callable[[SweepRow], None] | None,
    backend: str = "process",
    ray_address: str | None = None,
) -> list[SeededMetrics]:
    """Run every grid point over ``seeds``; write each point's ``metrics.json`` and ``seeds.csv`` into its folder."""
    jobs = _seed_jobs(grid, seeds, chain_target)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = _run_jobs(jobs, out_dir, workers=workers, backend=backend, ray_address=ray_address, on_done=on_run,
                     unit="runs (grid points x seeds)")  # fmt: skip
    points = []
    for number, (overrides, _point, folder) in enumerate(grid):
        runs = [rows[number * len(seeds) + offset].metrics for offset in range(len(seeds))]
        point = aggregate_seeds(overrides, seeds, runs)
        write_seeded_metrics(point, folder)
        write_seeds_csv([point], folder)
        points.append(point)
    return points


def simulate_seeds(
    scenario: Scenario,
    out_dir: Path,
    seeds: int,
    *,
    workers: int = 1,
    chain_target: str = "embedded",
    on_run: Callable[[SweepRow], None] | None = None,
    backend: str = "process",
    ray_address: str | None = None,
) -> SeededMetrics:
    """Run ``scenario`` over ``seeds`` seeds (from its own seed up, see :func:`seed_list`) on ``workers``
    processes: each run's files in ``out_dir/seed-S``, and in ``out_dir`` ``metrics.json`` (every scalar metric
    as mean, 95% interval, n and sd), ``seeds.csv`` (one line per seed), error-bar plots and ``report.md``.
    Raises ``ScenarioError`` for a bad seed count, :class:`SweepInterrupted` on Ctrl-C."""
    chosen = seed_list(scenario.seed, seeds)
    write_manifest(sweep_manifest(scenario, params=[], seeds=chosen, chain_target=chain_target, workers=workers,
                                  backend=backend, command="simulate"), scenario, out_dir)  # fmt: skip
    point = _seeded_points([({}, scenario, out_dir)], chosen, out_dir, workers=workers, chain_target=chain_target,
                           on_run=on_run, backend=backend, ray_address=ray_address)[0]  # fmt: skip
    images = plot_seeded([point], out_dir)
    write_seeded_report([point], [], images, out_dir, title=scenario.name)
    return point


def sweep_seeds(
    scenario: Scenario,
    params: list[str],
    out_dir: Path,
    seeds: int,
    *,
    workers: int = 1,
    chain_target: str = "embedded",
    on_run: Callable[[SweepRow], None] | None = None,
    backend: str = "process",
    ray_address: str | None = None,
) -> tuple[list[SeededMetrics], list[Comparison]]:
    """Run every grid point of ``params`` over the same ``seeds`` seeds (grid points x seeds as jobs on ``workers``
    processes). Writes each point's folder as :func:`simulate_seeds` does (without plots), and in ``out_dir``
    ``sweep.csv`` (estimates per point), ``seeds.csv`` (every point's seeds), ``sweep.json``,
    ``comparisons.json`` (each point against the first, paired per seed), error-bar plots and ``report.md``.
    Raises ``ScenarioError`` when ``seed`` itself is swept (the points must share their seeds)."""
    check_seeded_sweep(params)
    chosen = seed_list(scenario.seed, seeds)
    grid = [
        (overrides, point, out_dir / point_dir(index + 1, overrides))
        for index, (overrides, point) in enumerate(sweep_scenarios(scenario, params))
    ]
    write_manifest(sweep_manifest(scenario, params=params, seeds=chosen, chain_target=chain_target, workers=workers,
                                  backend=backend, ray_address=ray_address), scenario, out_dir)  # fmt: skip
    points = _seeded_points(grid, chosen, out_dir, workers=workers, chain_target=chain_target, on_run=on_run,
                            backend=backend, ray_address=ray_address)  # fmt: skip
    comparisons = compare_points(points)
    write_seeded_sweep_csv(points, out_dir)
    write_seeds_csv(points, out_dir)
    (out_dir / "sweep.json").write_text(json.dumps([p.to_json() for p in points], indent=2, sort_keys=True) + "\n")
    (out_dir / "comparisons.json").write_text(
        json.dumps([c.to_json() for c in comparisons], indent=2, sort_keys=True) + "\n"
    )
    images = plot_seeded(points, out_dir)
    write_seeded_report(points, comparisons, images, out_dir, title=scenario.name)
    return points, comparisons
