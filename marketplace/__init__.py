"""agentmarket: agents pay for data and model access; every payment flows back up the lineage."""

__version__ = "0.1.0"
