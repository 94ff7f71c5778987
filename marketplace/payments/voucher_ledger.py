"""The gateway's voucher ledger: per payment channel, the highest voucher, the credit answered calls used, the claim.

Per channel (amounts in base units of the channel's token):

- ``ceiling`` and ``signature``: the highest voucher verified so far, a ``Voucher(channelId,
  maxClaimableAmount)`` the channel's signer signed (see ``marketplace.protocol.vouchers``);
- ``debited``: the sum of the prices of the calls this gateway **answered** on the channel, raised to
  what was claimed on chain whenever that is higher (credit claimed on chain is used credit, whoever
  claimed it, so an empty ledger never serves calls twice for one voucher);
- ``claimed``: what was claimed on chain, as last seen.

The settler claims ``totalClaimed = debited`` under the highest voucher: what was served, never the
ceiling. A call is written only once it was answered (the gate reserves in memory before the model
runs and commits here after it succeeded, before the answer is sent); a failed call writes nothing.

The state of every channel lives in memory (one small row per channel, loaded when the ledger
opens) and is written through to SQLite (WAL; ``synchronous=FULL`` unless the operator chose
``NORMAL``, see :class:`VoucherLedger`) before any write method returns. Writes are group-committed:
the thread that commits runs every queued operation against the in-memory state, writes the
channels they changed in one statement (one fsync), and only then makes the new state visible.
Concurrent calls thus share fsyncs, and a refused operation leaves the others of its batch in.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from operator import attrgetter
from os import PathLike
from pathlib import Path
from typing import Any, Literal

from marketplace.errors import AgentmarketError

_AMOUNT_DIGITS = 78  # len(str(2**256 - 1)): zero-padded amounts compare as numbers in SQL
#: Rows per INSERT statement (SQLite allows 32766 bound parameters; a row binds one per column of _COLUMNS).
_ROWS_PER_STATEMENT = 256
#: The layout of the ``channels`` table this version writes (kept in ``meta``).
SCHEMA_VERSION = "2"


# ---------------------------------------------------------------------- errors


class VoucherLedgerError(AgentmarketError):
    """The voucher ledger cannot be used (in use, wrong journal mode, another chain's, an older layout, a failed
    write)."""


class InsufficientCredit(AgentmarketError):
    """The highest voucher does not cover the calls already answered plus this one."""

    def __init__(self, channel_id: int, *, highest: int, debited: int, price: int) -> None:
        super().__init__(
            f"channel {channel_id}: highest voucher {highest} does not cover {debited} already debited plus {price}"
        )
        self.channel_id, self.highest, self.debited, self.price = channel_id, highest, debited, price

    @property
    def needed(self) -> int:
        """The smallest ceiling that pays for the call."""
        return self.debited + self.price


class ChannelFinalized(AgentmarketError):
    """The settler found the channel settled, past its claim window, or not claimable by this gateway."""

    def __init__(self, channel_id: int, reason: str) -> None:
        super().__init__(f"channel {channel_id} can no longer be claimed ({reason})")
        self.channel_id, self.reason = channel_id, reason


@dataclass(frozen=True)
class Debit:
    """One answered call for :meth:`VoucherLedger.record_many`: the arguments of :meth:`VoucherLedger.record`."""

    channel_id: int
    asset_id: int
    price: int
    ceiling: int
    signature: bytes
    claimed_on_chain: int = 0
    deposit: int | None = None

    def operation(self, entry: ChannelRecord | None) -> ChannelRecord:
        """The channel's entry after this call (:func:`debit`)."""
        return debit(entry, self.channel_id, self.asset_id, self.price, self.ceiling, self.signature,
                     self.claimed_on_chain, self.deposit)  # fmt: skip


@dataclass(frozen=True)
class Outstanding:
    """Answered calls never claimed: ``amount`` in base units of the channels' tokens, on ``channels`` (ids)."""

    amount: int
    channels: list[int]


# ---------------------------------------------------------------------- one channel


