"""``agentmarket simulate`` and ``agentmarket sweep`` (a plugin of the ``agentmarket`` CLI)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from marketplace.chain.units import format_units

if TYPE_CHECKING:  # the CLI imports the simulation's modules only when a command runs
    from simulation.results import Comparison, RoundFigures, RunMetrics, SeededMetrics

console = Console(highlight=False)

ScenarioArgument = Annotated[
    Path, typer.Argument(help="A packaged scenario (baseline, noisy-producers, free-riders, sybil) or a TOML file.")
]
OutOption = Annotated[Path, typer.Option("--out", help="Where metrics, CSVs, plots and the report go.")]
ChainOption = Annotated[str, typer.Option("--chain", help="embedded, anvil, or an RPC URL.")]
EngineOption = Annotated[
    str | None,
    typer.Option(
        "--engine",
        help="fast (contracts called directly, vouchers checked in process) or full (HTTP gateway, SDK, agent "
        "wallets); same economic results. Default: the scenario's engine key, or auto: fast from 2,000 paid "
        "calls (consumers x queries per round x rounds) up, full below.",
    ),
]


def _with_engine(scenario: Any, engine: str | None) -> Any:
    """``scenario`` with ``--engine`` applied (checked like the scenario's own ``engine`` key)."""
    return scenario if engine is None else scenario.with_overrides({"engine": engine})


ParamOption = Annotated[list[str] | None, typer.Option("--param", help="KEY=VALUE override (sweep: KEY=V1,V2,…).")]
SeedsOption = Annotated[
    int | None,
    typer.Option("--seeds", help="Run over N seeds (the scenario's seed, +1, …): every metric as mean with a 95% "
                 "interval, per-seed rows in seeds.csv."),
]  # fmt: skip


def _undefined(value: Any) -> str | None:
    """``undefined (reason)`` for an undefined metric, else None."""
    from simulation.results import Undefined

    return f"undefined ({value.reason})" if isinstance(value, Undefined) else None


def _units(value: Any) -> str:
    return _undefined(value) or ("-" if value is None else f"{format_units(int(value))}")


def _ratio(value: Any) -> str:
    return _undefined(value) or ("-" if value is None else f"{value:.3f}")


def check_settings() -> None:
    """Fail in one line, before anything runs, on a bad AGENTMARKET_* value of the server settings the
    simulation's own server reads."""
    from marketplace.api import Settings

    Settings.load()


def summary_table(summary: RunMetrics, title: str) -> Table:
    """The one-screen summary of a run."""
    table = Table(title=title, show_header=False)
    correlation = summary.revenue_value_correlation
    rows = [
        ("producer revenue (tUSD)", ", ".join(_units(v) for v in summary.producer_revenue)),
        ("ground-truth value (tUSD)", ", ".join(_units(round(v)) for v in summary.producer_true_value)),
        ("distance of royalty splits from truth", _ratio(summary.truth_distance)),
        ("royalties ~ value (pearson / spearman)",
         f"{_ratio(summary.royalty_value_correlation.pearson)} / {_ratio(summary.royalty_value_correlation.spearman)}"),
        ("revenue ~ value (pearson / spearman)", f"{_ratio(correlation.pearson)} / {_ratio(correlation.spearman)}"),
        ("Gini of producer revenue", _ratio(summary.gini_producer_revenue)),
        ("share of all spend reaching producers", _ratio(summary.producer_share.total)),
        ("  of it license sales / royalties",
         f"{_ratio(summary.producer_share.license)} / {_ratio(summary.producer_share.royalty)}"),
        ("builder profit (tUSD)", ", ".join(_units(v) for v in summary.builder_profit.per_builder)),
        ("consumer surplus (tUSD)", _units(summary.consumer_surplus.total)),
        ("consumer spend / protocol fee (tUSD)", f"{_units(summary.consumer_spend)} / {_units(summary.protocol_fee)}"),
        ("answers right", f"{summary.correct}/{summary.answered}"),
        ("gas used / transactions", f"{summary.gas_used:,} / {summary.tx_count}"),
        ("wall time / on-chain actions per s",
         f"{summary.timing.wall_time:.1f} s / {_ratio(summary.timing.actions_per_second)}"),
    ]  # fmt: skip
    for name, value in rows:
        table.add_row(name, value)
    return table


def simulate(
    scenario_file: ScenarioArgument,
    out: OutOption = Path("sim-out"),
    chain: ChainOption = "embedded",
    seed: Annotated[int | None, typer.Option("--seed", help="Override the scenario's seed.")] = None,
    param: ParamOption = None,
    seeds: SeedsOption = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="With --seeds: seeds run in parallel.")] = 1,
    engine: EngineOption = None,
) -> None:
    """Run a seeded simulation where every payment goes through the contracts; write metrics, plots, a report.
    With --seeds N: N runs (seed, seed+1, …), each metric as mean with its 95% Student-t interval."""
    from simulation.scenario import load_scenario

    check_settings()
    scenario = load_scenario(scenario_file, param or [], seed=seed)  # a mistake is told before the heavy imports
    scenario = _with_engine(scenario, engine)
    if seeds is not None:
        _simulate_seeds(scenario, out, seeds, workers, chain)
        return
    from simulation.runner import simulate as run

    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[last]}"), TimeElapsedColumn(), console=console)  # fmt: skip
    with progress:
        task = progress.add_task(f"{scenario.name} (seed {scenario.seed}) rounds", total=scenario.rounds, last="")

        def advance(number: int, figures: RoundFigures) -> None:
            spent = format_units(figures.consumer_spend)
            progress.update(task, completed=number, last=f"{figures.correct}/{figures.answered} right, {spent} tUSD")

        summary = run(scenario, out, chain_target=chain, on_round=advance)
    console.print(summary_table(summary, f"{scenario.name}: seed {scenario.seed}, rule {scenario.royalty.rule}"))
    console.print(f"metrics: {out / 'metrics.json'}  report: {out / 'report.md'}", style="dim")


