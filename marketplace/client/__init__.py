"""Python SDK of the marketplace: the HTTP API for reads and content, the chain for payments."""

from marketplace.client.sdk import ApiClientError, MarketplaceClient, MarketplaceReader, PublishIncomplete

__all__ = ["ApiClientError", "MarketplaceClient", "MarketplaceReader", "PublishIncomplete"]
