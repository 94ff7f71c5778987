"""GET /v1/assets/{asset_id}/x402: one download of an asset, paid per request over x402 v2.

The price is the asset's on-chain price, paid in TestUSD (exact scheme, EIP-3009) straight into the
asset's RevenueVault, and settled on chain before the first byte of content is sent. Any standard
x402 v2 client pays it without agentmarket code: it reads the PAYMENT-REQUIRED header of the 402,
signs, and retries with PAYMENT-SIGNATURE.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Header, Path, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from marketplace.api.deps import ServicesDep
from marketplace.api.errors import ApiError, not_found
from marketplace.api.routes.content import stored_content
from marketplace.chain import ContractRevert
from marketplace.chain.records import Asset
from marketplace.payments.x402 import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    MalformedPaymentError,
    Offer,
    PaymentInFlightError,
    PaymentRequiredError,
    X402Payments,
)

router = APIRouter(prefix="/v1/assets", tags=["x402"])

AssetId = Annotated[int, Path(ge=1, le=2**63 - 1, description="Asset id")]


def get_x402(services: ServicesDep) -> X402Payments:
    """The app's x402 payment service (its in-process facilitator settles with the relayer)."""
    return services.x402


X402Dep = Annotated[X402Payments, Depends(get_x402)]


def _sellable_asset(services: ServicesDep, asset_id: int) -> Asset:
    try:
        asset = services.market.marketplace.asset(asset_id)
    except ContractRevert as exc:
        if exc.error == "UnknownAsset":
            raise not_found("asset", asset_id) from None
        raise
    if not asset.listed:
        raise ApiError(409, "asset_delisted", f"asset {asset_id} is delisted; its owner does not sell it now")
    if asset.token != services.market.token.address:
        raise ApiError(
            409, "x402_unsupported_token", f"asset {asset_id} is priced in {asset.token}; x402 sells TestUSD-priced"
        )
    return asset


@router.get(
    "/{asset_id}/x402",
    operation_id="downloadContentX402",
    response_class=StreamingResponse,
    response_model=None,
    responses={
        200: {
            "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
            "description": "The content; PAYMENT-RESPONSE names the settlement transaction",
            "headers": {
                PAYMENT_RESPONSE_HEADER: {
                    "description": "x402 v2 SettleResponse (base64 JSON)",
                    "schema": {"type": "string"},
                },
                "X-Content-SHA256": {"description": "0x + sha256 hex of the content", "schema": {"type": "string"}},
            },
        },
        400: {"description": "PAYMENT-SIGNATURE is not a decodable x402 payment"},
        402: {
            "description": "Pay first: PAYMENT-REQUIRED (base64 JSON) names the price, payTo and token",
            "headers": {
                PAYMENT_REQUIRED_HEADER: {
                    "description": "x402 v2 PaymentRequired (base64 JSON)",
                    "schema": {"type": "string"},
                }
            },
        },
        404: {"description": "Unknown asset, or its content is not uploaded"},
        409: {"description": "Delisted, not sold over x402, or the authorization is paying for another request"},
    },
)
def download_paid_per_request(
    asset_id: AssetId,
    request: Request,
    services: ServicesDep,
    payments: X402Dep,
    payment_signature: Annotated[
        str | None, Header(description="x402 v2 payment (base64 JSON), sent by an x402 client after a 402")
    ] = None,
) -> Response:
    """Pay the asset's price for one download over x402, then receive the plaintext content.

    Without a payment (or with a refused one) the answer is 402 with the PAYMENT-REQUIRED header.
    A payment is verified and settled on chain into the asset's vault before any content is sent;
    X-Content-SHA256 is the content's hash, PAYMENT-RESPONSE the settlement.
    """
    asset = _sellable_asset(services, asset_id)
    stored = stored_content(services, asset)  # what this asset's owner uploaded, checked intact before payment
    content_hash = stored.sha256
    offer = Offer(
        amount=asset.price,
        pay_to=asset.vault,
        resource_url=str(request.url),
        description=f"one download of asset {asset_id} ({asset.kind.name.lower()}, version {asset.version})",
    )
    try:
        settlement = payments.charge(offer, payment_signature)
    except MalformedPaymentError as exc:
        raise ApiError(400, "malformed_payment", str(exc)) from None
    except PaymentInFlightError as exc:
        raise ApiError(409, exc.code, str(exc)) from None
    except PaymentRequiredError as exc:
        return JSONResponse({"error": exc.code, "detail": exc.detail}, status_code=402, headers=exc.headers)
    headers = {
        "X-Content-SHA256": content_hash,
        PAYMENT_RESPONSE_HEADER: settlement.header,
        "Cache-Control": "private, no-store",
    }
    return StreamingResponse(stored.iter_plaintext(), media_type="application/octet-stream", headers=headers)
