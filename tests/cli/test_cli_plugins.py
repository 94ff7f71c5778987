"""CLI plugins and their extras, with real distributions on ``sys.path``: a plugin whose extra is not
installed still shows its commands, and using one is a one-line error naming the ``pip install``; a plugin
that cannot even be imported is left out and named in ``--help``. (The packaged agents and simulation
plugins are checked the same way from a real lean install in tests/docs/test_packaging.py.)"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from importlib.metadata import distribution
from pathlib import Path

import pytest

from marketplace.cli.plugin import missing_requirements
from tests.helpers.cli import assert_one_line_error, run_cli

PLUGIN = '''
import typer

group = typer.Typer()


@group.command("go")
def go() -> None:
    """Go somewhere heavy."""
    print("went")


def register(app: typer.Typer) -> None:
    app.command("heavy-cmd")(lambda: print("heavy ran"))
    app.add_typer(group, name="heavy-group")
'''


#: A plugin written against the public API (marketplace.cli.plugin): shared options, the console, a group.
API_PLUGIN = '''
import typer

from marketplace.cli.plugin import (
    DEFAULT_RPC, DEFAULT_WALLET, AgentmarketError, JsonOption, RpcOption, WalletOption, console, group, print_json,
)


def hello(rpc: RpcOption = DEFAULT_RPC, wallet: WalletOption = DEFAULT_WALLET, as_json: JsonOption = False) -> None:
    """Say where the chain is."""
    if rpc == "refuse":
        raise AgentmarketError("told to refuse [x]")
    if as_json:
        print_json({"rpc": rpc, "wallet": str(wallet)})
    else:
        console.print(f"chain at {rpc}")


def register(app: typer.Typer) -> None:
    group(app, "agent").command("hello")(hello)
    app.command("greet")(hello)
'''


def _distribution(site: Path, name: str, requires: list[str], entry: str, module: str, source: str) -> None:
    """Write ``name`` 1.0 as an installed distribution in ``site``: metadata, an entry point, one module."""
    info = site / f"{name.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    lines = ["Metadata-Version: 2.1", f"Name: {name}", "Version: 1.0"]
    lines += [f"Provides-Extra: {extra}" for extra in ("heavy", "light")]
    lines += [f"Requires-Dist: {requirement}" for requirement in requires]
    (info / "METADATA").write_text("\n".join(lines) + "\n")
    (info / "entry_points.txt").write_text(f"[agentmarket.cli]\n{entry}\n")
    (site / f"{module}.py").write_text(textwrap.dedent(source))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with two plugin distributions: one needing an extra that is not installed, one that
    does not import."""
    site = tmp_path_factory.mktemp("site")
    _distribution(site, "heavy-plugin", ['no-such-package-agentmarket>=2; extra == "heavy"',
                                         'pytest>=1; extra == "light"', 'heavy-plugin[light]; extra == "heavy"'],
                  "heavy = heavy_cli:register [heavy]", "heavy_cli", PLUGIN)  # fmt: skip
    _distribution(
        site,
        "broken-plugin",
        ['no-such-package-agentmarket; extra == "heavy"'],
        "broken = broken_cli:register [heavy]",
        "broken_cli",
        "import no_such_package_agentmarket\n",
    )
    return site


