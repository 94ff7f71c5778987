"""The SDK (`MarketplaceClient`) against honest and lying gateways: what it checks before it signs or pays."""
