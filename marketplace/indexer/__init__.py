"""Chain indexer: follows the marketplace contracts' events into a SQL read model."""

from marketplace.indexer.indexer import Indexer, SyncReport

__all__ = ["Indexer", "SyncReport"]