@dataclass(frozen=True)
class ChannelRecord:
    """One channel as the gateway knows it (amounts in base units)."""

    channel_id: int
    asset_id: int
    #: The highest voucher verified so far (its ``maxClaimableAmount``), and its signature.
    ceiling: int
    signature: bytes
    #: Prices of the calls answered, raised to ``claimed`` when the chain says more was claimed.
    debited: int
    #: Calls answered (and committed) by this ledger.
    calls: int
    #: ``totalClaimed`` on chain, as last seen.
    claimed: int
    #: Why nothing more of the channel can be claimed (``AlreadySettled``, ``ClaimWindowOver``,
    #: ``UnknownChannel``, ``NotReceiverAuthorizer``); None while it can.
    final: str | None = None
    #: A total whose claim failed for another reason, and why (retried only once ``debited`` is higher).
    failed_total: int | None = None
    last_error: str | None = None

    @property
    def credit(self) -> int:
        """What the highest voucher still pays for beyond the answered calls."""
        return max(self.ceiling - self.debited, 0)

    @property
    def unclaimed(self) -> int:
        """What a claim of ``debited`` would pay now."""
        return self.debited - self.claimed

    @property
    def claimable(self) -> bool:
        """Not final, answered calls above what was claimed, and not a total whose claim already failed."""
        failed = self.failed_total
        return self.final is None and self.debited > self.claimed and (failed is None or self.debited > failed)


def debit(
    entry: ChannelRecord | None,
    channel_id: int,
    asset_id: int,
    price: int,
    ceiling: int,
    signature: bytes,
    claimed_on_chain: int = 0,
    deposit: int | None = None,
) -> ChannelRecord:
    """``entry`` after one answered call of ``price``, paid under the voucher (``ceiling``, ``signature``).

    The voucher is kept if it is the highest. ``claimed_on_chain`` (the channel's ``claimed`` as last
    read) raises both ``claimed`` and the credit already used. Raises :class:`InsufficientCredit`
    unless the highest voucher (and ``deposit``, when given: no claim can exceed it) covers the
    credit used plus ``price``; :class:`ChannelFinalized` once the channel can no longer be claimed.
    """
    if entry is None:
        entry = ChannelRecord(channel_id, asset_id, 0, b"", 0, 0, 0)
    elif entry.final is not None:
        raise ChannelFinalized(channel_id, entry.final)
    claimed = max(entry.claimed, claimed_on_chain)
    used = max(entry.debited, claimed)
    highest, best_signature = entry.ceiling, entry.signature
    if ceiling > highest:
        highest, best_signature = ceiling, signature
    limit = highest if deposit is None else min(highest, deposit)
    if limit < used + price:
        raise InsufficientCredit(channel_id, highest=limit, debited=used, price=price)
    return replace(entry, ceiling=highest, signature=best_signature, debited=used + price, calls=entry.calls + 1,
                   claimed=claimed)  # fmt: skip


def note_claimed(
    entry: ChannelRecord | None, channel_id: int, asset_id: int | None, claimed: int
) -> ChannelRecord | None:
    """``entry`` once the chain says ``claimed`` was claimed: claimed (and so used) credit never goes down.

    None (nothing to write) when the ledger knows nothing of a channel nothing was claimed on, or
    when nothing changes.
    """
    if entry is None:
        if claimed <= 0 or asset_id is None:
            return None
        entry = ChannelRecord(channel_id, asset_id, 0, b"", 0, 0, 0)
    updated = replace(entry, claimed=max(entry.claimed, claimed), debited=max(entry.debited, claimed))
    if updated.claimed != entry.claimed:
        updated = replace(updated, failed_total=None, last_error=None)
    return None if updated == entry else updated


# ---------------------------------------------------------------------- storage

