"""Python SDK of the marketplace: the HTTP API for reads and content, the chain for payments."""

from marketplace.client.sdk import (
    ApiClientError,
    BadResponse,
    LoginRefused,
    MarketplaceClient,
    MarketplaceReader,
    PublishIncomplete,
    ServerUnreachable,
)

__all__ = [
    "ApiClientError",
    "BadResponse",
    "LoginRefused",
    "MarketplaceClient",
    "MarketplaceReader",
    "PublishIncomplete",
    "ServerUnreachable",
]
