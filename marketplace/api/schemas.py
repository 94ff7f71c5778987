"""Response models of the read API (amounts are decimal strings of atomic units)."""

from __future__ import annotations

from pydantic import BaseModel


class ErrorBody(BaseModel):
    """Every error response: a machine code and a human sentence."""

    error: str
    detail: str


class Health(BaseModel):
    """Liveness and how fresh the read model is."""

    status: str
    chain_id: int
    head_block: int
    indexed_block: int
    indexer_lag: int


class AssetSummary(BaseModel):
    """An asset in a listing."""

    asset_id: int
    kind: str
    owner: str
    token: str
    price: str
    license_duration: int
    version: int
    listed: bool
    content_hash: str
    uri: str
    vault: str
    parents: list[int]
    #: True when this server holds the owner's upload of the current version: an asset whose content is
    #: not here cannot be downloaded from this server, even if it is listed.
    content_uploaded: bool


class AssetPage(BaseModel):
    """One page of a listing."""

    items: list[AssetSummary]
    total: int
    limit: int
    offset: int


class Payee(BaseModel):
    """A vault payee and its share (bps of everything the vault receives, fee included)."""

    account: str
    share_bps: float
    is_asset_vault: bool
    parent_asset_id: int | None


class Rating(BaseModel):
    """Paid-for feedback summary: how many raters, and their average on the [0, 100] scale (null if none)."""

    count: int
    average: float | None


class AssetDetail(AssetSummary):
    """An asset with its split, lineage, revenue, sales and ratings."""

    payees: list[Payee]
    children: list[int]
    revenue_received: str
    licenses_sold: int
    rating: Rating


class Agent(BaseModel):
    """An ERC-8004 agent."""

    agent_id: int
    owner: str
    uri: str
    wallet: str | None
    metadata: dict[str, str]


class Earning(BaseModel):
    """An account's place in one vault, for one token (base units): what it can claim now, what releases
    up the lineage would add, and what it was already sent."""

    asset_id: int
    vault: str
    token: str
    share_bps: float
    #: What the vault would send the account now.
    claimable: str
    #: What releasing every vault between a paid asset and this one (children first, each vault's floor
    #: rounding at every hop) would add to ``claimable``: a withdrawal gets ``claimable + waiting``.
    waiting: str
    released: str


class TokenEarnings(BaseModel):
    """An account's earnings in one token, over every vault (base units)."""

    token: str
    claimable: str
    waiting: str
    released: str


class Earnings(BaseModel):
    """An account's earnings across every vault it is a payee of, one entry per vault and token that
    reaches it (every vault's own token always), computed on chain now with the royalties waiting up
    the lineage."""

    address: str
    #: The deployment's payment token, which ``total_*`` are in.
    token: str
    total_claimable: str
    total_waiting: str
    total_released: str
    #: Per token, every token included.
    totals: list[TokenEarnings]
    vaults: list[Earning]
    #: Transactions a withdrawal would send now (vault-to-vault releases up the lineage, then to the account).
    pending_releases: int
    #: False when the lineage walk stopped at its bound or a vault's token could not be read: more may wait.
    lineage_complete: bool


class AssetRevenue(BaseModel):
    """Revenue an asset's vault received."""

    asset_id: int
    uri: str
    revenue_received: str


class Stats(BaseModel):
    """Marketplace-wide figures."""

    assets: int
    agents: int
    licenses_sold: int
    license_volume: str
    channel_volume: str
    revenue_received: str
    released_by_payee: dict[str, str]
    top_assets: list[AssetRevenue]
