"""GET /v1/accounts/{address}/earnings."""

from __future__ import annotations

from typing import Annotated

from eth_utils import to_checksum_address
from fastapi import APIRouter, Path
from sqlalchemy import select

from marketplace.api.deps import ServicesDep, SessionDep
from marketplace.api.schemas import Earning, Earnings
from marketplace.chain.market import RevenueVaultContract
from marketplace.indexer.models import AssetPayeeRow, AssetRow

router = APIRouter(tags=["accounts"])

_TOTAL_SHARES = 100_000_000


@router.get("/v1/accounts/{address}/earnings", response_model=Earnings)
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
