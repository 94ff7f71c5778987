"""GET /healthz."""

from __future__ import annotations

from fastapi import APIRouter

from marketplace.api.deps import ServicesDep
from marketplace.api.schemas import Health

router = APIRouter(tags=["health"])


@router.get("/healthz", response_model=Health)
def healthz(services: ServicesDep) -> Health:
    """Chain head and how far behind it the read model is (before it catches up)."""
    head = services.chain.block_number()
    indexed = services.indexer.last_block()
    return Health(
        status="ok",
        chain_id=services.chain.chain_id,
        head_block=head,
        indexed_block=indexed,
        indexer_lag=max(0, head - indexed),
    )


@router.get("/v1/deployment")
def deployment(services: ServicesDep) -> dict:
    """The deployment manifest this server follows (chain id, contract addresses, deploy block)."""
    return services.deployment.to_json()
