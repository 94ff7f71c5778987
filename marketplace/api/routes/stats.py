"""GET /v1/stats: marketplace-wide figures, from the read model alone, computed at most once a second.

Anyone may ask, so an answer costs no chain read beyond the read model's catch-up every read route makes:
revenue per asset is what the indexer counted into each vault (``VaultRevenueRow``: every transfer of the
asset's token into its vault), not two calls per asset on the chain. The figures are kept per app and
reused while the read model has indexed no new block, or for :data:`STATS_MAX_AGE` seconds, so a flood of
requests computes them once per block at most once a second.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

from fastapi import APIRouter, FastAPI, Request
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from marketplace.api.deps import SessionDep
from marketplace.indexer.models import (
    AgentRow,
    AssetRow,
    ChannelRow,
    LicenseRow,
    ReleaseRow,
    SyncState,
    VaultRevenueRow,
)
from marketplace.protocol.wire import AssetRevenue, Stats

router = APIRouter(tags=["stats"])

#: Longest, in seconds, that figures computed for an earlier block are served while new blocks are indexed.
STATS_MAX_AGE = 1.0
#: How many assets ``top_assets`` lists (by revenue received).
TOP_ASSETS = 10


@router.get("/v1/stats", response_model=Stats, operation_id="getStats")
def stats(request: Request, session: SessionDep) -> Stats:
    """Assets, agents, license and channel volume, revenue received (per vault, from the read model), released
    by payee, and the top assets by revenue; at most :data:`STATS_MAX_AGE` seconds behind the indexed chain."""
    return _cache_of(request.app).get(session)


@dataclass
class _Cached:
    block: int
    at: float
    stats: Stats


class StatsCache:
    """The last figures computed, the block they were computed at, and when (thread-safe)."""

    def __init__(self, max_age: float = STATS_MAX_AGE) -> None:
        self.max_age = max_age
        self._lock = threading.Lock()
        self._cached: _Cached | None = None

    def get(self, session: Session) -> Stats:
        """The figures for ``session``'s read model: the cached ones if it indexed no block since, or if they are
        younger than ``max_age``; else computed now (one request at a time: the others wait and reuse them)."""
        with self._lock:
            block = _indexed_block(session)
            cached, now = self._cached, time.monotonic()
            if cached is None or (cached.block != block and now - cached.at >= self.max_age):
                cached = self._cached = _Cached(block, now, compute_stats(session))
            return cached.stats


_CACHES_LOCK = threading.Lock()


def _cache_of(app: FastAPI) -> StatsCache:
    with _CACHES_LOCK:
        cache = getattr(app.state, "stats_cache", None)
        if cache is None:
            cache = app.state.stats_cache = StatsCache()
        return cache


def _indexed_block(session: Session) -> int:
    state = session.get(SyncState, 1)
    return state.last_block if state else -1


def compute_stats(session: Session) -> Stats:
    """The figures, from the read model (amounts are exact ints summed in Python: the same on every engine)."""
    assets = list(session.scalars(select(AssetRow).order_by(AssetRow.asset_id)))
    revenue = {asset_id: received for asset_id, received in session.execute(
        select(VaultRevenueRow.asset_id, VaultRevenueRow.received))}  # fmt: skip
    released: dict[str, int] = {}
    for payee, amount in session.execute(select(ReleaseRow.payee, ReleaseRow.amount)):
        released[payee] = released.get(payee, 0) + amount
    top = sorted(assets, key=lambda a: (-revenue.get(a.asset_id, 0), a.asset_id))[:TOP_ASSETS]
    return Stats(
        assets=len(assets),
        agents=session.scalar(select(func.count(AgentRow.agent_id))) or 0,
        licenses_sold=session.scalar(select(func.count(LicenseRow.id))) or 0,
        license_volume=str(sum(session.scalars(select(LicenseRow.price)))),
        channel_volume=str(sum(session.scalars(select(ChannelRow.claimed)))),
        revenue_received=str(sum(revenue.values())),
        released_by_payee={k: str(v) for k, v in sorted(released.items())},
        top_assets=[
            AssetRevenue(asset_id=a.asset_id, uri=a.uri, revenue_received=str(revenue.get(a.asset_id, 0))) for a in top
        ],
    )
