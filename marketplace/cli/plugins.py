"""Command plugins of the ``agentmarket`` CLI, and the extras they need.

A plugin is an entry point in the group ``agentmarket.cli`` naming a ``register(app)`` function, with
the extras its commands need in brackets (packaging's entry-point syntax)::

    [project.entry-points."agentmarket.cli"]
    agents = "agents.cli:register [agents]"

The CLI imports plugins but never the packages below them (layering), and a plugin module must
import without its extras. When an extra is not installed, the plugin's commands still show in
``--help``; using one is a one-line error naming the ``pip install`` that fixes it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from importlib.metadata import Distribution, EntryPoint, PackageNotFoundError, entry_points, version
from typing import Any

import typer
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from rich.markup import escape
from typer.models import CommandInfo

from marketplace.errors import AgentmarketError

#: The entry-point group of CLI plugins.
GROUP = "agentmarket.cli"


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


def load_plugins(app: typer.Typer) -> None:
    """Add the commands of every installed plugin to ``app``; commands of a plugin whose extras are
    missing fail with a one-line error when used. A plugin that cannot even be imported is left out
    and named at the end of ``--help``."""
    unavailable: list[str] = []
    for entry in entry_points(group=GROUP):
        before = {id(info) for _, info in _commands(app)}
        try:
            entry.load()(app)
        except ImportError as exc:
            hint = _install_hint(entry.dist, entry.extras) if entry.dist is not None and entry.extras else ""
            unavailable.append(f"{entry.name} ({hint or exc})")
            continue
        if not entry.extras:
            continue
        for command, info in _commands(app):
            if id(info) not in before and info.callback is not None:
                info.callback = _guarded(info.callback, command, entry)
    if unavailable:
        note = escape("Plugins not loaded: " + "; ".join(unavailable) + ".")  # help is rich markup: "[x]" is text
        app.info.epilog = f"{app.info.epilog}\n\n{note}" if app.info.epilog else note
