"""The one base class of every error agentmarket raises on purpose.

A user-facing surface (the CLI, the HTTP API) shows an `AgentmarketError` as its message alone,
without a traceback: the message names what was wrong and what to do about it.
"""


class AgentmarketError(Exception):
    """An expected failure with a message meant for the person who caused it."""
