"""The ``agentmarket`` command line (typer + rich).

User mistakes surface as one line on stderr (``error: ...``) and exit code 1, never a traceback.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape

from marketplace.cli.app import app
from marketplace.errors import AgentmarketError

_stderr = Console(stderr=True, highlight=False)


def main() -> None:
    """Entry point of the ``agentmarket`` script."""
    try:
        app()
    except AgentmarketError as exc:
        _stderr.print(f"[bold red]error:[/] {escape(str(exc))}", soft_wrap=True)  # "[sim]" is text, not markup
        sys.exit(1)
    except KeyboardInterrupt:
        _stderr.print("interrupted")
        sys.exit(130)


__all__ = ["app", "main"]
