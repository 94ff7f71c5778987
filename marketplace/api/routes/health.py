"""GET /healthz and GET /v1/deployment."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from marketplace.api.deps import Services, ServicesDep
from marketplace.api.errors import CHAIN_UNAVAILABLE, chain_unavailable
from marketplace.protocol.wire import ChainDown, Health

router = APIRouter(tags=["health"])


@router.get(
    "/healthz",
    response_model=Health,
    operation_id="getHealth",
    responses={503: {"model": ChainDown, "description": "The chain (chain_unavailable) or the database is down"}},
)
def healthz(services: ServicesDep, request: Request) -> Health | JSONResponse:
    """Chain head and how far behind it the read model is (before it catches up).

    503 ``chain_unavailable`` (with ``status: chain_down`` and the last head the server saw) when the chain's
    node cannot be reached; 503 ``database_unavailable`` when the read model's database cannot.
    """
    try:
        head = services.chain.block_number()
    except CHAIN_UNAVAILABLE as exc:
        return _chain_down(services, request, exc)
    indexed = services.indexer.last_block()
    return Health(
        status="ok",
        chain_id=services.chain.chain_id,
        head_block=head,
        indexed_block=indexed,
        indexer_lag=max(0, head - indexed),
    )


def _chain_down(services: Services, request: Request, exc: Exception) -> JSONResponse:
    rpc_url = services.chain.rpc_url or "the embedded chain"
    error = chain_unavailable(request, exc)
    last = services.watcher.head
    body = ChainDown(
        error=error.code,
        detail=error.detail,
        status="chain_down",
        chain_id=services.chain.chain_id,
        rpc_url=rpc_url,
        last_head_block=last[0] if last else None,
        last_head_timestamp=last[1] if last else None,
    )
    return JSONResponse(body.model_dump(), status_code=503, headers={"Retry-After": "5"})


@router.get("/v1/deployment", operation_id="getDeployment")
def deployment(services: ServicesDep) -> dict:
    """The deployment manifest this server follows (chain id, contract addresses, deploy block)."""
    return services.deployment.to_json()
