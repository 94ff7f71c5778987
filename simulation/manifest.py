"""A reproducibility manifest for every run and sweep directory: what ran, on what, and how to run it again.

``manifest.json`` holds the project's commit (``git rev-parse HEAD`` of the source tree when it is a git
checkout, with ``dirty`` when files differ from it; else the installed package's version), the versions of
Python and the packages the numbers depend on (numpy, scikit-learn, scipy, matplotlib, web3, py-evm,
eth-tester, and anvil's when the chain was anvil), the scenario as run (after overrides; written beside it as
``scenario.toml``, which :func:`scenario_toml` makes and ``load_scenario`` reads back to the same scenario),
the seeds, the data read and how often consumers' queries repeated a held-out row (:func:`data_summary`),
the chain (target, kind, id), the engine, and the exact command that re-runs it from that directory
(``argv`` and ``command``). The same code, scenario and seed reproduce ``metrics.json`` byte for byte.
"""

from __future__ import annotations

import json
import platform
import shlex
import subprocess
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from simulation.scenario import Scenario

#: Distributions whose versions a manifest records (those that can change a run's numbers or files).
PACKAGES = ("agentmarket", "numpy", "scikit-learn", "scipy", "matplotlib", "web3", "eth-account", "py-evm",
            "eth-tester", "pyarrow", "mesa")  # fmt: skip
#: The folder a manifest's command writes the re-run into (inside the run's directory).
RERUN_DIR = "rerun"


def _toml_value(value: Any) -> str:
    """One TOML value: strings as basic strings, booleans, integers, floats (``repr``), arrays."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _toml_table(prefix: str, table: Mapping[str, Any], lines: list[str]) -> None:
    """``table`` under header ``prefix``: scalars first, then sub-tables and arrays of tables; None left out."""
    plain = {k: v for k, v in table.items() if v is not None and not _is_table(v)}
    if prefix and (plain or not table):
        lines += ["", f"[{prefix}]"]
    lines += [f"{key} = {_toml_value(value)}" for key, value in plain.items()]
    for key, value in table.items():
        name = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            _toml_table(name, value, lines)
        elif _is_table(value):
            for item in value:
                lines += ["", f"[[{name}]]"]
                lines += [f"{k} = {_toml_value(v)}" for k, v in item.items() if v is not None]


def _is_table(value: Any) -> bool:
    return isinstance(value, dict) or (
        isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)
    )


def scenario_toml(scenario: Scenario) -> str:
    """``scenario`` as TOML text, every key explicit (defaults included); ``load_scenario`` reads it back to an
    equal scenario."""
    lines = [f"# {scenario.name}, as run (every key explicit, overrides applied)"]
    _toml_table("", scenario.model_dump(mode="json"), lines)
    return "\n".join(lines) + "\n"


def project_commit() -> dict[str, Any]:
    """``{"version", "commit", "dirty"}`` of the running agentmarket: the git commit of its source tree when that
    is a git checkout and git runs (``commit`` None otherwise), ``dirty`` when tracked files differ from it."""
    version = _version("agentmarket")
    root = Path(__file__).resolve().parents[1]  # the source tree: simulation/ and its siblings
    unknown = {"version": version, "commit": None, "dirty": None}
    try:
        top, commit = subprocess.run(["git", "-C", str(root), "rev-parse", "--show-toplevel", "HEAD"],
                                     capture_output=True, text=True, timeout=10, check=True).stdout.split()  # fmt: skip
        if Path(top).resolve() != root:  # installed into a folder inside some other repository: not our commit
            return unknown
        status = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                                capture_output=True, text=True, timeout=10, check=True).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError, ValueError):
        return unknown
    return {"version": version, "commit": commit, "dirty": bool(status.strip())}


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def anvil_version() -> str | None:
    """``anvil --version``'s first line, or None when anvil is not installed or does not answer."""
    try:
        from marketplace.chain.backends import find_anvil

        done = subprocess.run([str(find_anvil()), "--version"], capture_output=True, text=True, timeout=30, check=True)
    except Exception:
        return None
    return done.stdout.strip().splitlines()[0] if done.stdout.strip() else None