@pytest.fixture(scope="module")
def api_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A plugin distribution using the public plugin API, one whose ``register`` fails (it asks for a group
    the CLI does not have), and an ``agents`` package that does not import (as when the agents extra is
    missing): it shadows the installed one."""
    site = tmp_path_factory.mktemp("api-site")
    _distribution(site, "api-plugin", [], "api = api_cli:register", "api_cli", API_PLUGIN)
    lost = (
        "from marketplace.cli.plugin import group\n\n\ndef register(app):\n    group(app, 'nope').command('x')(print)\n"
    )
    _distribution(site, "lost-plugin", [], "lost = lost_cli:register", "lost_cli", lost)
    (site / "agents").mkdir()
    (site / "agents" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'sklearn'\", name='sklearn')\n"
    )
    return site


def test_a_plugin_registered_through_the_api_shows_in_help_and_runs_with_the_shared_options(api_site: Path):
    env = {"PYTHONPATH": str(api_site), "AGENTMARKET_RPC": "http://127.0.0.1:1", "AGENTMARKET_WALLET": "w.json"}
    helped = run_cli("--help", env=env)
    assert helped.returncode == 0, helped.stderr
    assert "greet" in helped.stdout
    in_group = run_cli("agent", "--help", env=env)
    assert in_group.returncode == 0, in_group.stderr
    assert "hello" in in_group.stdout and "register" in in_group.stdout  # joins the core's `agent` group
    ran = run_cli("agent", "hello", "--json", env=env)
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout) == {"rpc": "http://127.0.0.1:1", "wallet": "w.json"}  # the shared envvars
    assert run_cli("greet", "--rpc", "http://n:2", env=env).stdout.strip() == "chain at http://n:2"
    assert_one_line_error(run_cli("greet", "--rpc", "refuse", env=env), "told to refuse [x]")


def test_without_the_agents_package_the_core_cli_still_works(api_site: Path, tmp_path: Path):
    env = {"PYTHONPATH": str(api_site)}  # run outside the source tree, whose agents/ would come first
    helped = run_cli("--help", env=env, cwd=tmp_path)
    assert helped.returncode == 0, helped.stderr
    flat = " ".join(helped.stdout.split())
    assert "Plugins not loaded: " in flat and "agents (pip install 'agentmarket[agents]')" in flat
    assert "simulate" in flat and "greet" in flat and "mcp" not in flat  # the other plugins still load
    assert "lost (LookupError: the CLI has no command group 'nope' (groups: agent, asset, channel," in flat
    wrote = run_cli("examples", "ex", "--json", env=env, cwd=tmp_path)  # a core command, end to end
    assert wrote.returncode == 0, wrote.stderr
    assert [(tmp_path / f).exists() for f in json.loads(wrote.stdout)["files"]] == [True] * 3
    assert_one_line_error(run_cli("mcp", env=env, cwd=tmp_path), "mcp")


def test_importing_the_cli_registers_no_plugin_and_loading_twice_adds_each_command_once():
    script = """
import sys
from marketplace.cli import app
from marketplace.cli.plugin import load_plugins

names = lambda: [info.name for info in app.registered_commands]
assert "mcp" not in names() and "simulate" not in names(), names()
assert not [m for m in sys.modules if m.split(".")[0] in ("agents", "simulation")]
load_plugins(app)
load_plugins(app)
print(names().count("mcp"), names().count("simulate"))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["1", "1"]


def test_a_command_of_a_plugin_without_its_extra_is_one_line_naming_the_install(site: Path):
    env = {"PYTHONPATH": str(site)}
    for command in (["heavy-cmd"], ["heavy-group", "go"]):
        result = run_cli(*command, env=env)
        assert_one_line_error(result, f"`agentmarket {' '.join(command)}` needs the heavy extra",
                              "(missing: no-such-package-agentmarket>=2)", "'heavy-plugin[heavy]'")  # fmt: skip
        assert "went" not in result.stdout and "heavy ran" not in result.stdout
    helped = run_cli("--help", env=env)
    assert helped.returncode == 0, helped.stderr
    assert "heavy-cmd" in helped.stdout and "heavy-group" in helped.stdout
    assert "Plugins not loaded: broken (pip install 'broken-plugin[heavy]')" in " ".join(helped.stdout.split())
    assert run_cli("heavy-cmd", "--help", env=env).returncode == 0  # help needs no extra


def test_missing_requirements_follow_self_references_and_check_versions(site: Path):
    sys.path.insert(0, str(site))
    try:
        heavy = distribution("heavy-plugin")
        assert missing_requirements(heavy, ["light"]) == []  # pytest is installed
        assert missing_requirements(heavy, ["heavy"]) == ["no-such-package-agentmarket>=2"]
        assert missing_requirements(heavy, []) == []
    finally:
        sys.path.remove(str(site))


def test_an_error_with_brackets_is_printed_as_written():
    result = run_cli("balances", "[bold]0x12[/bold]", "--rpc", "http://127.0.0.1:9")
    assert_one_line_error(result, "'[bold]0x12[/bold]'")
