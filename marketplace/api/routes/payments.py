"""GET /v1/payments: what a payer must know before paying this gateway, e.g. before opening a channel."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from marketplace.api.deps import ServicesDep

router = APIRouter(prefix="/v1/payments", tags=["payments"])


class PaymentTerms(BaseModel):
    """How this gateway is paid for metered calls."""

    #: Payment channels: the channels contract, the ``receiverAuthorizer`` a channel must name (the
    #: key this gateway claims with), the claim window, the expiry margin, the voucher's EIP-712 types.
    payment_channel: dict[str, Any]
    #: The model assets this gateway runs (ascending ids): a channel for any other asset would pay for calls
    #: this gateway answers 404 ``model_not_served``.
    models: list[int]


@router.get("", response_model=PaymentTerms, operation_id="getPaymentTerms")
def payment_terms(services: ServicesDep) -> PaymentTerms:
    """The terms of channel payments: open a channel with ``receiverAuthorizer`` set to the address given here."""
    return PaymentTerms(payment_channel=services.gate.channel_terms(), models=sorted(services.model_handlers))
