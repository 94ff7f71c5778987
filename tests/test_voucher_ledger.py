"""The voucher ledger on its own: one owner per file, state that survives reopening, failed writes that publish nothing;
and the GIL-holding signature recovery the gate uses, against coincurve."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from coincurve import PrivateKey

from marketplace.payments import ledger as ledger_module
from marketplace.payments import secp256k1
from marketplace.payments.ledger import InsufficientCredit, LedgerError, VoucherLedger

REPO_ROOT = Path(__file__).resolve().parents[1]
SIG = b"\x01" * 65


def test_one_process_owns_a_ledger_file_at_a_time(tmp_path):
    path = tmp_path / "vouchers.sqlite3"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from marketplace.payments.ledger import VoucherLedger; "
         "VoucherLedger(sys.argv[1]); print('open', flush=True); sys.stdin.read()", str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(LedgerError, match=rf"in use by process {holder.pid}: one gateway per data directory"):
            VoucherLedger(path)
    finally:
        holder.kill()  # a dead holder releases the file
        holder.wait(timeout=10)
        holder.stdin.close()
        holder.stdout.close()
    with VoucherLedger(path) as ledger:
        ledger.record(1, asset_id=1, cumulative=5, signature=SIG, price=5)
    with VoucherLedger(path) as reopened:  # closed: free again, and the state was on disk
        entry = reopened.entry(1)
        assert (entry.cumulative, entry.debited, entry.calls, entry.signature) == (5, 5, 1, SIG)


def test_the_operator_picks_how_hard_commits_sync(tmp_path):
    for synchronous, pragma in (("full", 2), ("normal", 1)):
        with VoucherLedger(tmp_path / f"{synchronous}.sqlite3", synchronous=synchronous) as ledger:
            assert ledger._db.execute("PRAGMA synchronous").fetchone() == (pragma,)
    with pytest.raises(ValueError, match="synchronous must be one of full, normal"):
        VoucherLedger(tmp_path / "off.sqlite3", synchronous="off")


def test_state_survives_reopening_with_every_field(tmp_path):
    path = tmp_path / "vouchers.sqlite3"
    big = 2**256 - 1
    with VoucherLedger(path) as ledger:
        ledger.record(3, asset_id=9, cumulative=big, signature=SIG, price=7)
        ledger.record(2, asset_id=9, cumulative=10, signature=SIG, price=4)
        ledger.mark_claimed(2, 10)
        ledger.mark_failed(3, big, "reverted")
        ledger.mark_final(2, "ChannelClosed")
        ledger.mark_claimed(99, 1)  # an unknown channel: nothing to note, nothing written
        before = ledger.entries()
    with VoucherLedger(path) as ledger:
        assert ledger.entries() == before
        assert [e.channel_id for e in before] == [2, 3]
        assert (before[1].cumulative, before[1].failed_cumulative, before[1].last_error) == (big, big, "reverted")
        assert before[0].final == "ChannelClosed" and before[0].claimed == 10
        assert ledger.unclaimed() == []  # one is final, the other's highest voucher already failed


def test_a_failed_write_publishes_nothing_and_the_ledger_goes_on(tmp_path, monkeypatch):
    with VoucherLedger(tmp_path / "vouchers.sqlite3") as ledger:
        ledger.record(1, asset_id=1, cumulative=10, signature=SIG, price=4)
        real_write = ledger_module._write

        def disk_full(db, entries):
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(ledger_module, "_write", disk_full)
        with pytest.raises(LedgerError, match=r"not committed .*disk is full"):
            ledger.record(1, asset_id=1, cumulative=20, signature=SIG, price=4)
        entry = ledger.entry(1)
        assert (entry.cumulative, entry.debited, entry.calls) == (10, 4, 1)  # as on disk

        monkeypatch.setattr(ledger_module, "_write", real_write)
        ledger.record(1, asset_id=1, cumulative=10, signature=SIG, price=4)  # the remaining credit still pays
        with pytest.raises(InsufficientCredit):
            ledger.record(1, asset_id=1, cumulative=10, signature=SIG, price=4)
        assert (ledger.entry(1).debited, ledger.entry(1).calls) == (8, 2)


def test_a_batch_larger_than_one_statement_is_one_transaction(tmp_path, monkeypatch):
    monkeypatch.setattr(ledger_module, "_ROWS_PER_STATEMENT", 3)
    path = tmp_path / "vouchers.sqlite3"
    with VoucherLedger(path) as ledger:
        entries = [ledger_module.LedgerEntry(c, 1, c * 10, SIG, c, 1, 0) for c in range(1, 9)]
        ledger_module._write(ledger._db, entries)  # three statements
    with VoucherLedger(path) as ledger:
        assert [(e.channel_id, e.cumulative, e.debited) for e in ledger.entries()] == [
            (c, c * 10, c) for c in range(1, 9)
        ]


def test_the_settler_is_given_the_voucher_that_pays_for_the_calls_served(tmp_path):
    """Served voucher: the highest held whose amount the served calls used up. Credit sent ahead, or
    handed back by a failed call, is not claimed until a call uses it."""
    with VoucherLedger(tmp_path / "vouchers.sqlite3") as ledger:
        ahead = b"\x05" * 65
        ledger.record(1, asset_id=1, cumulative=50, signature=ahead, price=10)  # five calls paid ahead
        assert (ledger.entry(1).served, ledger.unclaimed()) == (0, [])
        for _ in range(4):
            ledger.record(1, asset_id=1, cumulative=50, signature=ahead, price=10)
        assert (ledger.entry(1).served, ledger.entry(1).served_signature) == (50, ahead)

        # Vouchers that do not fall on the debits: the one before the highest is claimed once used up.
        ledger.record(2, asset_id=1, cumulative=100, signature=b"\x0a" * 65, price=30)
        for _ in range(2):
            ledger.record(2, asset_id=1, cumulative=100, signature=b"\x0a" * 65, price=30)  # debited 60, 90
        assert ledger.entry(2).served == 0
        ledger.record(2, asset_id=1, cumulative=200, signature=b"\x14" * 65, price=30)  # debited 120
        assert (ledger.entry(2).cumulative, ledger.entry(2).served) == (200, 100)

        # A failed call hands its credit back, and the claim falls back to the voucher before it.
        first, second = b"\x01" * 65, b"\x02" * 65
        ledger.record(3, asset_id=1, cumulative=10, signature=first, price=10)
        ledger.record(3, asset_id=1, cumulative=20, signature=second, price=10)
        ledger.refund(3, 10)
        entry = ledger.entry(3)
        assert (entry.cumulative, entry.debited, entry.served, entry.served_signature) == (20, 10, 10, first)
        assert [(e.channel_id, e.unclaimed) for e in ledger.unclaimed()] == [(1, 50), (2, 100), (3, 10)]
        ledger.record(3, asset_id=1, cumulative=20, signature=second, price=10)  # the payer comes back
        assert (ledger.entry(3).served, ledger.entry(3).served_signature) == (20, second)

        # A refund with nothing to fall back to claims nothing beyond what is already claimed.
        ledger.record(4, asset_id=1, cumulative=10, signature=first, price=10)
        ledger.mark_claimed(4, 10)
        ledger.record(4, asset_id=1, cumulative=30, signature=b"\x03" * 65, price=10)
        ledger.record(4, asset_id=1, cumulative=30, signature=b"\x03" * 65, price=10)
        ledger.refund(4, 10)
        ledger.refund(4, 10)
        assert (ledger.entry(4).debited, ledger.entry(4).served, ledger.entry(4).unclaimed) == (10, 10, 0)


def test_a_ledger_from_before_the_served_voucher_claims_its_highest(tmp_path):
    path = tmp_path / "vouchers.sqlite3"
    with sqlite3.connect(path) as db:  # the previous release's table
        db.execute(
            "CREATE TABLE channels (channel_id INTEGER PRIMARY KEY, asset_id INTEGER NOT NULL, cumulative TEXT NOT"
            " NULL, signature BLOB NOT NULL, debited TEXT NOT NULL, calls INTEGER NOT NULL, claimed TEXT NOT NULL,"
            " final TEXT, failed_cumulative TEXT, last_error TEXT, updated_at REAL NOT NULL)"
        )
        db.execute("INSERT INTO channels VALUES (7, 1, ?, ?, ?, 2, ?, NULL, NULL, NULL, 0)",
                   (f"{40:078d}", SIG, f"{40:078d}", f"{20:078d}"))  # fmt: skip
    db.close()
    with VoucherLedger(path) as ledger:
        entry = ledger.entry(7)
        assert (entry.cumulative, entry.served, entry.served_signature, entry.unclaimed) == (40, 40, SIG, 20)
        ledger.record(7, asset_id=1, cumulative=50, signature=b"\x09" * 65, price=10)
    with VoucherLedger(path) as ledger:
        assert (ledger.entry(7).served, ledger.entry(7).calls) == (50, 3)


def test_gil_holding_recovery_agrees_with_coincurve():
    assert secp256k1.recover_public_key is not secp256k1._coincurve_recover  # the ctypes path loaded here
    for _ in range(20):
        key, digest = PrivateKey(os.urandom(32)), os.urandom(32)
        signature = key.sign_recoverable(digest, hasher=None)
        expected = key.public_key.format(compressed=False)
        assert secp256k1.recover_public_key(signature[:64], signature[64], digest) == expected
        assert secp256k1._coincurve_recover(signature[:64], signature[64], digest) == expected
        other = secp256k1.recover_public_key(signature[:64], signature[64] ^ 1, digest)
        assert other != expected  # the other recovery id gives another key (or none)
    nothing = bytes(64)  # r = s = 0: no key
    assert secp256k1.recover_public_key(nothing, 0, os.urandom(32)) is None
    assert secp256k1._coincurve_recover(nothing, 0, os.urandom(32)) is None
