"""The public API of ``agentmarket`` CLI plugins, and the loader that adds them to the CLI.

A plugin is a module with a ``register(app: typer.Typer) -> None`` hook, named by an entry point in
the group :data:`GROUP` with the extras its commands need in brackets (packaging's entry-point syntax)::

    [project.entry-points."agentmarket.cli"]
    agents = "agents.cli:register [agents]"

``register`` adds commands to ``app`` (``app.command("name")(function)``), or to one of its groups
(``group(app, "agent").command("run")(function)``). :func:`~marketplace.cli.main` loads every plugin
(:func:`load_plugins`) before it runs a command: importing a plugin module registers nothing. A plugin's
commands take the shared options below (:data:`WalletOption`, :data:`ServerOption`, :data:`RpcOption`,
:data:`JsonOption` with their defaults), print with :data:`console` or :func:`print_json`, and fail by
raising :class:`~marketplace.errors.AgentmarketError` (``main`` prints its message as one line, exit 1).

The CLI imports plugins but never the packages below them (layering), and a plugin module must
import without its extras. When an extra is not installed, the plugin's commands still show in
``--help``; using one is a one-line error naming the ``pip install`` that fixes it. A plugin that
cannot be imported at all is left out (named at the end of ``--help``); the core commands still work.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import weakref
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import Distribution, EntryPoint, PackageNotFoundError, entry_points, version
from pathlib import Path
from typing import Annotated, Any

import typer
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from typer.models import CommandInfo

from marketplace.errors import AgentmarketError
from marketplace.wallet_file import DEFAULT_WALLET, PASSWORD_ENV

#: The entry-point group of CLI plugins.
GROUP = "agentmarket.cli"

# ---------------------------------------------------------------------- what a plugin's commands use

#: Standard output of every command (rich; highlighting off so that addresses and amounts print as given).
console = Console(highlight=False)

#: The marketplace server and the chain's JSON-RPC node a command talks to by default (this machine).
DEFAULT_SERVER = "http://127.0.0.1:8000"
DEFAULT_RPC = "http://127.0.0.1:8545"

WalletOption = Annotated[Path, typer.Option("--wallet", help="Keystore file.", envvar="AGENTMARKET_WALLET")]
ServerOption = Annotated[str, typer.Option("--server", help="Marketplace API URL.", envvar="AGENTMARKET_SERVER")]
RpcOption = Annotated[str, typer.Option("--rpc", help="JSON-RPC URL of the chain.", envvar="AGENTMARKET_RPC")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


def password(confirm: bool = False) -> str:
    """The wallet password: $AGENTMARKET_PASSWORD, else asked for on the terminal (``confirm``: asked twice).

    No answer (stdin not a terminal) raises ``typer.Abort``, which ``main`` reports as one line.
    """
    return os.environ.get(PASSWORD_ENV) or typer.prompt("wallet password", hide_input=True,
                                                         confirmation_prompt=confirm)  # fmt: skip


def print_json(data: object) -> None:
    """``data`` as JSON (a wire model as the server sends it: its aliases, amounts as decimal strings)."""
    if isinstance(data, BaseModel):
        data = data.model_dump(mode="json", by_alias=True)
    console.print_json(json.dumps(data))


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def interrupt_on_signals() -> None:
    """Make Ctrl-C and SIGTERM unwind the stack (so context managers stop what they started); ``main``
    then exits 130."""
    signal.signal(signal.SIGINT, _raise_interrupt)
    signal.signal(signal.SIGTERM, _raise_interrupt)


def group(app: typer.Typer, name: str) -> typer.Typer:
    """The command group ``name`` of ``app`` (e.g. ``"agent"``), for a plugin to add commands to.

    Raises ``LookupError`` naming the groups there are when ``app`` has no group ``name``.
    """
    for info in app.registered_groups:
        if info.typer_instance is not None and (info.name or info.typer_instance.info.name) == name:
            return info.typer_instance
    names = sorted(str(info.name or "") for info in app.registered_groups)
    raise LookupError(f"the CLI has no command group {name!r} (groups: {', '.join(names)})")


# ---------------------------------------------------------------------- loading plugins


def missing_requirements(distribution: Distribution, extras: Sequence[str]) -> list[str]:
    """The requirements of ``distribution``'s ``extras`` that are not installed in a version they accept.

    Extras that name the distribution itself (``agentmarket[agents]`` inside ``sim``) are followed.
    Returns requirement strings such as ``"scikit-learn>=1.5"``; empty when everything is there.
    """
    own = canonicalize_name(distribution.metadata["Name"] or "")
    missing: list[str] = []
    seen: set[str] = set()
    wanted = list(extras)
    while wanted:
        extra = wanted.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for line in distribution.requires or []:
            try:
                requirement = Requirement(line)
            except InvalidRequirement:
                continue
            if requirement.marker is None or not requirement.marker.evaluate({"extra": extra}):
                continue
            if canonicalize_name(requirement.name) == own:
                wanted.extend(requirement.extras)
                continue
            try:
                installed = version(requirement.name)
            except PackageNotFoundError:
                missing.append(str(requirement.name) + str(requirement.specifier))
                continue
            if not requirement.specifier.contains(installed, prereleases=True):
                missing.append(f"{requirement.name}{requirement.specifier} (found {installed})")
    return sorted(set(missing))


def _commands(app: typer.Typer, prefix: str = "") -> Iterator[tuple[str, CommandInfo]]:
    """Every command of ``app`` and its groups, with its full name (e.g. "agent run")."""
    for info in app.registered_commands:
        name = info.name or (info.callback.__name__.replace("_", "-") if info.callback else "")
        yield f"{prefix}{name}", info
    for group in app.registered_groups:
        if group.typer_instance is not None:
            yield from _commands(group.typer_instance, f"{prefix}{group.name or group.typer_instance.info.name} ")


def _install_hint(distribution: Distribution, extras: Sequence[str]) -> str:
    return f"pip install '{distribution.metadata['Name']}[{','.join(extras)}]'"


def _guarded(callback: Callable[..., Any], command: str, entry: EntryPoint) -> Callable[..., Any]:
    """``callback``, first checking that ``entry``'s extras are installed (AgentmarketError naming them if not)."""

    @functools.wraps(callback)
    def run(*args: Any, **kwargs: Any) -> Any:
        if entry.dist is not None:
            missing = missing_requirements(entry.dist, entry.extras)
            if missing:
                raise AgentmarketError(
                    f"`agentmarket {command}` needs the {'/'.join(entry.extras)} extra, not installed here "
                    f"(missing: {', '.join(missing)}): {_install_hint(entry.dist, entry.extras)}"
                )
        return callback(*args, **kwargs)

    return run


