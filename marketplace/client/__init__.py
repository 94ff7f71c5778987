"""Python SDK of the marketplace: the HTTP API for reads and content, the chain for payments."""

from marketplace.client.checks import PaymentTermsRefused, PriceChanged
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
    "PaymentTermsRefused",
    "PriceChanged",
    "PublishIncomplete",
    "ServerUnreachable",
    "UntrustedDeployment",
    "X402AuthorizationOutstanding",
    "X402DeliveryError",
]
