"""GET /v1/assets and /v1/assets/{asset_id}: the catalog, from the read model and the chain."""

from __future__ import annotations

from typing import Annotated, Literal

from eth_utils import to_checksum_address
from fastapi import APIRouter, Path, Query
from sqlalchemy import func, select

from marketplace.api.deps import Services, ServicesDep, SessionDep
from marketplace.api.errors import ApiError, not_found
from marketplace.chain.units import BPS, TOTAL_SHARES
from marketplace.indexer.models import AssetParentRow, AssetRow, FeedbackRow, LicenseRow
from marketplace.protocol.wire import AssetDetail, AssetPage, AssetSummary, Payee, Rating

router = APIRouter(prefix="/v1/assets", tags=["assets"])

AssetId = Annotated[int, Path(ge=1, le=2**63 - 1, description="Asset id")]


def _summary(row: AssetRow, parents: list[int], services: Services) -> AssetSummary:
    uploaded = services.content.has_upload(row.asset_id, row.version, row.content_hash, row.owner)
    return AssetSummary(
        asset_id=row.asset_id, kind=row.kind, owner=row.owner, token=row.token, price=str(row.price),
        license_duration=row.license_duration, version=row.version, listed=row.listed,
        content_hash=row.content_hash, uri=row.uri, vault=row.vault, parents=parents, content_uploaded=uploaded,
    )  # fmt: skip


def _parents(session: SessionDep, asset_ids: list[int]) -> dict[int, list[int]]:
    found: dict[int, list[int]] = {asset_id: [] for asset_id in asset_ids}
    rows = session.scalars(
        select(AssetParentRow).where(AssetParentRow.asset_id.in_(asset_ids)).order_by(AssetParentRow.position)
    )
    for row in rows:
        found[row.asset_id].append(row.parent_id)
    return found


@router.get("", response_model=AssetPage, operation_id="listAssets")
def list_assets(
    session: SessionDep,
    services: ServicesDep,
    kind: Literal["dataset", "model"] | None = None,
    provider: Annotated[str | None, Query(pattern=r"^0x[0-9a-fA-F]{40}$", description="Owner address")] = None,
    min_price: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
    max_price: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
    q: Annotated[
        str | None, Query(max_length=200, description="Text searched in the asset's URI (any case; % and _ literal)")
    ] = None,
    listed_only: bool = True,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=2**31)] = 0,
) -> AssetPage:
    """Assets, filtered and paginated, oldest first: listed ones (buyable) unless ``listed_only=false``;
    ``content_uploaded`` tells whether this server holds each one's content.

    The same on every engine: ``q`` matches case-folded text (``str.casefold``, so "STRASSE" finds
    "Straße") and its ``%`` and ``_`` are plain characters; prices filter on the price capped at 2**63 - 1.
    """
    if min_price is not None and max_price is not None and min_price > max_price:
        raise ApiError(422, "invalid_request", f"min_price {min_price} is above max_price {max_price}")
    query = select(AssetRow)
    if kind:
        query = query.where(AssetRow.kind == kind)
    if provider:
        query = query.where(AssetRow.owner == to_checksum_address(provider))
    if min_price is not None:
        query = query.where(AssetRow.price_sort >= min_price)
    if max_price is not None:
        query = query.where(AssetRow.price_sort <= max_price)
    if q:
        query = query.where(AssetRow.uri_folded.contains(q.casefold(), autoescape=True))
    if listed_only:
        query = query.where(AssetRow.listed.is_(True))
    total = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = list(session.scalars(query.order_by(AssetRow.asset_id).limit(limit).offset(offset)))
    parents = _parents(session, [row.asset_id for row in rows])
    return AssetPage(
        items=[_summary(row, parents[row.asset_id], services) for row in rows],
        total=total,
        limit=limit,
        offset=offset,
    )


@router.get("/{asset_id}", response_model=AssetDetail, operation_id="getAsset")
def get_asset(asset_id: AssetId, session: SessionDep, services: ServicesDep) -> AssetDetail:
    """One asset: split (read from its vault), lineage, revenue received, licenses sold, ratings."""
    row = session.get(AssetRow, asset_id)
    if row is None:
        raise not_found("asset", asset_id)
    parents = _parents(session, [asset_id])[asset_id]
    vault_to_parent = {
        vault: parent
        for parent, vault in session.execute(
            select(AssetRow.asset_id, AssetRow.vault).where(AssetRow.asset_id.in_(parents))
        )
    }
    vault = services.market.vault(asset_id)
    payees = [
        Payee(account=account, share_bps=shares * BPS / TOTAL_SHARES,
              is_asset_vault=account in vault_to_parent, parent_asset_id=vault_to_parent.get(account))
        for account, shares in vault.payees().items()
    ]  # fmt: skip
    children = list(session.scalars(select(AssetParentRow.asset_id).where(AssetParentRow.parent_id == asset_id)))
    count, average = session.execute(
        select(func.count(FeedbackRow.id), func.avg(FeedbackRow.score))
        .where(FeedbackRow.subject_kind == "asset", FeedbackRow.subject_id == asset_id)
    ).one()  # fmt: skip
    licenses = session.scalar(select(func.count(LicenseRow.id)).where(LicenseRow.asset_id == asset_id)) or 0
    return AssetDetail(
        **_summary(row, parents, services).model_dump(),
        payees=payees,
        children=sorted(children),
        revenue_received=str(vault.total_received(row.token)),
        licenses_sold=licenses,
        rating=Rating(count=count, average=float(average) if count else None),
    )
