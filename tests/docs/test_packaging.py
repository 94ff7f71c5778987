"""The package as a user installs it: a wheel, built from this tree and installed in a fresh venv outside
the repo, first without extras (server, SDK and CLI only), then with ``[sim]``.

Takes about a minute (pip reuses its cache and compiles no bytecode): the wheel is built once and the
venv is shared by the module's tests, which run in file order (lean first, then the extras are added).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers.cli import assert_one_line_error, free_port

pytestmark = pytest.mark.packaging

ROOT = Path(__file__).resolve().parents[2]
#: What only agents and simulations need; the lean install must have none of it.
HEAVY = ("numpy", "scipy", "sklearn", "matplotlib", "openai", "mcp")
HEAVY_DISTRIBUTIONS = ("numpy", "scipy", "scikit-learn", "matplotlib", "openai", "mcp", "psycopg")


@dataclass
class Installed:
    """A venv with the wheel installed, and an empty working directory outside the repo."""

    venv: Path
    wheel: Path
    cwd: Path

    def run(self, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
        """Run one of the venv's programs (``agentmarket``, ``python``, ``pip``) in ``cwd``."""
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("AGENTMARKET_", "PYTHON", "VIRTUAL_ENV"))}
        return subprocess.run(
            [str(self.venv / "bin" / args[0]), *args[1:]], cwd=self.cwd, capture_output=True, text=True,
            env={**clean, "PIP_DISABLE_PIP_VERSION_CHECK": "1", **(env or {})}, timeout=timeout, check=False,
        )  # fmt: skip

    def pip_install(self, requirement: str) -> None:
        """``pip install requirement`` into the venv (dependencies from the index, through pip's cache)."""
        result = self.run("python", "-m", "pip", "install", "-q", "--no-compile", requirement, timeout=600)
        assert result.returncode == 0, result.stderr[-2000:]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """The wheel of this tree, installed without extras in a fresh venv."""
    work = tmp_path_factory.mktemp("packaging")
    source = work / "src"  # a copy: building in the repo would leave build/ and egg-info behind
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    for package in ("marketplace", "agents", "simulation"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(work / "dist"),
         str(source)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-2000:]
    (wheel,) = (work / "dist").glob("agentmarket-*.whl")
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    cwd = work / "elsewhere"
    cwd.mkdir()
    target = Installed(venv, wheel, cwd)
    target.pip_install(str(wheel))
    yield target


def _installed_distributions(installed: Installed) -> set[str]:
    listed = installed.run("python", "-m", "pip", "list", "--format=freeze")
    assert listed.returncode == 0, listed.stderr
    return {line.split("==")[0].lower() for line in listed.stdout.splitlines() if "==" in line}


#: Imports the server, SDK and CLI (with its plugins), then prints which of HEAVY got imported and whether
#: each package ships py.typed (PEP 561).
IMPORT_CORE = f"""
import importlib.resources, sys
import marketplace.api.app, marketplace.client, marketplace.cli
print(sorted(m for m in sys.modules if m.split(".")[0] in {HEAVY!r}))
print([importlib.resources.files(p).joinpath("py.typed").is_file() for p in ("marketplace", "agents", "simulation")])
"""


def test_the_lean_install_has_no_agent_simulation_or_postgres_dependencies(installed: Installed):
    assert not set(HEAVY_DISTRIBUTIONS) & _installed_distributions(installed)
    imported = installed.run("python", "-c", IMPORT_CORE)
    assert imported.stdout.split("\n")[:2] == ["[]", "[True, True, True]"], imported.stderr


def test_the_lean_cli_lists_the_plugin_commands(installed: Installed):
    helped = installed.run("agentmarket", "--help")
    assert helped.returncode == 0, helped.stderr
    for command in ("serve", "simulate", "sweep", "demo", "mcp", "agent"):
        assert command in helped.stdout
    assert "Plugins not loaded" not in helped.stdout  # both plugins import without their extras


@pytest.mark.parametrize(
    ("command", "args", "extra"),
    [("simulate", ["baseline"], "sim"), ("agent run", ["--role", "buyer", "--brain", "bandit"], "agents")],
)
def test_a_command_whose_extra_is_missing_names_the_install_in_one_line(installed: Installed, command, args, extra):
    result = installed.run("agentmarket", *command.split(), *args)
    assert_one_line_error(result, f"`agentmarket {command}` needs the {extra} extra",
                          f"pip install 'agentmarket[{extra}]'", "scikit-learn")  # fmt: skip
    assert not list(installed.cwd.iterdir())  # nothing was started or written


def test_the_lean_cli_writes_the_readme_example_files_and_knows_its_version(installed: Installed):
    target = installed.cwd.parent / "examples"
    written = installed.run("agentmarket", "examples", str(target), "--json")
    assert written.returncode == 0, written.stderr
    names = ("iris.csv", "iris_model.py", "model-card.json")
    assert [Path(f).name for f in json.loads(written.stdout)["files"]] == list(names)
    for name in names:  # the package data is the repo's examples/
        assert (target / name).read_bytes() == (ROOT / "examples" / name).read_bytes()
    version = installed.run("agentmarket", "--version")
    assert version.stdout.strip() == "agentmarket 0.1.0", version.stderr


@pytest.mark.backend("anvil")
def test_the_lean_server_asks_for_the_postgres_extra(installed: Installed, anvil_manifest):
    rpc, manifest = anvil_manifest
    result = installed.run(
        "agentmarket", "serve", "--rpc", rpc, "--manifest", str(manifest), "--port", str(free_port()),
        "--data-dir", str(installed.cwd.parent / "server"),
        env={"AGENTMARKET_DATABASE_URL": "postgresql://market@127.0.0.1:5432/market"},
    )  # fmt: skip
    assert_one_line_error(result, "needs the PostgreSQL driver (psycopg)", "pip install 'agentmarket[postgres]'")


def test_with_the_sim_extra_packaged_scenarios_resolve_outside_the_repo(installed: Installed):
    installed.pip_install(f"agentmarket[sim] @ {installed.wheel.as_uri()}")
    distributions = _installed_distributions(installed)
    assert {"numpy", "scikit-learn", "matplotlib", "openai", "mcp"} <= distributions
    assert "psycopg" not in distributions

    code = IMPORT_CORE + (
        "from simulation.scenario import ScenarioError, load_scenario\n"
        "print([(s.name, s.rounds) for s in map(load_scenario, ('baseline', 'free-riders.toml'))])\n"
        "try:\n    load_scenario('nosuch')\nexcept ScenarioError as exc:\n    print(exc)\n"
    )
    lines = installed.run("python", "-c", code).stdout.splitlines()
    assert lines[0] == "[]"  # installed now, and still not imported by the server, SDK or CLI
    assert lines[2] == "[('baseline', 5), ('free-riders', 5)]"
    assert (
        lines[3] == "scenario 'nosuch' is neither a file nor a packaged scenario "
        "(baseline, free-riders, large, noisy-producers, poisoning, sybil)"
    )
    # Through the CLI: found, read and validated (a bad override fails before any chain work).
    result = installed.run("agentmarket", "simulate", "noisy-producers", "--param", "rounds=0")
    assert_one_line_error(result, "site-packages/simulation/scenarios/noisy-producers.toml", "rounds")
