"""``python -m marketplace.cli`` runs the agentmarket command line."""

from marketplace.cli import main

main()
