"""Asset content: PUT (the owner uploads) and GET (a license holder downloads, sealed to its key).

Content is served only through the asset whose owner uploaded it, for the version the chain names
now: :func:`stored_content` is the one lookup every route that serves content uses.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import select
from starlette.concurrency import run_in_threadpool

from marketplace.api.deps import CallerDep, ServicesDep
from marketplace.api.errors import ApiError, not_found
from marketplace.chain import ContractRevert
from marketplace.chain.records import Asset
from marketplace.content import (
    ContentHashMismatch,
    ContentNotUploaded,
    ContentTooLarge,
    ContentUnreadable,
    StoredContent,
    seal_frames,
)
from marketplace.indexer.models import AgentRow
from marketplace.protocol.wire import Uploaded

router = APIRouter(prefix="/v1/assets", tags=["content"])

AssetId = Annotated[int, Path(ge=1, le=2**63 - 1, description="Asset id")]
SEALED_MEDIA_TYPE = "application/vnd.agentmarket.sealed-frames"


def _asset_on_chain(services: ServicesDep, asset_id: int) -> Asset:
    try:
        return services.market.marketplace.asset(asset_id)
    except ContractRevert as exc:
        if exc.error == "UnknownAsset":
            raise not_found("asset", asset_id) from None
        raise


def stored_content(services: ServicesDep, asset: Asset) -> StoredContent:
    """The intact upload of ``asset``'s current version by its owner: never bytes another asset or
    version named, another chain stored, or a file damaged on disk (404 ``content_not_uploaded`` /
    ``content_unreadable``, each telling the owner to upload again)."""
    try:
        return services.content.find(asset.asset_id, asset.version, "0x" + asset.content_hash.hex(), asset.owner)
    except ContentNotUploaded as exc:
        raise ApiError(404, "content_not_uploaded", str(exc)) from None
    except ContentUnreadable as exc:
        raise ApiError(404, "content_unreadable", str(exc)) from None


#: The upload's body as OpenAPI describes it (the route reads the raw stream, so FastAPI cannot infer it).
UPLOAD_BODY = {
    "required": True,
    "description": "The content's bytes, streamed; their sha256 must be the version's on-chain content hash",
    "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
}
_BINARY = {"schema": {"type": "string", "format": "binary"}}
_SHA256_HEADER = {"X-Content-SHA256": {"description": "0x + sha256 hex of the plaintext", "schema": {"type": "string"}}}


@router.put(
    "/{asset_id}/content",
    response_model=Uploaded,
    status_code=201,
    operation_id="uploadContent",
    openapi_extra={"requestBody": UPLOAD_BODY},
    responses={
        403: {"description": "Only the asset's on-chain owner may upload"},
        409: {"description": "A new version was published while the content streamed"},
        413: {"description": "Larger than the server's upload limit"},
        422: {"description": "The bytes do not hash to the version's on-chain content hash"},
    },
)
async def upload(asset_id: AssetId, request: Request, caller: CallerDep, services: ServicesDep) -> Uploaded:
    """Store the content of the asset's current version, streamed and encrypted at rest; only its
    on-chain owner may. Every byte is hashed against the version's on-chain content hash (422
    otherwise); uploading the same version again replaces it. 409 if the owner published another
    version while the upload streamed (upload again, for the new version)."""
    asset = await run_in_threadpool(_asset_on_chain, services, asset_id)
    if asset.owner != caller:
        raise ApiError(403, "not_asset_owner", f"only the asset's owner {asset.owner} may upload its content")
    limit = services.settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "content_too_large", f"content is larger than the limit of {limit} bytes")
    try:
        stored = await services.content.put(
            request.stream(),
            asset_id=asset_id,
            version=asset.version,
            sha256="0x" + asset.content_hash.hex(),
            uploader=caller,
            max_bytes=limit,
        )
    except ContentTooLarge as exc:
        raise ApiError(413, "content_too_large", str(exc)) from None
    except ContentHashMismatch as exc:
        raise ApiError(422, "content_hash_mismatch", str(exc)) from None
    now = await run_in_threadpool(_asset_on_chain, services, asset_id)
    if now.version != asset.version:
        raise ApiError(
            409,
            "asset_version_changed",
            f"asset {asset_id} moved from version {asset.version} to {now.version} while the content streamed; "
            "upload the new version's content",
        )
    return Uploaded(asset_id=asset_id, version=stored.record.version, sha256=stored.sha256, size=stored.size)


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


@router.get(
    "/{asset_id}/content",
    operation_id="downloadContent",
    response_class=StreamingResponse,
    response_model=None,
    responses={
        200: {
            "description": "The content: plaintext, or sealed frames to the caller's agent key",
            "content": {"application/octet-stream": _BINARY, SEALED_MEDIA_TYPE: _BINARY},
            "headers": _SHA256_HEADER,
        },
        402: {"description": "The caller holds no license to the asset now"},
        404: {"description": "Unknown asset, or its owner has not uploaded the current version here"},
    },
)
def download(
    asset_id: AssetId,
    caller: CallerDep,
    services: ServicesDep,
    agent_id: Annotated[int | None, Query(ge=1, le=2**63 - 1, description="Seal to this agent's key")] = None,
) -> StreamingResponse:
    """The content of the asset's current version, as its owner uploaded it, to a caller holding a
    license on chain right now (or the owner); 404 while the owner has not uploaded this version.

    Sealed to the caller's agent's X25519 key when it has one; X-Content-SHA256 is the plaintext's
    hash either way, so the receiver can verify what it decrypted.
    """
    asset = _asset_on_chain(services, asset_id)
    if caller != asset.owner and not services.market.marketplace.has_access(asset_id, caller):
        raise ApiError(402, "license_required", f"{caller} holds no license to asset {asset_id}; buy one first")
    stored = stored_content(services, asset)
    key = _recipient_key(services, caller, agent_id)
    headers = {"X-Content-SHA256": stored.sha256}
    plaintext = stored.iter_plaintext()
    if key is None:
        return StreamingResponse(plaintext, media_type="application/octet-stream", headers=headers)
    headers["X-Content-Encryption"] = "x25519-sealedbox-frames"
    return StreamingResponse(seal_frames(plaintext, key), media_type=SEALED_MEDIA_TYPE, headers=headers)
