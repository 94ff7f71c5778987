"""GET /v1/accounts/{address}/earnings."""

from __future__ import annotations

from typing import Annotated

from eth_utils import to_checksum_address
from fastapi import APIRouter, Path
from sqlalchemy import select
from sqlalchemy.orm import Session

from marketplace.api.deps import ServicesDep, SessionDep
from marketplace.chain.lineage import Lineage, VaultNode, plan_withdrawal
from marketplace.chain.units import BPS, TOTAL_SHARES
from marketplace.indexer.models import AssetPayeeRow, AssetRow
from marketplace.protocol.wire import Earning, Earnings, TokenEarnings

router = APIRouter(tags=["accounts"])


@router.get("/v1/accounts/{address}/earnings", response_model=Earnings, operation_id="getEarnings")
def earnings(
    address: Annotated[str, Path(pattern=r"^0x[0-9a-fA-F]{40}$")], session: SessionDep, services: ServicesDep
) -> Earnings:
    """For every vault ``address`` is a payee of and every token reaching it: claimable now, waiting up the
    lineage, and released; computed by :func:`marketplace.chain.lineage.plan_withdrawal` from on-chain reads
    (the lineage's shape comes from the read model: payees and tokens are fixed at publish)."""
    account = to_checksum_address(address)
    plan = plan_withdrawal(services.chain, _lineage(session), account)
    vaults = [
        Earning(
            asset_id=slot.asset_id,
            vault=slot.vault,
            token=slot.token,
            share_bps=slot.shares * BPS / TOTAL_SHARES,
            claimable=str(slot.claimable),
            waiting=str(slot.waiting),
            released=str(slot.released),
        )
        for slot in plan.slots
    ]
    totals: dict[str, list[int]] = {}
    for slot in plan.slots:
        total = totals.setdefault(slot.token, [0, 0, 0])
        for i, value in enumerate((slot.claimable, slot.waiting, slot.released)):
            total[i] += value
    token = services.market.token.address
    claimable, waiting, released = totals.get(token, [0, 0, 0])
    return Earnings(
        address=account,
        token=token,
        total_claimable=str(claimable),
        total_waiting=str(waiting),
        total_released=str(released),
        totals=[
            TokenEarnings(token=t, claimable=str(c), waiting=str(w), released=str(r))
            for t, (c, w, r) in sorted(totals.items(), key=lambda item: (item[0] != token, item[0]))
        ],
        vaults=vaults,
        pending_releases=len(plan.releases),
        lineage_complete=plan.complete,
    )


def _lineage(session: Session) -> Lineage:
    """The royalty graph as the read model holds it (every asset's vault, token, payees and shares)."""
    payees: dict[int, list[tuple[str, int]]] = {}
    for row in session.scalars(select(AssetPayeeRow).order_by(AssetPayeeRow.asset_id)):
        payees.setdefault(row.asset_id, []).append((row.payee, row.shares))
    return Lineage(
        VaultNode(asset.asset_id, asset.vault, asset.token, tuple(payees.get(asset.asset_id, ())))
        for asset in session.scalars(select(AssetRow))
    )