#: The apps plugins were added to already (``main`` may run more than once in a process).
_loaded: weakref.WeakSet[typer.Typer] = weakref.WeakSet()


def load_plugins(app: typer.Typer) -> None:
    """Add the commands of every installed plugin to ``app`` (once per app: later calls do nothing);
    commands of a plugin whose extras are missing fail with a one-line error when used. A plugin that
    cannot even be imported, or whose ``register`` fails, is left out and named (with why) at the end
    of ``--help``."""
    if app in _loaded:
        return
    _loaded.add(app)
    unavailable: list[str] = []
    for entry in entry_points(group=GROUP):
        before = {id(info) for _, info in _commands(app)}
        try:
            entry.load()(app)
        except ImportError as exc:
            hint = _install_hint(entry.dist, entry.extras) if entry.dist is not None and entry.extras else ""
            unavailable.append(f"{entry.name} ({hint or exc})")
            continue
        except Exception as exc:  # a broken plugin (e.g. a group the CLI does not have) leaves the rest working
            unavailable.append(f"{entry.name} ({type(exc).__name__}: {exc})")
            continue
        if not entry.extras:
            continue
        for command, info in _commands(app):
            if id(info) not in before and info.callback is not None:
                info.callback = _guarded(info.callback, command, entry)
    if unavailable:
        note = escape("Plugins not loaded: " + "; ".join(unavailable) + ".")  # help is rich markup: "[x]" is text
        app.info.epilog = f"{app.info.epilog}\n\n{note}" if app.info.epilog else note


__all__ = [
    "DEFAULT_RPC",
    "DEFAULT_SERVER",
    "DEFAULT_WALLET",
    "GROUP",
    "AgentmarketError",
    "JsonOption",
    "RpcOption",
    "ServerOption",
    "WalletOption",
    "console",
    "group",
    "interrupt_on_signals",
    "load_plugins",
    "missing_requirements",
    "password",
    "print_json",
]