_COLUMNS = (
    "channel_id", "asset_id", "ceiling", "signature", "debited", "calls", "claimed", "final",
    "failed_total", "last_error", "updated_at",
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
    ceiling TEXT NOT NULL,
    signature BLOB NOT NULL,
    debited TEXT NOT NULL,
    calls INTEGER NOT NULL,
    claimed TEXT NOT NULL,
    final TEXT,
    failed_total TEXT,
    last_error TEXT,
    updated_at REAL NOT NULL,
    CHECK (claimed <= debited AND (debited <= ceiling OR debited = claimed))
);
"""


def _enc(amount: int) -> str:
    return format(amount, f"0{_AMOUNT_DIGITS}d")


def _row(entry: ChannelRecord, now: float) -> tuple[Any, ...]:
    failed = None if entry.failed_total is None else _enc(entry.failed_total)
    return (entry.channel_id, entry.asset_id, _enc(entry.ceiling), entry.signature, _enc(entry.debited),
            entry.calls, _enc(entry.claimed), entry.final, failed, entry.last_error, now)  # fmt: skip


def _entry(row: tuple[Any, ...]) -> ChannelRecord:
    channel_id, asset_id, ceiling, signature, debited, calls, claimed, final, failed, error = row[:10]
    return ChannelRecord(
        channel_id=channel_id,
        asset_id=asset_id,
        ceiling=int(ceiling),
        signature=bytes(signature),
        debited=int(debited),
        calls=calls,
        claimed=int(claimed),
        final=final,
        failed_total=None if failed is None else int(failed),
        last_error=error,
    )


@functools.lru_cache(maxsize=64)
def _upsert(rows: int) -> str:
    values = ", ".join(["(" + ", ".join("?" * len(_COLUMNS)) + ")"] * rows)
    updates = ", ".join(f"{c} = excluded.{c}" for c in _COLUMNS[1:])
    columns = ", ".join(_COLUMNS)
    return f"INSERT INTO channels ({columns}) VALUES {values} ON CONFLICT (channel_id) DO UPDATE SET {updates}"


def _write(db: sqlite3.Connection, entries: list[ChannelRecord]) -> None:
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
        raise VoucherLedgerError(
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
Operation = Callable[[ChannelRecord | None], ChannelRecord | None]


@dataclass
class _Ticket:
    """One operation waiting for the group commit that makes it durable."""

    channel_id: int
    op: Operation
    done: bool = False
    value: ChannelRecord | None = None
    error: BaseException | None = field(default=None, repr=False)


class VoucherLedger:
    """Per channel: the highest voucher, the answered calls' credit, and what was claimed; in memory, written through.

    WAL journal. With ``synchronous="full"`` (the default) every commit is fsync'd: a write that
    returned survives a crash of the process or of the machine. With ``"normal"`` commits reach the
    WAL file but are fsync'd only at checkpoints: a write that returned survives the process being
    killed (``kill -9``), and a power loss or kernel crash may undo the last commits (calls answered
    then are lost to the receiver: nothing claims them).

    Every write method queues its operation and returns once a commit holding it is made (group
    commit, see the module's docstring). Reads see committed state only. Safe to share between
    threads; one process at a time may open a ledger file (:class:`VoucherLedgerError`).
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
                raise VoucherLedgerError(
                    f"{self.path}: SQLite refused WAL mode (got {mode!r}); keep the ledger on a local disk"
                )
            self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
            self._check_layout()
            self._db.executescript(_SCHEMA)
            self._db.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', ?)", (SCHEMA_VERSION,))
            self._entries = self._load()
        except BaseException:
            os.close(self._lock_fd)
            raise
        self._commit_lock = threading.Lock()  # held by the thread committing a batch
        self._queue_lock = threading.Lock()
        self._queue: list[_Ticket] = []
        self._closed = False
        self.commits = 0  # group commits made (each one fsync), for measurements

    def _check_layout(self) -> None:
        """Refuse a ledger written by an older agentmarket: its vouchers are cumulative amounts for the old
        ``PaymentChannels`` (``claim(channelId, cumulativeAmount, signature)``), which this version cannot claim."""
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(channels)")}
        if columns and "ceiling" not in columns:
            self._db.close()
            raise VoucherLedgerError(
                f"{self.path} was written by an older agentmarket (cumulative vouchers for the previous "
                "PaymentChannels contract): claim what it holds with that version, then move the file away; "
                "this version starts a new ledger in its place"
            )

    def _load(self) -> dict[int, ChannelRecord]:
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

    def _commit(self, channel_id: int, op: Operation) -> ChannelRecord | None:
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
                    raise VoucherLedgerError(f"{self.path}: the ledger is closed")
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._run(batch)
        if ticket.error is not None:
            raise ticket.error
        return ticket.value

    def _commit_many(self, operations: list[tuple[int, Operation]]) -> list[_Ticket]:
        """:meth:`_commit` for several operations at once: queued together, so one group commit (one write,
        one fsync) holds them all, in order. Returns their tickets (each one's ``value`` or ``error``)."""
        tickets = [_Ticket(channel_id, op) for channel_id, op in operations]
        with self._queue_lock:
            self._queue.extend(tickets)
        with self._commit_lock:
            if not all(ticket.done for ticket in tickets):
                if self._closed:
                    raise VoucherLedgerError(f"{self.path}: the ledger is closed")
                with self._queue_lock:
                    batch, self._queue = self._queue, []
                self._run(batch)
        return tickets

    def _run(self, batch: list[_Ticket]) -> None:
        changed: dict[int, ChannelRecord] = {}
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
                ticket.error = VoucherLedgerError(
                    f"{self.path}: the write was not committed ({type(exc).__name__}: {exc})"
                )
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
        chain would lend one channel's vouchers to another. Raises :class:`VoucherLedgerError` for a ledger
        bound to another identity (``agentmarket serve`` archives such a ledger at start:
        ``marketplace.api.lifecycle``).
        """
        with self._commit_lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'channels'").fetchone()
            if row is None:
                self._db.execute("INSERT INTO meta (key, value) VALUES ('channels', ?)", (identity,))
            elif row[0] != identity:
                raise VoucherLedgerError(
                    f"{self.path} holds the vouchers of {row[0]}, not of {identity}: restart `agentmarket serve`, "
                    "which archives it"
                )

    def bound_to(self) -> str | None:
        """The identity the ledger is bound to (see :meth:`bind`), or None before its first binding."""
        with self._commit_lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'channels'").fetchone()
        return None if row is None else str(row[0])

    def outstanding(self) -> Outstanding:
        """What answered calls hold that was never claimed, on channels that could still be claimed."""
        owed = [entry for entry in self.entries() if entry.final is None and entry.debited > entry.claimed]
        return Outstanding(sum(entry.unclaimed for entry in owed), [entry.channel_id for entry in owed])

    def archive_to(self, directory: Path) -> list[Path]:
        """Close the ledger and move its files (database, WAL, shared memory) into ``directory``; returns them.

        The ledger's lock is held until the files are moved, so no other process opens the ledger
        meanwhile; ``directory`` is created. Nothing is deleted: the moved file is a complete ledger
        (open it with :class:`VoucherLedger` or ``sqlite3 -readonly``).
        """
        directory.mkdir(parents=True, exist_ok=True)
        moved: list[Path] = []
        with self._commit_lock:
            if self._closed:
                raise VoucherLedgerError(f"{self.path}: the ledger is closed")
            self._closed = True
            try:
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything into the main file
                self._db.close()
                for suffix in ("", "-wal", "-shm"):
                    source = self.path.with_name(self.path.name + suffix)
                    if source.exists():
                        moved.append(source.replace(directory / source.name))
            finally:
                os.close(self._lock_fd)
        return moved

    def record(
        self,
        channel_id: int,
        *,
        asset_id: int,
        price: int,
        ceiling: int,
        signature: bytes,
        claimed_on_chain: int = 0,
        deposit: int | None = None,
    ) -> ChannelRecord:
        """Debit ``price`` for one **answered** call paid under the voucher (``ceiling``, ``signature``), keep
        the voucher if it is the highest; on disk before it returns (answer the call only then).

        ``claimed_on_chain`` is the channel's on-chain ``claimed`` as the caller last read it (used
        credit), ``deposit`` its deposit (a claim cannot exceed it). Raises :class:`InsufficientCredit`
        when the highest voucher or the deposit does not cover the credit used plus ``price``,
        :class:`ChannelFinalized` once the settler found the channel unclaimable, :class:`VoucherLedgerError`
        when the write failed (then nothing changed).
        """
        if price < 0 or ceiling < 0:
            raise ValueError("price and ceiling must not be negative")
        entry = self._commit(
            channel_id, lambda e: debit(e, channel_id, asset_id, price, ceiling, signature, claimed_on_chain, deposit)
        )
        assert entry is not None
        return entry

    def record_many(self, calls: Sequence[Debit]) -> list[ChannelRecord | InsufficientCredit | ChannelFinalized]:
        """:meth:`record` for many answered calls in one group commit (one write, one fsync), in order: the
        entries end as ``record`` called once per call, in the same order, would leave them.

        Returns, per call, its channel's entry after it or the refusal :meth:`record` would have raised
        (:class:`InsufficientCredit`, :class:`ChannelFinalized`: that call is not debited, the others stand).
        Raises ``ValueError`` for a negative price or ceiling (nothing is written) and
        :class:`VoucherLedgerError` when the write failed (then none was recorded).
        """
        if any(call.price < 0 or call.ceiling < 0 for call in calls):
            raise ValueError("price and ceiling must not be negative")
        tickets = self._commit_many([(call.channel_id, call.operation) for call in calls])
        results: list[ChannelRecord | InsufficientCredit | ChannelFinalized] = []
        for ticket in tickets:
            if isinstance(ticket.error, InsufficientCredit | ChannelFinalized):
                results.append(ticket.error)
            elif ticket.error is not None:
                raise ticket.error
            else:
                assert ticket.value is not None
                results.append(ticket.value)
        return results

    def mark_claimed_many(self, claims: Sequence[tuple[int, int]]) -> None:
        """:meth:`mark_claimed` for many (channel id, claimed) pairs in one group commit."""
        self._raise_first(self._commit_many([(channel_id, functools.partial(note_claimed, channel_id=channel_id,
                                                                            asset_id=None, claimed=claimed))
                                             for channel_id, claimed in claims]))  # fmt: skip

    @staticmethod
    def _raise_first(tickets: list[_Ticket]) -> None:
        for ticket in tickets:
            if ticket.error is not None:
                raise ticket.error

    def mark_claimed(self, channel_id: int, claimed: int, *, asset_id: int | None = None) -> None:
        """Note that the chain holds ``claimed`` as claimed; it is used credit too (never lowers anything).

        With ``asset_id`` a channel the ledger does not know yet gets an entry (so that a fresh ledger
        remembers what another one claimed).
        """
        self._commit(channel_id, lambda entry: note_claimed(entry, channel_id, asset_id, claimed))

    def mark_final(self, channel_id: int, reason: str) -> None:
        """Note that nothing more of the channel can be claimed (and refuse further calls on it)."""
        self._update(channel_id, lambda e: replace(e, final=reason))

    def mark_failed(self, channel_id: int, total: int, error: str) -> None:
        """Note that claiming ``total`` failed; the settler retries only once more calls were answered."""
        self._update(channel_id, lambda e: replace(e, failed_total=total, last_error=error))

    def _update(self, channel_id: int, change: Callable[[ChannelRecord], ChannelRecord]) -> None:
        """Change a known channel's entry (a channel no call was paid on has none: nothing to note)."""
        self._commit(channel_id, lambda entry: None if entry is None else change(entry))

    # ------------------------------------------------------------------ reads (committed state)

    def entry(self, channel_id: int) -> ChannelRecord | None:
        """The channel's entry, or None if no call was paid on it."""
        return self._entries.get(channel_id)

    def entries(self) -> list[ChannelRecord]:
        """Every channel, by id."""
        return sorted(self._entries.values(), key=attrgetter("channel_id"))

    def claimable(self) -> list[ChannelRecord]:
        """The channels a claim should be sent for now (:attr:`ChannelRecord.claimable`), by id: answered calls
        above what was claimed, not final, and more answered than a total whose claim already failed."""
        return [entry for entry in self.entries() if entry.claimable]