def sweep(
    scenario_file: ScenarioArgument,
    param: ParamOption = None,
    out: OutOption = Path("sweep-out"),
    workers: Annotated[int, typer.Option("--workers", min=1, help="Grid points run in parallel processes.")] = 1,
    chain: ChainOption = "embedded",
    backend: Annotated[
        str, typer.Option("--backend", help="process (the default: --workers processes) or ray (Ray tasks).")
    ] = "process",
    ray_address: Annotated[
        str | None,
        typer.Option("--ray-address", help="With --backend ray: a Ray cluster (ray://HOST:10001); default local."),
    ] = None,
    seeds: SeedsOption = None,
    engine: EngineOption = None,
) -> None:
    """Run a scenario over a grid of parameters (each point its own process and chain, or a Ray task with
    --backend ray); one table at the end. With --seeds N every point runs the same N seeds and is compared with
    the first point seed by seed. Ctrl-C stops every running point at once and removes its unfinished folder
    (exit 130)."""
    from marketplace.cli.plugin import interrupt_on_signals
    from simulation.backends import make_backend
    from simulation.scenario import load_scenario, parse_sweep

    check_settings()
    make_backend(backend, workers=workers, ray_address=ray_address)  # a missing extra is told before the run
    scenario = _with_engine(load_scenario(scenario_file), engine)
    total = len(parse_sweep(param or []))
    if seeds is not None:
        _sweep_seeds(scenario, param or [], out, seeds, workers, chain, total, backend, ray_address)
        return
    from simulation.runner import SweepInterrupted
    from simulation.runner import sweep as run

    interrupt_on_signals()  # SIGTERM too: the workers are stopped and cleaned up, never left running
    try:
        with Progress(TextColumn("grid points"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console) as progress:  # fmt: skip
            task = progress.add_task("sweep", total=total)
            rows = run(scenario, param or [], out, workers=workers, chain_target=chain,
                       on_point=lambda _row: progress.advance(task), backend=backend,
                       ray_address=ray_address)  # fmt: skip
    except SweepInterrupted as stopped:
        Console(stderr=True, highlight=False, soft_wrap=True).print(f"interrupted: {stopped}")
        raise typer.Exit(130) from None
    table = Table(title=f"{scenario.name}: {total} grid points")
    keys = list(dict.fromkeys(k for row in rows for k in row.params))
    sybil = any(row.metrics.sybil_gain is not None for row in rows)  # a Sybil sweep with its unsplit control
    for column in [*keys, "revenue~value", "Gini", "producer share", "builder profit", "surplus", "accuracy",
                   *(["Sybil gain"] if sybil else [])]:  # fmt: skip
        table.add_column(column)
    for row in rows:
        m = row.metrics
        table.add_row(*[row.params.get(k, "") for k in keys], _ratio(m.revenue_value_spearman),
                      _ratio(m.gini_producer_revenue), _ratio(m.producer_share), _units(m.builder_profit_total),
                      _units(m.consumer_surplus_total), _ratio(m.accuracy),
                      *([_ratio(m.sybil_gain)] if sybil else []))  # fmt: skip
    console.print(table)
    console.print(f"table: {out / 'sweep.csv'}  report: {out / 'report.md'}", style="dim")


def _seeded_progress(runs: int) -> tuple[Progress, Any]:
    """A progress bar over ``runs`` seeded runs."""
    progress = Progress(TextColumn("runs (grid points x seeds)"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=console)  # fmt: skip
    return progress, progress.add_task("runs", total=runs)


def _run_seeded(run: Any, runs: int) -> Any:
    """Call ``run(on_run)`` under a progress bar; Ctrl-C / SIGTERM stop it (exit 130) as a sweep does."""
    from marketplace.cli.plugin import interrupt_on_signals
    from simulation.runner import SweepInterrupted

    interrupt_on_signals()
    progress, task = _seeded_progress(runs)
    try:
        with progress:
            return run(lambda _row: progress.advance(task))
    except SweepInterrupted as stopped:
        Console(stderr=True, highlight=False, soft_wrap=True).print(f"interrupted: {stopped}")
        raise typer.Exit(130) from None


def _simulate_seeds(scenario: Any, out: Path, seeds: int, workers: int, chain: str) -> None:
    """``simulate --seeds N``: one table line per metric, mean [95% interval]."""
    from simulation.runner import seed_list, simulate_seeds

    chosen = seed_list(scenario.seed, seeds)  # a bad count is a one-line error before any run
    point = _run_seeded(
        lambda on_run: simulate_seeds(scenario, out, seeds, workers=workers, chain_target=chain, on_run=on_run), seeds
    )
    console.print(seeded_table([point], f"{scenario.name}: seeds {chosen[0]} to {chosen[-1]}, "
                                        f"rule {scenario.royalty.rule}, mean [95% interval]"))  # fmt: skip
    console.print(f"metrics: {out / 'metrics.json'}  seeds: {out / 'seeds.csv'}  report: {out / 'report.md'}",
                  style="dim")  # fmt: skip


def _sweep_seeds(scenario: Any, params: list[str], out: Path, seeds: int, workers: int, chain: str, total: int,
                 backend: str = "process", ray_address: str | None = None) -> None:  # fmt: skip
    """``sweep --seeds N``: one table line per grid point, each metric mean [95% interval], then the comparisons
    of the headline metrics with the first point."""
    from simulation.runner import check_seeded_sweep, seed_list, sweep_seeds

    chosen = seed_list(scenario.seed, seeds)  # a bad count or grid is a one-line error before any run
    check_seeded_sweep(params)
    points, comparisons = _run_seeded(
        lambda on_run: sweep_seeds(
            scenario,
            params,
            out,
            seeds,
            workers=workers,
            chain_target=chain,
            on_run=on_run,
            backend=backend,
            ray_address=ray_address,
        ),
        total * seeds,
    )
    plain = Console(highlight=False, soft_wrap=True)  # one line per grid point, never wrapped
    plain.print(f"{scenario.name}: {total} grid points x seeds {chosen[0]} to {chosen[-1]}, mean [95% interval]")
    for line in point_lines(points):
        plain.print(line, markup=False)
    if comparisons:
        plain.print("paired differences with the first point (same seeds), [95% interval]:")
    for line in comparison_lines(points, comparisons):
        plain.print(line, markup=False)
    console.print(f"table: {out / 'sweep.csv'}  seeds: {out / 'seeds.csv'}  report: {out / 'report.md'}", style="dim")


#: The metrics the terminal shows over seeds (all are in metrics.json and the report).
HEADLINE_METRICS = (
    "truth_distance", "revenue_value_spearman", "gini_producer_revenue", "producer_share", "builder_profit_total",
    "consumer_surplus_total", "accuracy",
)  # fmt: skip


def seeded_table(points: list[SeededMetrics], title: str) -> Table:
    """A single run over seeds: one table line per metric, ``mean [low, high]``."""
    from simulation.report import METRIC_LABELS, estimate_text

    table = Table(title=title, show_header=False)
    for point in points:
        for name, (label, kind) in METRIC_LABELS.items():
            table.add_row(label, escape(estimate_text(point.estimates[name], kind)))
    return table


def point_lines(points: list[SeededMetrics]) -> list[str]:
    """One line per grid point: its name, then each headline metric ``mean [low, high]``."""
    from simulation.report import METRIC_LABELS, estimate_text, point_names

    return [
        f"{name}: " + "; ".join(
            f"{METRIC_LABELS[metric][0]}: {estimate_text(point.estimates[metric], METRIC_LABELS[metric][1])}"
            for metric in HEADLINE_METRICS
        )
        for name, point in zip(point_names(points), points, strict=True)
    ]  # fmt: skip


def comparison_lines(points: list[SeededMetrics], comparisons: list[Comparison]) -> list[str]:
    """One line per grid point after the first: each headline metric's paired difference with the first point,
    ``+d [low, high]`` and its verdict (``within noise`` when the interval contains 0)."""
    from simulation.report import METRIC_LABELS, estimate_text, point_names, verdict
    from simulation.results import Undefined

    names = point_names(points)
    each = len(comparisons) // max(len(points) - 1, 1)  # compare_points: point by point, every metric in order
    lines = []
    for number in range(1, len(points)):
        parts = [
            f"{METRIC_LABELS[c.metric][0]}: {estimate_text(c.difference, METRIC_LABELS[c.metric][1], signed=True)}"
            + ("" if isinstance(c.difference, Undefined) else f", {verdict(c)}")
            for c in comparisons[(number - 1) * each : number * each]
            if c.metric in HEADLINE_METRICS
        ]
        lines.append(f"{names[number]} vs {names[0]}: " + "; ".join(parts))
    return lines


def demo(
    chain: ChainOption = "embedded",
    llm_url: Annotated[
        str | None, typer.Option("--llm-url", help="Drive the buyer with this OpenAI-compatible LLM.")
    ] = None,
    model: Annotated[str, typer.Option("--model", help="LLM model name (with --llm-url).")] = "default",
    out: Annotated[Path | None, typer.Option("--out", help="Also write demo.json and report.md here.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as one JSON object.")] = False,
) -> None:
    """The whole story on a local chain: agents with wallets and caps buy data and model calls, and every
    payment flows back up the data lineage. Every number is read back from the chain."""
    import json
    import tempfile

    from marketplace.cli.plugin import interrupt_on_signals
    from simulation.demo import run_demo, write_outputs

    check_settings()
    interrupt_on_signals()  # Ctrl-C / SIGTERM unwind: the server, and anvil if started, are stopped
    say = (lambda _line: None) if as_json else (lambda line: console.print(f"• {line}"))
    with tempfile.TemporaryDirectory(prefix="agentmarket-demo-") as work:
        summary = run_demo(chain, llm_url=llm_url, llm_model=model, work_dir=Path(work), say=say)
    if out:
        write_outputs(summary, out)
    if as_json:
        print(json.dumps(summary))
        return
    console.print(demo_tables(summary))
    if out:
        console.print(f"wrote {out / 'demo.json'} and {out / 'report.md'}", style="dim")


#: How each kind of demo payment reads in the table.
_PAID_BY = {"license": "a license", "x402": "one download over x402", "channel": "calls over a channel"}


def demo_tables(summary: dict[str, Any]) -> Table:
    """Who paid whom, who funded the agents, who earned what, and the totals; every party by name."""
    parties: dict[str, str] = summary.get("parties", {})

    def name(address: str) -> str:
        return parties.get(address, address)

    owners = {asset["asset_id"]: (asset["kind"], name(asset["owner"])) for asset in summary["assets"]}
    table = Table(title=f"agentmarket demo on chain {summary['chain_id']} ({summary['chain']})")
    for column in ("", "who", "what", "tUSD"):
        table.add_column(column)
    for payment in summary["payments"]:
        kind, owner = owners.get(payment["asset_id"], ("asset", "?"))
        how = _PAID_BY.get(payment["kind"], payment["kind"])
        table.add_row("paid", name(payment["from"]), f"{kind} #{payment['asset_id']} of {owner}: {how}",
                      format_units(payment["amount"]))  # fmt: skip
    owner = next((who for who in parties.values() if who.startswith("owner")), "owner")
    for agent, amount in summary.get("owner_funding", {}).items():
        table.add_row("funded", owner, f"the {agent} agent's payments (spend permission)", format_units(amount))
    for address, earned in summary["earnings_by_address"].items():
        table.add_row("earned", name(address), "withdrawn from its vaults", format_units(earned["amount"]))
    table.add_row("fee", "protocol treasury", f"released from {len(summary['assets'])} vaults",
                  format_units(summary["protocol_fee"]))  # fmt: skip
    accuracy = summary["model_accuracy"]
    table.add_section()
    table.add_row("", "reached data producers", f"{summary['producer_share']:.1%} of all payments", "")
    on_queries = accuracy["buyer_queries"]
    queries = f"{on_queries:.3f} on the buyer's queries" if on_queries is not None else "no buyer query answered"
    table.add_row("", "model accuracy", f"{accuracy['validation']:.3f} validation, {queries}", "")
    buyer = summary["buyer"]
    calls = f"{buyer['calls']} paid model calls ({buyer['brain']}, stopped: {buyer['stopped']})"
    table.add_row("", "buyer agent", calls, "")
    table.add_row("", "on chain", f"{summary['tx_count']} transactions, {summary['gas_used']:,} gas", "")
    return table


def study(
    out: OutOption = Path("study-out"),
    seeds: Annotated[int, typer.Option("--seeds", help="Seeds per rule (the same under every rule).")] = 10,
    seed: Annotated[int, typer.Option("--seed", help="The first seed.")] = 7,
    rules: Annotated[
        str, typer.Option("--rules", help="Royalty rules to compare, comma-separated; the first is the reference.")
    ] = "equal,leave_one_out,knn_shapley,mc_shapley,banzhaf,beta_shapley",
    param: ParamOption = None,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Runs in parallel processes.")] = 1,
    chain: ChainOption = "embedded",
) -> None:
    """Which royalty rule pays producers in line with their data's value? Runs the noisy-producers, free-riders
    (provenance off and on) and sybil (flat and per-row licenses, split and unsplit) scenarios under every rule
    over the same seeds and writes study.md (the answer, with 95% intervals and paired comparisons), study.csv,
    study.json and the figure study.png/.svg/.pdf."""
    from simulation.runner import seed_list
    from simulation.study import RUNS_PER_RULE_AND_SEED, plan_study, run_study, summary_lines

    check_settings()
    chosen = [rule.strip() for rule in rules.split(",") if rule.strip()]
    seed_list(seed, seeds)  # a bad count, rule or override is a one-line error before any run
    plan_study(chosen, seed, param or [], out)
    runs = seeds * len(chosen) * RUNS_PER_RULE_AND_SEED
    measures = _run_seeded(
        lambda on_run: run_study(out, seeds=seeds, first_seed=seed, rules=chosen, workers=workers,
                                 chain_target=chain, overrides=param or [], on_run=on_run),
        runs,
    )  # fmt: skip
    plain = Console(highlight=False, soft_wrap=True)
    for line in summary_lines(measures, chosen):
        plain.print(line, markup=False)
    console.print(f"answer: {out / 'study.md'}  figure: {out / 'study.png'}  table: {out / 'study.csv'}",
                  style="dim")  # fmt: skip


def register(app: typer.Typer) -> None:
    """Add ``simulate``, ``sweep``, ``study`` and ``demo`` to the ``agentmarket`` CLI."""
    app.command("simulate")(simulate)
    app.command("sweep")(sweep)
    app.command("study")(study)
    app.command("demo")(demo)
