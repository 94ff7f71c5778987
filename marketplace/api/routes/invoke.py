"""POST /v1/models/{asset_id}/invoke: a paid call to a served model.

Each call is paid one of two ways (never both), at the asset's on-chain price, into its vault:

- **x402 v2** (header ``PAYMENT-SIGNATURE``): the payment is verified, the model runs, and the
  payment is settled on chain before the answer is sent (``PAYMENT-RESPONSE`` names the
  transaction). A call whose model fails is not settled, so it costs nothing; a payment whose
  settlement fails gets 402 and no output.
- **a payment-channel voucher** (header ``X-Payment-Channel``): verified off chain and the price
  reserved before the model runs; once the model answered, the call is debited durably (what the
  settler claims) before the answer is sent; a failed call releases its reservation and costs nothing.

Either way the model's output is serialised (strict JSON: no NaN or infinities) before the call is
debited or the payment settled: an output that cannot be sent is a 502 ``model_failed`` that costs
nothing, as is a handler that fails (a handler that rejects its input: 422 ``bad_model_input``, free too).
While the chain is unreachable, paid calls are refused before the model runs (503 ``chain_unavailable``).

Without a payment the answer is 402 naming both: the x402 ``PAYMENT-REQUIRED`` header (which any
x402 v2 client reads), and a JSON body with the channel requirements and the same x402 requirements.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse, Response
from pydantic_core import to_jsonable_python

from marketplace.api.deps import Services, ServicesDep
from marketplace.api.errors import ApiError, chain_unavailable, log_unexpected
from marketplace.chain.records import Asset, AssetKind
from marketplace.chain.units import format_units
from marketplace.inference import InferenceError, ModelHandler
from marketplace.payments.channels import HEADER, ChannelPaymentRequired, MalformedPayment, VoucherLedgerError
from marketplace.payments.x402 import (
    PAYMENT_REQUIRED_HEADER,
    PAYMENT_RESPONSE_HEADER,
    PAYMENT_SIGNATURE_HEADER,
    MalformedPaymentError,
    Offer,
    PaymentInFlightError,
    PaymentRequiredError,
)
from marketplace.protocol.wire import InvokePaymentRequired, InvokeRequest, InvokeResponse

router = APIRouter(prefix="/v1/models", tags=["models"])
log = logging.getLogger("agentmarket.api")


AssetId = Annotated[int, Path(ge=1, le=2**63 - 1, description="Model asset id")]
#: The payment headers, documented here and read from the request in the handler (a paid call is a
#: hot path: FastAPI's per-parameter header and response plumbing cost more than the lookups).
_PAYMENT_HEADERS = [
    {
        "name": PAYMENT_SIGNATURE_HEADER,
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "x402 v2 payment (base64 JSON), sent by an x402 client after a 402",
    },
    {
        "name": HEADER,
        "in": "header",
        "required": False,
        "schema": {"type": "string"},
        "description": "payment-channel voucher: base64 JSON {channelId, maxClaimableAmount, signature}",
    },
]


@router.post(
    "/{asset_id}/invoke",
    response_model=InvokeResponse,
    operation_id="invokeModel",
    responses={
        200: {
            "description": "The model's output and what the call cost",
            "headers": {
                PAYMENT_RESPONSE_HEADER: {
                    "description": "x402 v2 SettleResponse (base64 JSON), when paid with x402",
                    "schema": {"type": "string"},
                }
            },
        },
        400: {"description": "A malformed payment header, or both kinds of payment at once"},
        402: {
            "model": InvokePaymentRequired,
            "description": "Pay first: by x402 (PAYMENT-REQUIRED) or by channel",
            "headers": {
                PAYMENT_REQUIRED_HEADER: {
                    "description": "x402 v2 PaymentRequired (base64 JSON)",
                    "schema": {"type": "string"},
                }
            },
        },
        404: {"description": "This server does not serve the model"},
        409: {"description": "The x402 authorization is paying for another request right now"},
        422: {"description": "bad_model_input: the model rejected its input (not charged)"},
        502: {"description": "model_failed: the model failed or answered what JSON cannot carry (not charged)"},
        503: {"description": "chain_unavailable, or ledger_unavailable (the answer is withheld, not charged)"},
    },
    openapi_extra={"parameters": _PAYMENT_HEADERS},
)
def invoke(asset_id: AssetId, body: InvokeRequest, request: Request, services: ServicesDep) -> Any:
    """Pay for one call (x402 in PAYMENT-SIGNATURE, or a voucher in X-Payment-Channel), then run the model.

    The price per call is the asset's on-chain price. An x402 payment is settled into the model's
    vault after the model answered and before the answer is sent; a voucher's price is reserved
    before the model runs and debited durably after it answered, before the answer is sent.
    """
    handler = services.model_handlers.get(asset_id)
    if handler is None:
        raise ApiError(404, "model_not_served", f"this server does not serve model {asset_id}")
    if services.watcher.failure is not None:  # the chain cannot be read: no payment can be judged, no model runs
        raise chain_unavailable(request)
    asset = services.asset(asset_id)
    if asset.kind != AssetKind.MODEL:
        raise ApiError(404, "model_not_served", f"asset {asset_id} is a dataset, not a model")
    voucher = request.headers.get(HEADER)
    payment_signature = request.headers.get(PAYMENT_SIGNATURE_HEADER)
    x402_payment = payment_signature if payment_signature and payment_signature.strip() else None
    if x402_payment and voucher and voucher.strip():
        raise ApiError(
            400,
            "ambiguous_payment",
            f"send one payment per call: either {PAYMENT_SIGNATURE_HEADER} (x402) or {HEADER} (channel), not both",
        )
    if x402_payment:
        return _paid_with_x402(services, asset, _offer(services, asset, request), handler, body, x402_payment)
    return _paid_with_channel(services, asset, request, handler, body, voucher)


def _paid_with_x402(
    services: Services,
    asset: Asset,
    offer: Offer | None,
    handler: ModelHandler,
    body: InvokeRequest,
    payment: str,
) -> Any:
    if offer is None:
        detail = f"model {asset.asset_id} is priced in {asset.token}; x402 sells TestUSD-priced assets"
        raise ApiError(409, "x402_unsupported_token", detail)
    try:  # the authorization is reserved while the model runs; a failed run releases it unsettled: nothing charged
        output, settlement = services.x402.run_paid(offer, payment, lambda: _run(handler, body, asset.asset_id))
    except MalformedPaymentError as exc:
        raise ApiError(400, "malformed_payment", str(exc)) from None
    except PaymentInFlightError as exc:
        raise ApiError(409, exc.code, str(exc)) from None
    except ApiError as exc:  # the model failed: its payment was released unsettled
        raise ApiError(exc.status, exc.code, f"{exc.detail}; the payment was not settled") from None
    except PaymentRequiredError as exc:
        channel = services.gate.requirements(asset.asset_id, asset.price)
        return _payment_required(exc.code, exc.detail, exc.code, channel, exc.payment_required, exc.headers)
    return _answer(output, settlement.as_dict(), {PAYMENT_RESPONSE_HEADER: settlement.header})


def _paid_with_channel(
    services: Services,
    asset: Asset,
    request: Request,
    handler: ModelHandler,
    body: InvokeRequest,
    voucher: str | None,
) -> Any:
    try:
        reservation = services.gate.reserve(voucher, asset.price, asset_id=asset.asset_id)
    except MalformedPayment as exc:
        raise ApiError(400, exc.code, exc.detail) from None
    except ChannelPaymentRequired as exc:
        return _channel_payment_required(services, asset, request, exc)
    try:
        output = _run(handler, body, asset.asset_id)
    except BaseException as exc:  # the call was not answered: nothing is debited
        services.gate.release(reservation)
        if isinstance(exc, ApiError):
            raise ApiError(exc.status, exc.code, f"{exc.detail}; the call was not charged") from None
        raise
    try:
        receipt = services.gate.commit(reservation)  # durable before the answer leaves
    except ChannelPaymentRequired as exc:
        return _channel_payment_required(services, asset, request, exc)
    except VoucherLedgerError:
        detail = (
            "the call could not be recorded in the voucher ledger, so its answer is withheld and it was not charged"
        )
        raise ApiError(503, "ledger_unavailable", detail) from None
    return _answer(output, receipt.as_dict())


def _channel_payment_required(
    services: Services, asset: Asset, request: Request, exc: ChannelPaymentRequired
) -> JSONResponse:
    x402, headers = None, {"Cache-Control": "no-store"}
    offer = _offer(services, asset, request)
    if offer is not None:
        header = services.x402.payment_required_header(offer, exc.reason)
        refusal = PaymentRequiredError(exc.reason, exc.detail, header)
        x402, headers = refusal.payment_required, refusal.headers
    detail = exc.detail
    if exc.reason == "payment_missing":
        detail = (
            f"this call costs {format_units(asset.price)} tUSD: pay it per call with x402 (see the "
            f"{PAYMENT_REQUIRED_HEADER} header) or with a payment-channel voucher in {HEADER} (see requirements)"
        )
    return _payment_required(exc.code, detail, exc.reason, exc.requirements, x402, headers)


def _offer(services: Services, asset: Asset, request: Request) -> Offer | None:
    """What one call costs over x402 (None when the asset is priced in a token x402 does not sell here)."""
    if asset.token.lower() != services.market.token.address.lower():
        return None
    return Offer(
        amount=asset.price,
        pay_to=asset.vault,
        resource_url=str(request.url),
        description=f"one call of model {asset.asset_id} (version {asset.version})",
        mime_type="application/json",
    )


def _run(handler: ModelHandler, body: InvokeRequest, asset_id: int) -> bytes:
    """The model's output as strict JSON (RFC 8259, UTF-8), serialised before anything is charged; its
    failures as client-facing errors, each raised before a debit or a settlement:

    - the handler raises :class:`InferenceError` (e.g. its upstream failed): 502 ``model_failed``;
    - it raises ``ValueError``, ``TypeError`` or ``KeyError`` (it rejected its input): 422 ``bad_model_input``;
    - it raises anything else, or answers what strict JSON cannot carry (NaN, an infinity, an object that
      is not JSON-able, nesting too deep): 502 ``model_failed``, and the operator's log gets the type and
      stack frames.
    """
    try:
        output = handler(body.input)
    except InferenceError as exc:
        raise ApiError(502, "model_failed", str(exc)) from None
    except (ValueError, TypeError, KeyError) as exc:
        raise ApiError(422, "bad_model_input", f"the model rejected its input: {exc}") from None
    except Exception as exc:
        log_unexpected(exc, f"the handler of model {asset_id}")
        raise ApiError(
            502, "model_failed", f"model {asset_id} failed on this input; its operator's log says why"
        ) from None
    try:
        return _strict_json(to_jsonable_python(output))
    except Exception as exc:  # NaN or an infinity (ValueError), no JSON form (PydanticSerializationError), too deep
        log.warning("model %s answered what strict JSON cannot carry (%s); the call was refused, not charged",
                    asset_id, type(exc).__name__)  # fmt: skip
        raise ApiError(
            502,
            "model_failed",
            f"model {asset_id} answered something that is not strict JSON (NaN, an infinity, or a value with no JSON "
            "form)",
        ) from None


def _strict_json(value: Any) -> bytes:
    """``value`` as compact strict JSON bytes: no NaN or infinities (``ValueError``), UTF-8 (lone
    surrogates raise ``UnicodeEncodeError``)."""
    return json.dumps(value, allow_nan=False, ensure_ascii=False, separators=(",", ":")).encode()


def _answer(output: bytes, payment: dict[str, Any], headers: dict[str, str] | None = None) -> Response:
    """The 200 answer ``{"output": …, "payment": …}`` around an output already serialised by :func:`_run`."""
    body = b'{"output":' + output + b',"payment":' + _strict_json(payment) + b"}"
    return Response(body, media_type="application/json", headers=headers)


def _payment_required(
    code: str,
    detail: str,
    reason: str,
    requirements: dict[str, Any],
    x402: dict[str, Any] | None,
    headers: dict[str, str],
) -> JSONResponse:
    body = InvokePaymentRequired(error=code, detail=detail, reason=reason, requirements=requirements, x402=x402)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=402, headers=headers)
