"""The read model the indexer writes and the API reads (SQLAlchemy 2; SQLite by default).

Every row can be rebuilt from chain events alone: delete the database and re-index to get the
same rows. Amounts are stored as decimal strings (uint256 does not fit SQLite's INTEGER).
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    """Declarative base of the read model."""


class SyncState(Base):
    """How far the indexer got: one row."""

    __tablename__ = "sync_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    last_block: Mapped[int] = mapped_column(BigInteger)


class IndexedBlock(Base):
    """Hash of each recently indexed block, to notice a reorg."""

    __tablename__ = "indexed_blocks"
    number: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    hash: Mapped[str] = mapped_column(String(66))


class EventMixin:
    """Where an event-sourced row came from (for idempotence and reorg rollback)."""

    block_number: Mapped[int] = mapped_column(BigInteger, index=True)
    tx_hash: Mapped[str] = mapped_column(String(66))
    log_index: Mapped[int] = mapped_column(Integer)


class AssetRow(EventMixin, Base):
    """A published asset with its current state."""

    __tablename__ = "assets"
    asset_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16), index=True)
    owner: Mapped[str] = mapped_column(String(42), index=True)
    token: Mapped[str] = mapped_column(String(42))
    price: Mapped[str] = mapped_column(String(78))
    price_sort: Mapped[int] = mapped_column(BigInteger, index=True)
    license_duration: Mapped[int] = mapped_column(BigInteger)
    version: Mapped[int] = mapped_column(Integer)
    listed: Mapped[bool] = mapped_column(Boolean)
    content_hash: Mapped[str] = mapped_column(String(66))
    uri: Mapped[str] = mapped_column(Text)
    vault: Mapped[str] = mapped_column(String(42), index=True)


class AssetParentRow(Base):
    """One upstream edge of the lineage DAG."""

    __tablename__ = "asset_parents"
    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.asset_id", ondelete="CASCADE"), primary_key=True)
    parent_id: Mapped[int] = mapped_column(BigInteger, primary_key=True, index=True)
    position: Mapped[int] = mapped_column(Integer)


class AssetPayeeRow(Base):
    """A payee of an asset's vault and its share out of 100,000,000 (fixed at publish)."""

    __tablename__ = "asset_payees"
    asset_id: Mapped[int] = mapped_column(ForeignKey("assets.asset_id", ondelete="CASCADE"), primary_key=True)
    payee: Mapped[str] = mapped_column(String(42), primary_key=True, index=True)
    shares: Mapped[int] = mapped_column(BigInteger)


class LicenseRow(EventMixin, Base):
    """One license purchase."""

    __tablename__ = "licenses"
    __table_args__ = (UniqueConstraint("tx_hash", "log_index"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    asset_id: Mapped[int] = mapped_column(BigInteger, index=True)
    buyer: Mapped[str] = mapped_column(String(42), index=True)
    price: Mapped[str] = mapped_column(String(78))
    expires_at: Mapped[str] = mapped_column(String(20))


class ReleaseRow(EventMixin, Base):
    """One vault release to a payee."""

    __tablename__ = "releases"
    __table_args__ = (UniqueConstraint("tx_hash", "log_index"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    vault: Mapped[str] = mapped_column(String(42), index=True)
    token: Mapped[str] = mapped_column(String(42))
    payee: Mapped[str] = mapped_column(String(42), index=True)
    amount: Mapped[str] = mapped_column(String(78))


class ChannelRow(EventMixin, Base):
    """A payment channel and its latest known state."""

    __tablename__ = "channels"
    channel_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    asset_id: Mapped[int] = mapped_column(BigInteger, index=True)
    payer: Mapped[str] = mapped_column(String(42), index=True)
    token: Mapped[str] = mapped_column(String(42))
    signer: Mapped[str] = mapped_column(String(42))
    deposit: Mapped[str] = mapped_column(String(78))
    claimed: Mapped[str] = mapped_column(String(78))
    expiry: Mapped[int] = mapped_column(BigInteger)
    closed: Mapped[bool] = mapped_column(Boolean)


class AgentRow(EventMixin, Base):
    """An ERC-8004 agent identity."""

    __tablename__ = "agents"
    agent_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    owner: Mapped[str] = mapped_column(String(42), index=True)
    uri: Mapped[str] = mapped_column(Text)
    wallet: Mapped[str | None] = mapped_column(String(42), nullable=True)


class AgentMetadataRow(Base):
    """One metadata entry of an agent (hex-encoded value)."""

    __tablename__ = "agent_metadata"
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.agent_id", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(128), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class FeedbackRow(EventMixin, Base):
    """One paid-for feedback."""

    __tablename__ = "feedback"
    __table_args__ = (UniqueConstraint("tx_hash", "log_index"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject_kind: Mapped[str] = mapped_column(String(8), index=True)
    subject_id: Mapped[int] = mapped_column(BigInteger, index=True)
    client: Mapped[str] = mapped_column(String(42))
    value: Mapped[str] = mapped_column(String(40))
    value_decimals: Mapped[int] = mapped_column(Integer)
    tag1: Mapped[str] = mapped_column(Text)
    tag2: Mapped[str] = mapped_column(Text)


#: Tables whose rows are event-sourced and can be rolled back by block number.
EVENT_TABLES = (AssetRow, LicenseRow, ReleaseRow, ChannelRow, AgentRow, FeedbackRow)
