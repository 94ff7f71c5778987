"""POST /v1/models/{asset_id}/invoke: a paid call to a served model, paid by channel voucher."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from marketplace.api.deps import ServicesDep
from marketplace.api.errors import ApiError
from marketplace.chain.market import AssetKind
from marketplace.inference import InferenceError
from marketplace.payments.channels import HEADER, MalformedPayment, PaymentRequired

router = APIRouter(prefix="/v1/models", tags=["models"])


class InvokeRequest(BaseModel):
    """The model's input (any JSON the model's handler accepts)."""

    input: Any


class InvokeResponse(BaseModel):
    """The model's output and what the call cost."""

    output: Any
    payment: dict[str, Any]


@router.post("/{asset_id}/invoke", response_model=InvokeResponse,
             responses={402: {"description": "payment required: price and channel requirements"}})  # fmt: skip
def invoke(
    asset_id: Annotated[int, Path(ge=1, le=2**63 - 1)], body: InvokeRequest, request: Request, services: ServicesDep
) -> Any:
    """Charge the call to the caller's channel (header X-Payment-Channel), then run the model.

    The voucher is verified and the debit committed durably before the model runs; the price per
    call is the asset's on-chain price.
    """
    handler = services.model_handlers.get(asset_id)
    if handler is None:
        raise ApiError(404, "model_not_served", f"this server does not serve model {asset_id}")
    asset = services.asset(asset_id)
    if asset.kind != AssetKind.MODEL:
        raise ApiError(404, "model_not_served", f"asset {asset_id} is a dataset, not a model")
    try:
        receipt = services.gate.charge(request.headers.get(HEADER), asset.price, asset_id=asset_id)
    except MalformedPayment as exc:
        raise ApiError(400, exc.code, exc.detail) from None
    except PaymentRequired as exc:
        return JSONResponse(exc.to_dict(), status_code=402)
    try:
        output = handler(body.input)
    except InferenceError as exc:
        raise ApiError(502, "model_failed", str(exc)) from None
    except (ValueError, TypeError, KeyError) as exc:
        raise ApiError(422, "bad_model_input", f"the model rejected its input: {exc}") from None
    return InvokeResponse(output=output, payment=receipt.as_dict())
