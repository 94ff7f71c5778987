"""The voucher ledger on its own: one owner per file, state that survives reopening, only answered calls claimable,
credit claimed on chain counted as used, failed writes that publish nothing, group commits; and the GIL-holding
signature recovery the gate uses, against coincurve."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from coincurve import PrivateKey

from marketplace.payments import secp256k1
from marketplace.payments import voucher_ledger as ledger_module
from marketplace.payments.voucher_ledger import InsufficientCredit, VoucherLedger, VoucherLedgerError

REPO_ROOT = Path(__file__).resolve().parents[2]
SIG = b"\x01" * 65


def test_one_process_owns_a_ledger_file_at_a_time(tmp_path):
    path = tmp_path / "vouchers.sqlite3"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from marketplace.payments.voucher_ledger import VoucherLedger; "
         "VoucherLedger(sys.argv[1]); print('open', flush=True); sys.stdin.read()", str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(
            VoucherLedgerError, match=rf"in use by process {holder.pid}: one gateway per data directory"
        ):
            VoucherLedger(path)
    finally:
        holder.kill()  # a dead holder releases the file
        holder.wait(timeout=10)
        holder.stdin.close()
        holder.stdout.close()
    with VoucherLedger(path) as ledger:
        ledger.record(1, asset_id=1, price=5, ceiling=8, signature=SIG)
    with VoucherLedger(path) as reopened:  # closed: free again, and the state was on disk
        entry = reopened.entry(1)
        assert (entry.ceiling, entry.debited, entry.calls, entry.signature) == (8, 5, 1, SIG)


def test_the_operator_picks_how_hard_commits_sync(tmp_path):
    for synchronous, pragma in (("full", 2), ("normal", 1)):
        with VoucherLedger(tmp_path / f"{synchronous}.sqlite3", synchronous=synchronous) as ledger:
            assert ledger._db.execute("PRAGMA synchronous").fetchone() == (pragma,)
    with pytest.raises(ValueError, match="synchronous must be one of full, normal"):
        VoucherLedger(tmp_path / "off.sqlite3", synchronous="off")


def test_state_survives_reopening_with_every_field(tmp_path):
    path = tmp_path / "vouchers.sqlite3"
    big = 2**128 - 1
    with VoucherLedger(path) as ledger:
        ledger.record(3, asset_id=9, price=7, ceiling=big, signature=SIG)
        ledger.record(2, asset_id=9, price=4, ceiling=10, signature=SIG)
        ledger.mark_claimed(2, 4)
        ledger.mark_failed(3, 7, "reverted")
        ledger.mark_final(2, "AlreadySettled")
        ledger.mark_claimed(99, 0, asset_id=9)  # nothing claimed on an unknown channel: nothing written
        ledger.mark_failed(98, 1, "x")  # an unknown channel: nothing to note
        before = ledger.entries()
    with VoucherLedger(path) as ledger:
        assert ledger.entries() == before
        assert [e.channel_id for e in before] == [2, 3]
        assert (before[1].ceiling, before[1].failed_total, before[1].last_error) == (big, 7, "reverted")
        assert before[0].final == "AlreadySettled" and before[0].claimed == 4
        assert ledger.claimable() == []  # one is final, the other's total already failed
        ledger.record(3, asset_id=9, price=1, ceiling=big, signature=SIG)
        assert [e.channel_id for e in ledger.claimable()] == [3]  # more was answered: retried


def test_only_answered_calls_are_claimable_whatever_the_ceiling(tmp_path):
    """The settler claims ``debited`` (the answered calls), never the ceiling a payer signed ahead."""
    with VoucherLedger(tmp_path / "vouchers.sqlite3") as ledger:
        ahead = b"\x05" * 65
        entry = ledger.record(1, asset_id=1, price=10, ceiling=50, signature=ahead)
        assert (entry.debited, entry.ceiling, entry.unclaimed, entry.credit) == (10, 50, 10, 40)
        lower = ledger.record(1, asset_id=1, price=10, ceiling=20, signature=b"\x02" * 65)
        assert (lower.debited, lower.ceiling, lower.signature) == (20, 50, ahead)  # the highest voucher stays
        with pytest.raises(InsufficientCredit) as info:
            for _ in range(4):
                ledger.record(1, asset_id=1, price=10, ceiling=10, signature=b"\x01" * 65)
        assert (info.value.highest, info.value.debited, info.value.needed) == (50, 50, 60)
        assert (ledger.entry(1).debited, ledger.entry(1).calls) == (50, 5)
        assert [(e.channel_id, e.unclaimed) for e in ledger.claimable()] == [(1, 50)]


def test_no_debit_goes_beyond_the_deposit_whatever_the_ceiling(tmp_path):
    """A claim cannot exceed the deposit: neither can what the ledger debits (the settler's claim must succeed)."""
    with VoucherLedger(tmp_path / "vouchers.sqlite3") as ledger:
        ledger.record(1, asset_id=1, price=10, ceiling=2**128 - 1, signature=SIG, deposit=25)
        ledger.record(1, asset_id=1, price=10, ceiling=2**128 - 1, signature=SIG, deposit=25)
        with pytest.raises(InsufficientCredit) as info:
            ledger.record(1, asset_id=1, price=10, ceiling=2**128 - 1, signature=SIG, deposit=25)
        assert (info.value.highest, info.value.needed) == (25, 30)
        assert ledger.entry(1).debited == 20


def test_credit_claimed_on_chain_is_used_credit(tmp_path):
    """A fresh ledger learns what another one claimed: that credit cannot pay for calls again."""
    with VoucherLedger(tmp_path / "vouchers.sqlite3") as ledger:
        with pytest.raises(InsufficientCredit):
            ledger.record(1, asset_id=1, price=10, ceiling=50, signature=SIG, claimed_on_chain=50)
        assert ledger.entry(1) is None
        entry = ledger.record(1, asset_id=1, price=10, ceiling=60, signature=SIG, claimed_on_chain=50)
        assert (entry.claimed, entry.debited, entry.unclaimed, entry.calls) == (50, 60, 10, 1)
        ledger.mark_claimed(2, 30, asset_id=7)  # the settler saw a claim on a channel it never served
        assert (ledger.entry(2).debited, ledger.entry(2).claimed, ledger.entry(2).asset_id) == (30, 30, 7)
        assert ledger.claimable() == [ledger.entry(1)]
        ledger.mark_claimed(1, 80)  # claimed elsewhere beyond what this ledger answered
        assert (ledger.entry(1).debited, ledger.entry(1).claimed) == (80, 80)
        ledger.mark_claimed(1, 70)  # never lowers
        assert (ledger.entry(1).debited, ledger.entry(1).claimed) == (80, 80)


def test_a_failed_write_publishes_nothing_and_the_ledger_goes_on(tmp_path, monkeypatch):
    with VoucherLedger(tmp_path / "vouchers.sqlite3") as ledger:
        ledger.record(1, asset_id=1, price=4, ceiling=10, signature=SIG)
        real_write = ledger_module._write

        def disk_full(db, entries):
            raise sqlite3.OperationalError("database or disk is full")

        monkeypatch.setattr(ledger_module, "_write", disk_full)
        with pytest.raises(VoucherLedgerError, match=r"not committed .*disk is full"):
            ledger.record(1, asset_id=1, price=4, ceiling=20, signature=SIG)
        entry = ledger.entry(1)
        assert (entry.ceiling, entry.debited, entry.calls) == (10, 4, 1)  # as on disk

        monkeypatch.setattr(ledger_module, "_write", real_write)
        ledger.record(1, asset_id=1, price=4, ceiling=10, signature=SIG)  # the remaining credit still pays
        with pytest.raises(InsufficientCredit):
            ledger.record(1, asset_id=1, price=4, ceiling=10, signature=SIG)
        assert (ledger.entry(1).debited, ledger.entry(1).calls) == (8, 2)


def test_a_batch_larger_than_one_statement_is_one_transaction(tmp_path, monkeypatch):
    monkeypatch.setattr(ledger_module, "_ROWS_PER_STATEMENT", 3)
    path = tmp_path / "vouchers.sqlite3"
    with VoucherLedger(path) as ledger:
        entries = [ledger_module.ChannelRecord(c, 1, c * 10, SIG, c, 1, 0) for c in range(1, 9)]
        ledger_module._write(ledger._db, entries)  # three statements
    with VoucherLedger(path) as ledger:
        assert [(e.channel_id, e.ceiling, e.debited) for e in ledger.entries()] == [(c, c * 10, c) for c in range(1, 9)]


def test_concurrent_writes_share_commits_and_refusals_stay_their_own(tmp_path):
    """Group commit: many threads' debits go to disk in fewer commits (one fsync each) than writes, a
    refused debit in a batch leaves the others in, and every thread returns only after its commit."""
    channels, per_channel, price = 4, 6, 10
    with VoucherLedger(tmp_path / "vouchers.sqlite3") as ledger:
        start = threading.Barrier(channels * per_channel)

        def pay(args: tuple[int, int]) -> str:
            channel_id, n = args
            start.wait()
            try:
                # Vouchers cover 5 calls per channel: the sixth call on each channel is refused.
                ledger.record(channel_id, asset_id=1, price=price, ceiling=min(n, 5) * price, signature=b"s")
            except InsufficientCredit:
                return "refused"
            return "paid"

        jobs = [(c, n) for c in range(1, channels + 1) for n in range(1, per_channel + 1)]
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            outcomes = list(pool.map(pay, jobs))
        assert outcomes.count("refused") == channels and outcomes.count("paid") == channels * (per_channel - 1)
        assert ledger.commits < len(jobs)
        for entry in ledger.entries():
            assert (entry.ceiling, entry.debited, entry.calls) == (5 * price, 5 * price, 5)


def test_a_ledger_of_the_previous_layout_is_refused_with_what_to_do(tmp_path):
    path = tmp_path / "vouchers.sqlite3"
    with sqlite3.connect(path) as db:  # the previous release's table: cumulative vouchers
        db.execute(
            "CREATE TABLE channels (channel_id INTEGER PRIMARY KEY, asset_id INTEGER NOT NULL, cumulative TEXT NOT"
            " NULL, signature BLOB NOT NULL, debited TEXT NOT NULL, calls INTEGER NOT NULL, claimed TEXT NOT NULL,"
            " final TEXT, failed_cumulative TEXT, last_error TEXT, served TEXT NOT NULL, served_signature BLOB NOT"
            " NULL, updated_at REAL NOT NULL)"
        )
    db.close()
    with pytest.raises(VoucherLedgerError) as info:
        VoucherLedger(path)
    assert str(path) in str(info.value) and "older agentmarket" in str(info.value)
    assert "move the file away" in str(info.value)
    path.rename(tmp_path / "old.sqlite3")
    with VoucherLedger(path) as ledger:  # moved away: a new ledger starts (and the refused one's lock was released)
        assert ledger.entries() == []


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


def test_a_batch_of_debits_leaves_the_rows_one_debit_at_a_time_would(tmp_path):
    """``record_many`` (the fast engine's group commit) against ``record`` per call: the same rows, the same
    refusals at the same places, in one write; ``mark_claimed_many`` likewise."""
    rng = __import__("random").Random(15)
    calls = []
    for _ in range(300):
        channel = rng.randint(1, 6)
        calls.append(ledger_module.Debit(channel, 10 + channel, rng.choice([1, 2, 5]), rng.randint(0, 120),
                                         bytes([rng.randint(1, 9)]) * 65, rng.choice([0, 0, 0, 30]),
                                         rng.choice([None, 100])))  # fmt: skip
    with VoucherLedger(tmp_path / "one.sqlite3") as one, VoucherLedger(tmp_path / "many.sqlite3") as many:
        one.record(6, asset_id=16, price=1, ceiling=5, signature=SIG)
        one.mark_final(6, "AlreadySettled")
        many.record(6, asset_id=16, price=1, ceiling=5, signature=SIG)
        many.mark_final(6, "AlreadySettled")
        expected: list[object] = []
        for c in calls:
            try:
                expected.append(one.record(c.channel_id, asset_id=c.asset_id, price=c.price, ceiling=c.ceiling,
                                           signature=c.signature, claimed_on_chain=c.claimed_on_chain,
                                           deposit=c.deposit))  # fmt: skip
            except (InsufficientCredit, ledger_module.ChannelFinalized) as exc:
                expected.append(type(exc))
        commits = many.commits
        got = many.record_many(calls)
        assert many.commits == commits + 1  # one write for the whole batch
        assert [g if isinstance(g, ledger_module.ChannelRecord) else type(g) for g in got] == expected
        assert sum(isinstance(g, InsufficientCredit) for g in got) > 10  # refusals were exercised
        assert any(isinstance(g, ledger_module.ChannelFinalized) for g in got)
        assert many.entries() == one.entries()
        claims = [(e.channel_id, e.debited) for e in one.claimable()]
        for channel_id, claimed in claims:
            one.mark_claimed(channel_id, claimed)
        many.mark_claimed_many(claims)
        assert many.entries() == one.entries() and many.claimable() == []
        with pytest.raises(ValueError, match="must not be negative"):
            many.record_many([ledger_module.Debit(1, 1, -1, 5, SIG)])
    with VoucherLedger(tmp_path / "many.sqlite3") as reopened, VoucherLedger(tmp_path / "one.sqlite3") as other:
        assert reopened.entries() == other.entries()  # on disk too
