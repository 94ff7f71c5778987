"""The gateway's voucher ledger: per payment channel, the highest voucher, the credit used, what was claimed.

The state of every channel lives in memory (one small row per channel, loaded when the ledger
opens) and is written through to SQLite (WAL; ``synchronous=FULL`` unless the operator chose
``NORMAL``, see :class:`VoucherLedger`) before any write method returns, so a call is answered
only once its debit and voucher are committed. Writes are group-committed: the thread that commits
runs every queued operation against the in-memory state, writes the channels they changed in one
statement (one fsync), and only then makes the new state visible. Concurrent calls thus share
fsyncs, and a refused operation leaves the others of its batch in.

One process writes a ledger file at a time (an exclusive lock on ``<file>.lock``, released when the
ledger is closed or the process dies): two gateways on one data directory would each trust their
own copy of the credit. Other processes may still read the file (e.g. ``sqlite3 -readonly``).
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from operator import attrgetter
from os import PathLike
from pathlib import Path
from typing import Any, Literal

from marketplace.errors import AgentmarketError

_AMOUNT_DIGITS = 78  # len(str(2**256 - 1)): zero-padded amounts compare as numbers in SQL
#: Rows per INSERT statement (SQLite allows 32766 bound parameters; a row has 11).
_ROWS_PER_STATEMENT = 256


# ---------------------------------------------------------------------- errors


class LedgerError(AgentmarketError):
    """The voucher ledger cannot be used (in use, wrong journal mode, another chain's, or a failed write)."""


class InsufficientCredit(AgentmarketError):
    """The highest voucher does not cover the calls served so far plus this one."""

    def __init__(self, channel_id: int, *, highest: int, debited: int, price: int) -> None:
        super().__init__(
            f"channel {channel_id}: highest voucher {highest} does not cover {debited} already debited plus {price}"
        )
        self.channel_id, self.highest, self.debited, self.price = channel_id, highest, debited, price

    @property
    def needed(self) -> int:
        """The smallest cumulative amount that pays for the call."""
        return self.debited + self.price


class ChannelFinalized(AgentmarketError):
    """The settler found the channel closed, expired or gone: no voucher of it can be claimed any more."""

    def __init__(self, channel_id: int, reason: str) -> None:
        super().__init__(f"channel {channel_id} can no longer be claimed ({reason})")
        self.channel_id, self.reason = channel_id, reason


# ---------------------------------------------------------------------- one channel


@dataclass(frozen=True)
class LedgerEntry:
    """One channel as the gateway knows it."""

    channel_id: int
    asset_id: int
    #: The highest voucher verified so far, and its signature.
    cumulative: int
    signature: bytes
    #: Credit used by the calls served so far (never above ``cumulative``).
    debited: int
    calls: int
    #: Cumulative amount claimed on chain.
    claimed: int
    #: Why no voucher of the channel can be claimed any more (``ChannelClosed``, ``ChannelExpired``,
    #: ``UnknownChannel``); None while it is live.
    final: str | None = None
    #: A voucher whose claim failed for another reason, and why (retried only for a higher voucher).
    failed_cumulative: int | None = None
    last_error: str | None = None
    #: The highest voucher received that pays for no more than the calls served (its amount is at most
    #: ``debited``), and its signature: what the settler claims. Credit a payer sent ahead, or got back
    #: when a call failed, stays unclaimed until a call uses it.
    served: int = 0
    served_signature: bytes = b""
    #: ``served`` before it last moved up, kept in memory only: a refund (of a call still in flight in
    #: this process) falls back to it.
    previous_served: int = field(default=0, compare=False)
    previous_served_signature: bytes = field(default=b"", compare=False, repr=False)

    @property
    def credit(self) -> int:
        """What the highest voucher still pays for."""
        return self.cumulative - self.debited

    @property
    def unclaimed(self) -> int:
        """What a claim of the served voucher would pay now."""
        return self.served - self.claimed

    @property
    def claimable(self) -> bool:
        """Live, above what was claimed, and not a voucher whose claim already failed."""
        failed = self.failed_cumulative
        return self.final is None and self.served > self.claimed and (failed is None or self.served > failed)


def debit(
    entry: LedgerEntry | None, channel_id: int, asset_id: int, cumulative: int, signature: bytes, price: int
) -> LedgerEntry:
    """``entry`` after one call of ``price`` paid by a verified voucher (kept if it is the highest).

    The served voucher moves up to the highest of this voucher, the highest before and the highest
    after whose amount the calls served so far (this one included) have used up.

    Raises :class:`InsufficientCredit` unless the highest voucher, this one included, covers the
    credit already used plus ``price``; :class:`ChannelFinalized` once the channel can no longer be claimed.
    """
    if entry is None:
        entry = LedgerEntry(channel_id, asset_id, 0, b"", 0, 0, 0)
    elif entry.final is not None:
        raise ChannelFinalized(channel_id, entry.final)
    highest, best_signature = entry.cumulative, entry.signature
    if cumulative > highest:
        highest, best_signature = cumulative, signature
    if highest < entry.debited + price:
        raise InsufficientCredit(channel_id, highest=highest, debited=entry.debited, price=price)
    debited = entry.debited + price
    served, served_signature = entry.served, entry.served_signature
    candidates = ((entry.cumulative, entry.signature), (cumulative, signature), (highest, best_signature))
    for amount, amount_signature in candidates:
        if served < amount <= debited:
            served, served_signature = amount, amount_signature
    previous = (entry.served, entry.served_signature) if served != entry.served else None
    updated = replace(entry, cumulative=highest, signature=best_signature, debited=debited, calls=entry.calls + 1,
                      served=served, served_signature=served_signature)  # fmt: skip
    if previous is not None:
        updated = replace(updated, previous_served=previous[0], previous_served_signature=previous[1])
    return updated


def refund(entry: LedgerEntry | None, channel_id: int, price: int) -> LedgerEntry:
    """``entry`` after giving back the credit one unanswered call used: ``debited`` drops by ``price``.

    The highest voucher stays (it pays for the next calls); the served voucher falls back to the one
    before it when it now pays for more than was served, so a payer who never calls again is not
    charged for the failed call. Raises ValueError when the channel has no such debit.
    """
    if entry is None or entry.debited < price or entry.calls < 1:
        raise ValueError(f"channel {channel_id} has no debit of {price} to give back")
    debited = entry.debited - price
    updated = replace(entry, debited=debited, calls=entry.calls - 1)
    if entry.served > debited:
        served, served_signature = entry.previous_served, entry.previous_served_signature
        if not entry.claimed <= served <= debited:  # no voucher held pays for exactly the calls served
            served, served_signature = entry.claimed, b""
        updated = replace(updated, served=served, served_signature=served_signature)
    return updated


# ---------------------------------------------------------------------- storage

_COLUMNS = (
    "channel_id", "asset_id", "cumulative", "signature", "debited", "calls", "claimed", "final",
    "failed_cumulative", "last_error", "served", "served_signature", "updated_at",
)  # fmt: skip
_SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
-- Amounts are zero-padded {_AMOUNT_DIGITS}-digit decimal strings: they hold any uint256 and compare as numbers.
CREATE TABLE IF NOT EXISTS channels (
    channel_id INTEGER PRIMARY KEY,
    asset_id INTEGER NOT NULL,
    cumulative TEXT NOT NULL,
    signature BLOB NOT NULL,
    debited TEXT NOT NULL,
    calls INTEGER NOT NULL,
    claimed TEXT NOT NULL,
    final TEXT,
    failed_cumulative TEXT,
    last_error TEXT,
    served TEXT NOT NULL,
    served_signature BLOB NOT NULL,
    updated_at REAL NOT NULL,
    CHECK (debited <= cumulative)
);
"""
#: Ledgers written before the served voucher existed claimed the highest voucher: so they start out.
_MIGRATIONS = (
    f"ALTER TABLE channels ADD COLUMN served TEXT NOT NULL DEFAULT '{0:0{_AMOUNT_DIGITS}d}'",
    "ALTER TABLE channels ADD COLUMN served_signature BLOB NOT NULL DEFAULT x''",
    "UPDATE channels SET served = cumulative, served_signature = signature",
)


def _enc(amount: int) -> str:
    return format(amount, f"0{_AMOUNT_DIGITS}d")


def _row(entry: LedgerEntry, now: float) -> tuple[Any, ...]:
    failed = None if entry.failed_cumulative is None else _enc(entry.failed_cumulative)
    return (entry.channel_id, entry.asset_id, _enc(entry.cumulative), entry.signature, _enc(entry.debited),
            entry.calls, _enc(entry.claimed), entry.final, failed, entry.last_error, _enc(entry.served),
            entry.served_signature, now)  # fmt: skip


def _entry(row: tuple[Any, ...]) -> LedgerEntry:
    channel_id, asset_id, cumulative, signature, debited, calls, claimed, final, failed, error = row[:10]
    served, served_signature = row[10:12]
    return LedgerEntry(
        channel_id=channel_id,
        asset_id=asset_id,
        cumulative=int(cumulative),
        signature=bytes(signature),
        debited=int(debited),
        calls=calls,
        claimed=int(claimed),
        final=final,
        failed_cumulative=None if failed is None else int(failed),
        last_error=error,
        served=int(served),
        served_signature=bytes(served_signature),
    )


@functools.lru_cache(maxsize=64)
def _upsert(rows: int) -> str:
    values = ", ".join(["(" + ", ".join("?" * len(_COLUMNS)) + ")"] * rows)
    updates = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[1:])
    columns = ", ".join(_COLUMNS)
    return f"INSERT INTO channels ({columns}) VALUES {values} ON CONFLICT (channel_id) DO UPDATE SET {updates}"


def _write(db: sqlite3.Connection, entries: list[LedgerEntry]) -> None:
    """Store ``entries`` in one transaction: a single statement (SQLite commits it on its own) when they fit."""
    now = time.time()
    chunks = [entries[i : i + _ROWS_PER_STATEMENT] for i in range(0, len(entries), _ROWS_PER_STATEMENT)]
    several = len(chunks) > 1
    try:
        if several:
            db.execute("BEGIN IMMEDIATE")
        for chunk in chunks:
            db.execute(_upsert(len(chunk)), [value for entry in chunk for value in _row(entry, now)])
        if several:
            db.execute("COMMIT")
    finally:
        if db.in_transaction:
            db.execute("ROLLBACK")


def _lock_exclusively(path: Path) -> int:
    """Hold ``path``'s lock file for this process (released by :func:`os.close` or by the process's death)."""
    lock_path = path.with_name(path.name + ".lock")
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.read(fd, 32).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise LedgerError(
            f"{path} is in use by process {holder}: one gateway per data directory (stop the other, or give "
            "this one its own --data-dir)"
        ) from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


# ---------------------------------------------------------------------- the ledger

#: SQLite ``synchronous`` levels a ledger may run at (see :class:`VoucherLedger`).
Synchronous = Literal["full", "normal"]
SYNCHRONOUS: tuple[Synchronous, ...] = ("full", "normal")

#: An operation on one channel: its entry (None if unknown) -> the new entry, or None to write nothing.
Operation = Callable[[LedgerEntry | None], LedgerEntry | None]


@dataclass
class _Ticket:
    """One operation waiting for the group commit that makes it durable."""

    channel_id: int
    op: Operation
    done: bool = False
    value: LedgerEntry | None = None
    error: BaseException | None = field(default=None, repr=False)


class VoucherLedger:
    """Per channel: the highest voucher, the credit used, and what was claimed; in memory, written through.

    WAL journal. With ``synchronous="full"`` (the default) every commit is fsync'd: a write that
    returned survives a crash of the process or of the machine. With ``"normal"`` commits reach the
    WAL file but are fsync'd only at checkpoints: a write that returned survives the process being
    killed (``kill -9``), and a power loss or kernel crash may undo the last commits (the payer's next,
    cumulative voucher covers them again; one never sent again is lost).

    Every write method queues its operation and returns once a commit holding it is made (group
    commit, see the module's docstring). Reads see committed state only. Safe to share between
    threads; one process at a time may open a ledger file (:class:`LedgerError`).
    """

    def __init__(
        self, path: str | PathLike[str], *, synchronous: Synchronous = "full", busy_timeout: float = 10.0
    ) -> None:
        if synchronous not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {', '.join(SYNCHRONOUS)}, not {synchronous!r}")
        self.path = Path(path)
        self.synchronous = synchronous
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock_exclusively(self.path)
        try:
            self._db = sqlite3.connect(self.path, timeout=busy_timeout, isolation_level=None, check_same_thread=False)
            (mode,) = self._db.execute("PRAGMA journal_mode=WAL").fetchone()
            if str(mode).lower() != "wal":
                self._db.close()
                raise LedgerError(
                    f"{self.path}: SQLite refused WAL mode (got {mode!r}); keep the ledger on a local disk"
                )
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._db.executescript(_SCHEMA)
            self._migrate()
            self._entries = self._load()
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._commit_lock = threading.Lock()  # held by the thread committing a batch
        self._queue_lock = threading.Lock()
        self._queue: list[_Ticket] = []
        self._closed = False
        self.commits = 0  # group commits made (each one fsync), for measurements

    def _migrate(self) -> None:
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(channels)")}
        if "served" not in columns:
            self._db.execute("BEGIN IMMEDIATE")
            for statement in _MIGRATIONS:
                self._db.execute(statement)
            self._db.execute("COMMIT")

    def _load(self) -> dict[int, LedgerEntry]:
        rows = self._db.execute(f"SELECT {', '.join(_COLUMNS)} FROM channels").fetchall()
        return {row[0]: _entry(row) for row in rows}

    def close(self) -> None:
        """Close the database and release the file (committed writes are already on disk)."""
        with self._commit_lock:
            if self._closed:
                return
            self._closed = True
            self._db.close()
            os.close(self._lock_fd)

    def __enter__(self) -> VoucherLedger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ group commit

    def _commit(self, channel_id: int, op: Operation) -> LedgerEntry | None:
        """Apply ``op`` to the channel's entry; return the new entry (or raise ``op``'s error) once it is on disk.

        The caller queues ``op`` and takes the commit lock. Whoever holds the lock runs every queued
        operation, in order, against the state as it will be once the batch is written, writes the
        entries they changed, and then publishes them; callers whose operation was in that batch
        find it done when they get the lock, the others form the next batch meanwhile.
        """
        ticket = _Ticket(channel_id, op)
        with self._queue_lock:
            self._queue.append(ticket)
        with self._commit_lock:
            if not ticket.done:
                if self._closed:
                    raise LedgerError(f"{self.path}: the ledger is closed")
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._run(batch)
        if ticket.error is not None:
            raise ticket.error
        return ticket.value

    def _run(self, batch: list[_Ticket]) -> None:
        changed: dict[int, LedgerEntry] = {}
        for ticket in batch:
            current = changed.get(ticket.channel_id, self._entries.get(ticket.channel_id))
            try:
                ticket.value = ticket.op(current)
            except Exception as exc:  # the operation's own refusal: the others of the batch stand
                ticket.error = exc
            else:
                if ticket.value is not None:
                    changed[ticket.channel_id] = ticket.value
        try:
            if changed:
                _write(self._db, list(changed.values()))
                self.commits += 1
        except BaseException as exc:
            for ticket in batch:
                ticket.value = None
                ticket.error = LedgerError(f"{self.path}: the write was not committed ({type(exc).__name__}: {exc})")
                ticket.error.__cause__ = exc
            with contextlib.suppress(sqlite3.Error):  # whatever reached the disk is the truth from now on
                self._entries = self._load()
            if not isinstance(exc, Exception):
                raise
        else:
            self._entries.update(changed)  # one dict call: readers see the whole batch or none of it
        finally:
            for ticket in batch:
                ticket.done = True

    # ------------------------------------------------------------------ writes

    def bind(self, identity: str) -> None:
        """Tie the ledger to one channels contract (see ``channels.chain_identity``); refuse another one.

        Channel ids restart at 1 on every chain and deployment, so a ledger kept from an earlier
        chain would lend one channel's vouchers to another.
        """
        with self._commit_lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'channels'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta (key, value) VALUES ('channels', ?)", (identity,))
            elif row[0] != identity:
                raise LedgerError(
                    f"{self.path} holds the vouchers of channels contract {row[0]}, not of {identity}: "
                    "give this chain its own data directory (or move the file away once its vouchers are claimed)"
                )

    def record(self, channel_id: int, *, asset_id: int, cumulative: int, signature: bytes, price: int) -> LedgerEntry:
        """Debit ``price`` for one call paid by a verified voucher, and keep the voucher if it is the highest.

        Succeeds when the highest voucher (this one included) covers the credit already used plus
        ``price``; raises :class:`InsufficientCredit` otherwise, or :class:`ChannelFinalized` when
        the settler found the channel closed or expired. On disk before it returns.
        """
        if price < 0 or cumulative < 0:
            raise ValueError("price and cumulative amount must not be negative")
        entry = self._commit(channel_id, lambda e: debit(e, channel_id, asset_id, cumulative, signature, price))
        assert entry is not None
        return entry

    def refund(self, channel_id: int, price: int) -> None:
        """Give back the credit one call used (its handler failed): see :func:`refund`."""

        self._commit(channel_id, lambda entry: refund(entry, channel_id, price))

    def mark_claimed(self, channel_id: int, cumulative: int) -> None:
        """Note that ``cumulative`` is claimed on chain (never lowers what was noted before)."""
        self._update(channel_id, lambda e: replace(e, claimed=max(e.claimed, cumulative), failed_cumulative=None,
                                                   last_error=None))  # fmt: skip

    def mark_final(self, channel_id: int, reason: str) -> None:
        """Note that no voucher of the channel can be claimed any more (and refuse further calls on it)."""
        self._update(channel_id, lambda e: replace(e, final=reason))

    def mark_failed(self, channel_id: int, cumulative: int, error: str) -> None:
        """Note that claiming ``cumulative`` failed; the settler retries only once a higher voucher arrives."""
        self._update(channel_id, lambda e: replace(e, failed_cumulative=cumulative, last_error=error))

    def _update(self, channel_id: int, change: Callable[[LedgerEntry], LedgerEntry]) -> None:
        """Change a known channel's entry (a channel no call was paid on has none: nothing to note)."""
        self._commit(channel_id, lambda entry: None if entry is None else change(entry))

    # ------------------------------------------------------------------ reads (committed state)

    def entry(self, channel_id: int) -> LedgerEntry | None:
        """The channel's entry, or None if no call was paid on it."""
        return self._entries.get(channel_id)

    def entries(self) -> list[LedgerEntry]:
        """Every channel, by id."""
        return sorted(self._entries.values(), key=attrgetter("channel_id"))

    def unclaimed(self) -> list[LedgerEntry]:
        """Live channels whose highest voucher is above what was claimed (and did not already fail), by id."""
        return [entry for entry in self.entries() if entry.claimable]
