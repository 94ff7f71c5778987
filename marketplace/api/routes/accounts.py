"""GET /v1/accounts/{address}/earnings and GET /v1/stats."""

from __future__ import annotations

from typing import Annotated

from eth_utils import to_checksum_address
from fastapi import APIRouter, Path
from sqlalchemy import func, select

from marketplace.api.deps import ServicesDep, SessionDep
from marketplace.api.schemas import AssetRevenue, Earning, Earnings, Stats
from marketplace.chain.market import RevenueVaultContract
from marketplace.indexer.models import AgentRow, AssetPayeeRow, AssetRow, ChannelRow, LicenseRow, ReleaseRow

router = APIRouter(tags=["accounts"])

_TOTAL_SHARES = 100_000_000


@router.get("/v1/accounts/{address}/earnings", response_model=Earnings, operation_id="getEarnings")
def earnings(
    address: Annotated[str, Path(pattern=r"^0x[0-9a-fA-F]{40}$")], session: SessionDep, services: ServicesDep
) -> Earnings:
    """Claimable (read on chain now) and released amounts for every vault ``address`` is a payee of."""
    account = to_checksum_address(address)
    rows = session.execute(
        select(AssetRow, AssetPayeeRow.shares)
        .join(AssetPayeeRow, AssetPayeeRow.asset_id == AssetRow.asset_id)
        .where(AssetPayeeRow.payee == account)
        .order_by(AssetRow.asset_id)
    ).all()
    vaults = []
    for asset, shares in rows:
        vault = RevenueVaultContract(services.chain, asset.vault)
        vaults.append(
            Earning(
                asset_id=asset.asset_id,
                vault=asset.vault,
                token=asset.token,
                share_bps=shares * 10_000 / _TOTAL_SHARES,
                claimable=str(vault.claimable(asset.token, account)),
                released=str(vault.released(asset.token, account)),
            )
        )
    return Earnings(
        address=account,
        total_claimable=str(sum(int(v.claimable) for v in vaults)),
        total_released=str(sum(int(v.released) for v in vaults)),
        vaults=vaults,
    )


@router.get("/v1/stats", response_model=Stats, operation_id="getStats")
def stats(session: SessionDep, services: ServicesDep) -> Stats:
    """Volume, revenue, revenue released by payee, and the top assets by revenue."""
    assets = list(session.scalars(select(AssetRow).order_by(AssetRow.asset_id)))
    revenue = {a.asset_id: RevenueVaultContract(services.chain, a.vault).total_received(a.token) for a in assets}
    released: dict[str, int] = {}
    for payee, amount in session.execute(select(ReleaseRow.payee, ReleaseRow.amount)):
        released[payee] = released.get(payee, 0) + amount  # exact ints, summed here: the same on every engine
    top = sorted(assets, key=lambda a: (-revenue[a.asset_id], a.asset_id))[:10]
    return Stats(
        assets=len(assets),
        agents=session.scalar(select(func.count(AgentRow.agent_id))) or 0,
        licenses_sold=session.scalar(select(func.count(LicenseRow.id))) or 0,
        license_volume=str(sum(session.scalars(select(LicenseRow.price)))),
        channel_volume=str(sum(session.scalars(select(ChannelRow.claimed)))),
        revenue_received=str(sum(revenue.values())),
        released_by_payee={k: str(v) for k, v in sorted(released.items())},
        top_assets=[
            AssetRevenue(asset_id=a.asset_id, uri=a.uri, revenue_received=str(revenue[a.asset_id])) for a in top
        ],
    )
