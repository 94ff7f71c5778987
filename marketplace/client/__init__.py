"""Python SDK of the marketplace: the HTTP API for reads and content, the chain for payments."""

from marketplace.client.checks import PriceChanged, X402TermsRefused
from marketplace.client.sdk import (
    ApiClientError,
    BadResponse,
    LoginRefused,
    MarketplaceClient,
    MarketplaceReader,
    PublishIncomplete,
    ServerUnreachable,
    UntrustedDeployment,
    X402AuthorizationOutstanding,
    X402DeliveryError,
)

__all__ = [
    "ApiClientError",
    "BadResponse",
    "LoginRefused",
    "MarketplaceClient",
    "MarketplaceReader",
    "PriceChanged",
    "PublishIncomplete",
    "ServerUnreachable",
    "UntrustedDeployment",
    "X402AuthorizationOutstanding",
    "X402DeliveryError",
    "X402TermsRefused",
]
