"""CLI plugins and their extras, with real distributions on ``sys.path``: a plugin whose extra is not
installed still shows its commands, and using one is a one-line error naming the ``pip install``; a plugin
that cannot even be imported is left out and named in ``--help``. (The packaged agents and simulation
plugins are checked the same way from a real lean install in tests/test_packaging.py.)"""

from __future__ import annotations

import sys
import textwrap
from importlib.metadata import distribution
from pathlib import Path

import pytest

from marketplace.cli.plugins import missing_requirements
from tests.test_cli import assert_one_line_error, run_cli

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
