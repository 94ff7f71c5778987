"""The read model the indexer writes and the API reads (SQLAlchemy 2; SQLite by default, or PostgreSQL).

Every row can be rebuilt from chain events alone: delete the database and re-index to get the
same rows. The same queries give the same answers on both engines:

- integers the chain may make larger than a signed 64-bit column (uint256 amounts, uint64 times,
  int128 ratings) are :class:`WideInt` columns: exact Python ints, stored as ``NUMERIC(78, 0)`` on
  PostgreSQL and as decimal strings on SQLite (whose INTEGER is 64-bit). Compare, order and sum them
  in Python, never in SQL (SQLite would compare strings); the ``*_sort`` and ``score`` columns are
  their SQL-comparable stand-ins;
- text comes from anyone's transaction: the indexer replaces what an engine cannot store (NUL,
  which PostgreSQL refuses; bytes that are not UTF-8) with U+FFFD, and never puts unbounded text in
  an index (PostgreSQL caps a B-tree entry at ~2.7 kB): long keys are indexed by their SHA-256.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from sqlalchemy import BigInteger, Boolean, Dialect, Float, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.dialects.postgresql import NUMERIC
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator, TypeEngine

#: Digits of the largest uint256 (2**256 - 1).
_WIDE_DIGITS = 78
_DECIMAL = re.compile(r"-?[0-9]{1,78}")


class WideInt(TypeDecorator[int]):
    """An integer of up to 256 bits, signed or not, stored exactly on every engine.

    PostgreSQL: ``NUMERIC(78, 0)``; SQLite (and any other engine): a decimal string. Values are
    Python ints both ways (an int's decimal string is accepted too); anything else, or more than 78
    digits, raises ``ValueError`` when bound. Equality filters work on both engines; ordering and
    arithmetic do not (see the module).
    """

    impl = String(_WIDE_DIGITS + 1)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        """NUMERIC on PostgreSQL, the string ``impl`` elsewhere."""
        if dialect.name == "postgresql":
            return dialect.type_descriptor(NUMERIC(_WIDE_DIGITS, 0))
        return dialect.type_descriptor(self.impl)

    def process_bind_param(self, value: int | str | None, dialect: Dialect) -> Any:
        """An int (bool refused) or its decimal string → Decimal on PostgreSQL, decimal string elsewhere."""
        if value is None:
            return None
        if isinstance(value, str) and _DECIMAL.fullmatch(value):
            value = int(value)
        if not isinstance(value, int) or isinstance(value, bool) or len(str(abs(value))) > _WIDE_DIGITS:
            raise ValueError(f"WideInt wants an int of at most {_WIDE_DIGITS} digits, not {value!r}")
        return Decimal(value) if dialect.name == "postgresql" else str(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        """The stored value as an int."""
        return None if value is None else int(value)


class Base(DeclarativeBase):
    """Declarative base of the read model."""


class SyncState(Base):
    """How far the indexer got: one row."""

    __tablename__ = "sync_state"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    chain_id: Mapped[int] = mapped_column(BigInteger)
    #: The deployment indexed: ``eip155:<chain id>/genesis:0x<block 0 hash>/marketplace:<address>``.
    chain: Mapped[str | None] = mapped_column(String(200), nullable=True)
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
    #: Price in base units of ``token``.
    price: Mapped[int] = mapped_column(WideInt)
    #: ``price`` capped at 2**63 - 1: what SQL filters on.
    price_sort: Mapped[int] = mapped_column(BigInteger, index=True)
    #: Seconds a license lasts (0: perpetual); uint64.
    license_duration: Mapped[int] = mapped_column(WideInt)
    version: Mapped[int] = mapped_column(Integer)
    listed: Mapped[bool] = mapped_column(Boolean)
    content_hash: Mapped[str] = mapped_column(String(66))
    uri: Mapped[str] = mapped_column(Text)
    #: ``uri`` case-folded (``str.casefold``): what text search matches, the same way on every engine.
    uri_folded: Mapped[str] = mapped_column(Text)
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
    price: Mapped[int] = mapped_column(WideInt)
    #: "perpetual", or the unix time it ends (decimal).
    expires_at: Mapped[str] = mapped_column(String(20))


class ReleaseRow(EventMixin, Base):
    """One vault release to a payee."""

    __tablename__ = "releases"
    __table_args__ = (UniqueConstraint("tx_hash", "log_index"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    vault: Mapped[str] = mapped_column(String(42), index=True)
    token: Mapped[str] = mapped_column(String(42))
    payee: Mapped[str] = mapped_column(String(42), index=True)
    amount: Mapped[int] = mapped_column(WideInt)


class ChannelRow(EventMixin, Base):
    """A payment channel and its latest known state."""

    __tablename__ = "channels"
    channel_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    asset_id: Mapped[int] = mapped_column(BigInteger, index=True)
    payer: Mapped[str] = mapped_column(String(42), index=True)
    token: Mapped[str] = mapped_column(String(42))
    signer: Mapped[str] = mapped_column(String(42))
    deposit: Mapped[int] = mapped_column(WideInt)
    claimed: Mapped[int] = mapped_column(WideInt)
    #: Unix time (uint64).
    expiry: Mapped[int] = mapped_column(WideInt)
    closed: Mapped[bool] = mapped_column(Boolean)


class AgentRow(EventMixin, Base):
    """An ERC-8004 agent identity."""

    __tablename__ = "agents"
    agent_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    owner: Mapped[str] = mapped_column(String(42), index=True)
    uri: Mapped[str] = mapped_column(Text)
    wallet: Mapped[str | None] = mapped_column(String(42), nullable=True)


class AgentMetadataRow(Base):
    """One metadata entry of an agent (hex-encoded value); keys are any string, so the key is indexed by its hash."""

    __tablename__ = "agent_metadata"
    agent_id: Mapped[int] = mapped_column(ForeignKey("agents.agent_id", ondelete="CASCADE"), primary_key=True)
    #: SHA-256 (hex) of the key as it came from the chain (UTF-8 bytes).
    key_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    key: Mapped[str] = mapped_column(Text)
    value: Mapped[str] = mapped_column(Text)


class FeedbackRow(EventMixin, Base):
    """One paid-for feedback."""

    __tablename__ = "feedback"
    __table_args__ = (UniqueConstraint("tx_hash", "log_index"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    subject_kind: Mapped[str] = mapped_column(String(8), index=True)
    subject_id: Mapped[int] = mapped_column(BigInteger, index=True)
    client: Mapped[str] = mapped_column(String(42))
    #: The rating as given: ``value / 10**value_decimals`` (int128, uint8 ≤ 18).
    value: Mapped[int] = mapped_column(WideInt)
    value_decimals: Mapped[int] = mapped_column(Integer)
    #: ``value / 10**value_decimals`` as a float: what SQL averages.
    score: Mapped[float] = mapped_column(Float)
    tag1: Mapped[str] = mapped_column(Text)
    tag2: Mapped[str] = mapped_column(Text)


class VaultRevenueRow(Base):
    """What an asset's vault received in the asset's token since it was published: every ERC-20 ``Transfer``
    of that token into the vault (licenses, x402 payments, channel claims, royalties from child vaults, gifts).
    A running total, kept by the indexer; equal to the vault's balance plus what it released."""

    __tablename__ = "vault_revenue"
    asset_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    vault: Mapped[str] = mapped_column(String(42), unique=True)
    token: Mapped[str] = mapped_column(String(42))
    received: Mapped[int] = mapped_column(WideInt)
