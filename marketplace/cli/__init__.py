"""The ``agentmarket`` command line (typer + rich).

Every mistake a user can make surfaces as one line on stderr (``error: ...``) and exit code 1, never a
traceback: an :class:`~marketplace.errors.AgentmarketError` (its message names what was wrong and what to
do), a bad option or argument (click's usage errors, bad ``AGENTMARKET_*`` values of options included), a
chain node or a marketplace server that stops answering mid-command (the line names its URL), and a password
prompt that gets no answer. Ctrl-C exits 130.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

import httpx
import requests
import typer
from rich.console import Console
from rich.markup import escape
from web3.exceptions import TimeExhausted

try:  # typer 0.2x carries its own copy of click
    from typer._click.exceptions import ClickException, NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover - older typer uses click itself
    from click.exceptions import ClickException, NoArgsIsHelpError, UsageError

from marketplace.cli.app import app
from marketplace.cli.plugin import load_plugins
from marketplace.errors import AgentmarketError

_stderr = Console(stderr=True, highlight=False, soft_wrap=True)

#: The name the command is known by in messages (``python -m marketplace.cli`` runs the same).
PROG_NAME = "agentmarket"


def error_line(message: str) -> None:
    """Print ``error: message`` on stderr, on one line (newlines in ``message`` become spaces)."""
    flat = " ".join(message.split())
    _stderr.print(f"[bold red]error:[/] {escape(flat)}")  # "[sim]" is text, not markup


def _usage_error(exc: UsageError) -> str:
    """A click usage error as one sentence naming the command's help."""
    message = exc.format_message()
    message = message[:1].lower() + message[1:].rstrip(".")
    ctx = exc.ctx
    return f"{message} (see `{ctx.command_path} --help`)" if ctx is not None else message


def _lost_chain(exc: requests.exceptions.RequestException) -> str:
    """The JSON-RPC node stopped answering (or never did) while a command ran."""
    request = getattr(exc, "request", None)
    url = str(getattr(request, "url", "") or "").rstrip("/") or "the RPC URL"
    what = "timed out" if isinstance(exc, requests.exceptions.Timeout) else "stopped answering"
    return (
        f"the chain's JSON-RPC node at {url} {what} ({type(exc).__name__}) while the command ran; check that the "
        "node is running (agentmarket node starts one), then check on chain what the command did before running it "
        "again"
    )


def _lost_server(exc: httpx.HTTPError) -> str:
    """The marketplace server stopped answering while a command streamed from it (the SDK names it before)."""
    try:
        url = exc.request.url
        where = f"{url.scheme}://{url.netloc.decode()}"
    except (RuntimeError, AttributeError):
        where = "the server URL"
    return (
        f"the marketplace server at {where} stopped answering ({type(exc).__name__}) while the command ran; check that "
        "it is running (agentmarket serve), then run the command again (a download is written only once complete)"
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``agentmarket`` script: add the installed plugins' commands
    (:func:`~marketplace.cli.plugin.load_plugins`), run the command, turn every user-facing failure into one line."""
    try:
        load_plugins(app)
        code = app(args=list(argv) if argv is not None else None, prog_name=PROG_NAME, standalone_mode=False)
    except NoArgsIsHelpError:
        sys.exit(2)  # typer has printed the help
    except UsageError as exc:
        error_line(_usage_error(exc))
        sys.exit(1)
    except ClickException as exc:
        error_line(exc.format_message())
        sys.exit(1)
    except typer.Abort:  # EOF (or Ctrl-C) at a prompt
        if sys.stdin is not None and sys.stdin.isatty():
            _stderr.print("interrupted")
            sys.exit(130)
        error_line("a prompt got no answer (stdin is not a terminal): set AGENTMARKET_PASSWORD for the wallet password")
        sys.exit(1)
    except AgentmarketError as exc:
        error_line(str(exc))
        sys.exit(1)
    except requests.exceptions.RequestException as exc:
        error_line(_lost_chain(exc))
        sys.exit(1)
    except httpx.HTTPError as exc:
        error_line(_lost_server(exc))
        sys.exit(1)
    except TimeExhausted as exc:
        error_line(f"a transaction was sent but no receipt came in time ({exc}); check the chain before retrying")
        sys.exit(1)
    except KeyboardInterrupt:
        _stderr.print("interrupted")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)


__all__ = ["app", "error_line", "main"]
