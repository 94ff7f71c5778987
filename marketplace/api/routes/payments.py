"""GET /v1/payments: what a payer must know before paying this gateway, e.g. before opening a channel."""

from __future__ import annotations

from fastapi import APIRouter

from marketplace.api.deps import ServicesDep
from marketplace.protocol.wire import PaymentTerms

router = APIRouter(prefix="/v1/payments", tags=["payments"])


@router.get("", response_model=PaymentTerms, operation_id="getPaymentTerms")
def payment_terms(services: ServicesDep) -> PaymentTerms:
    """The terms of channel payments: open a channel with ``receiverAuthorizer`` set to the address given here."""
    return PaymentTerms(payment_channel=services.gate.channel_terms(), models=sorted(services.model_handlers))
