"""Asset content: PUT (the owner uploads) and GET (a license holder downloads, sealed to its key)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from marketplace.api.deps import CallerDep, ServicesDep
from marketplace.api.errors import ApiError, not_found
from marketplace.chain import ContractRevert
from marketplace.chain.market import Asset
from marketplace.content import ContentHashMismatch, ContentTooLarge, seal_frames
from marketplace.indexer.models import AgentRow

router = APIRouter(prefix="/v1/assets", tags=["content"])

AssetId = Annotated[int, Path(ge=1, le=2**63 - 1, description="Asset id")]
SEALED_MEDIA_TYPE = "application/vnd.agentmarket.sealed-frames"


class Uploaded(BaseModel):
    """What the server stored."""

    asset_id: int
    sha256: str
    size: int


def _asset_on_chain(services: ServicesDep, asset_id: int) -> Asset:
    try:
        return services.market.marketplace.asset(asset_id)
    except ContractRevert as exc:
        if exc.error == "UnknownAsset":
            raise not_found("asset", asset_id) from None
        raise


@router.put("/{asset_id}/content", response_model=Uploaded, status_code=201)
async def upload(asset_id: AssetId, request: Request, caller: CallerDep, services: ServicesDep) -> Uploaded:
    """Store the asset's content, streamed and encrypted at rest; only its on-chain owner may."""
    asset = await run_in_threadpool(_asset_on_chain, services, asset_id)
    if asset.owner != caller:
        raise ApiError(403, "not_asset_owner", f"only the asset's owner {asset.owner} may upload its content")
    limit = services.settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "content_too_large", f"content is larger than the limit of {limit} bytes")
    try:
        stored = await services.content.put(request.stream(), "0x" + asset.content_hash.hex(), limit)
    except ContentTooLarge as exc:
        raise ApiError(413, "content_too_large", str(exc)) from None
    except ContentHashMismatch as exc:
        raise ApiError(422, "content_hash_mismatch", str(exc)) from None
    return Uploaded(asset_id=asset_id, sha256=stored.sha256, size=stored.size)


def _recipient_key(services: ServicesDep, caller: str, agent_id: int | None) -> bytes | None:
    """The X25519 key to seal to: the named agent's, or the first agent whose wallet is the caller."""
    agents = services.market.agents
    if agent_id is not None:
        try:
            record = agents.agent(agent_id)
        except ContractRevert:
            raise not_found("agent", agent_id) from None
        if caller not in (record.wallet, record.owner):
            raise ApiError(403, "not_your_agent", f"agent {agent_id} is neither owned by nor acting from {caller}")
        if record.encryption_key is None:
            raise ApiError(422, "no_encryption_key", f"agent {agent_id} has no encryptionKey metadata")
        return _checked_key(record.encryption_key, agent_id)
    with services.fresh_session() as session:
        candidates = list(session.scalars(select(AgentRow.agent_id).where(AgentRow.wallet == caller)))
    for candidate in candidates:
        record = agents.agent(candidate)  # re-read on chain: the read model may lag
        if record.wallet == caller and record.encryption_key:
            return _checked_key(record.encryption_key, candidate)
    return None


def _checked_key(key: bytes, agent_id: int) -> bytes:
    if len(key) != 32:
        raise ApiError(422, "bad_encryption_key", f"agent {agent_id}'s encryptionKey is not a 32-byte X25519 key")
    return key


@router.get("/{asset_id}/content")
def download(
    asset_id: AssetId,
    caller: CallerDep,
    services: ServicesDep,
    agent_id: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="Seal to this agent's key")] = None,
) -> StreamingResponse:
    """The content, to a caller holding a license on chain right now (or the owner).

    Sealed to the caller's agent's X25519 key when it has one; X-Content-SHA256 is the plaintext's
    hash either way, so the receiver can verify what it decrypted.
    """
    asset = _asset_on_chain(services, asset_id)
    if caller != asset.owner and not services.market.marketplace.has_access(asset_id, caller):
        raise ApiError(402, "license_required", f"{caller} holds no license to asset {asset_id}; buy one first")
    content_hash = "0x" + asset.content_hash.hex()
    if not services.content.has(content_hash):
        raise ApiError(404, "content_not_uploaded", f"the owner has not uploaded asset {asset_id}'s content yet")
    key = _recipient_key(services, caller, agent_id)
    headers = {"X-Content-SHA256": content_hash}
    plaintext = services.content.iter_plaintext(content_hash)
    if key is None:
        return StreamingResponse(plaintext, media_type="application/octet-stream", headers=headers)
    headers["X-Content-Encryption"] = "x25519-sealedbox-frames"
    return StreamingResponse(seal_frames(plaintext, key), media_type=SEALED_MEDIA_TYPE, headers=headers)