def package_versions(*, anvil: bool = False) -> dict[str, str | None]:
    """Python's version and each of :data:`PACKAGES`' (None when not installed); ``anvil`` adds anvil's."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    versions |= {name: _version(name) for name in PACKAGES}
    if anvil:
        versions["anvil"] = anvil_version()
    return versions


def data_summary(scenario: Scenario) -> dict[str, Any]:
    """What data a run read and how its queries used it: the source (and file), its rows, the rows left for
    shards, the distinct held-out rows consumers query (``query_rows``), how many queries the run asks
    (consumers x queries per round x rounds) and how many of them repeat a row already asked
    (``repeated_queries``: queries cycle through the query rows; 0 when there are enough rows — raise
    ``data.rows`` of ``make_classification``, or bring a larger CSV, to get there)."""
    data = scenario.data
    consumers = scenario.consumers
    queries = consumers.count * consumers.queries_per_round * scenario.rounds
    distinct = data.query_rows()
    summary: dict[str, Any] = {"source": data.source, "rows": data.row_count(), "train_rows": data.train_rows(),
                               "query_rows": distinct, "queries": queries,
                               "repeated_queries": max(0, queries - distinct)}  # fmt: skip
    if data.source == "csv":
        summary |= {"path": data.path, "label": data.label}
    return summary


def _command(argv: Sequence[str]) -> str:
    return shlex.join(argv)


def run_manifest(
    scenario: Scenario, *, chain_target: str, chain_kind: str, chain_id: int, engine: str
) -> dict[str, Any]:
    """The manifest of one run (see the module); its command re-runs it from the run's directory, where
    ``scenario.toml`` is, into :data:`RERUN_DIR`."""
    argv = ["agentmarket", "simulate", "scenario.toml", "--out", RERUN_DIR, "--chain", chain_target, "--engine", engine]
    return {
        "kind": "run",
        "project": project_commit(),
        "packages": package_versions(anvil=chain_kind == "anvil"),
        "scenario": {"name": scenario.name, "file": "scenario.toml", "toml": scenario_toml(scenario)},
        "seeds": [scenario.seed],
        "data": data_summary(scenario),
        "chain": {"target": chain_target, "kind": chain_kind, "chain_id": chain_id},
        "engine": engine,
        "argv": argv,
        "command": _command(argv),
        "run_from": "this directory (scenario.toml is beside this manifest)",
    }


def sweep_manifest(scenario: Scenario, *, params: Sequence[str], seeds: Sequence[int] | None, chain_target: str,
                   workers: int, backend: str, command: str = "sweep",
                   ray_address: str | None = None) -> dict[str, Any]:  # fmt: skip
    """The manifest of a sweep directory (``command`` ``sweep``) or of a run over seeds (``simulate --seeds``):
    the base scenario (before the grid's overrides), the grid, the seeds (None: each point runs the scenario's
    own seed), and the command that re-runs it. Each run's own folder has its run manifest."""
    argv = ["agentmarket", command, "scenario.toml", *(f"--param={p}" for p in params), "--out", RERUN_DIR,
            "--chain", chain_target, "--workers", str(workers)]  # fmt: skip
    if command == "sweep":
        argv += ["--backend", backend] + (["--ray-address", ray_address] if ray_address else [])
    if seeds is not None:
        argv += ["--seeds", str(len(seeds))]
    return {
        "kind": command if seeds is None else f"{command} over seeds",
        "project": project_commit(),
        "packages": package_versions(anvil=chain_target == "anvil"),
        "scenario": {"name": scenario.name, "file": "scenario.toml", "toml": scenario_toml(scenario)},
        "params": list(params),
        "seeds": list(seeds) if seeds is not None else [scenario.seed],
        "data": data_summary(scenario),
        "chain": {"target": chain_target},
        "engine": scenario.engine,
        "argv": argv,
        "command": _command(argv),
        "run_from": "this directory (scenario.toml is beside this manifest)",
    }


def write_manifest(manifest: Mapping[str, Any], scenario: Scenario, out_dir: Path) -> Path:
    """Write ``out_dir/manifest.json`` and the scenario it names as ``out_dir/scenario.toml``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "scenario.toml").write_text(scenario_toml(scenario), encoding="utf-8")
    path = out_dir / "manifest.json"
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path
