"""The marketplace HTTP API (FastAPI): catalog reads over the indexer's read model."""

from marketplace.api.app import create_app
from marketplace.api.settings import Settings

__all__ = ["Settings", "create_app"]
