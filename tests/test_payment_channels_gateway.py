"""The channel gate: vouchers verified off-chain, debited durably, claimed into the vault by the settler."""

from __future__ import annotations

import base64
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from marketplace.chain.market import AssetKind
from marketplace.chain.token import to_units
from marketplace.payments.channels import (
    HEADER,
    AssetCache,
    ChannelGate,
    InsufficientCredit,
    LedgerError,
    MalformedPayment,
    PaymentRequired,
    Settler,
    Voucher,
    VoucherHasher,
    VoucherLedger,
)

HOUR = 3600
PRICE = to_units("0.01")
REPO_ROOT = Path(__file__).resolve().parents[1]


def _publish(market, owner, uri: str) -> int:
    return market.marketplace.publish(
        owner, kind=AssetKind.MODEL, content_hash=os.urandom(32), uri=uri, price=PRICE,
        token=market.token.address, payees=[(owner.address, 10_000)],
    )  # fmt: skip


@pytest.fixture
def model(market, bob):
    """A model asset owned by bob, priced per call."""
    return _publish(market, bob, "ipfs://model")


@pytest.fixture
def open_channel(chain, market, alice, session_key):
    """Open a channel from alice (signed for by the session key): ``open_channel(asset, deposit, seconds)``."""
    market.token.approve(alice, market.channels.address, to_units(1000))

    def open_(asset_id: int, deposit: int = to_units(1), seconds: int = HOUR) -> int:
        return market.channels.open(
            alice, asset_id, market.token.address, deposit, chain.timestamp() + seconds, session_key.address
        )

    return open_


@pytest.fixture
def channel(model, open_channel) -> int:
    """A 1 tUSD channel for the model, expiring in an hour."""
    return open_channel(model)


@pytest.fixture
def clock(chain):
    """Chain time without a round trip per call (the backends' clocks may run ahead of the wall clock)."""
    offset = chain.timestamp() - time.time()
    return lambda: time.time() + offset


@pytest.fixture
def ledger(tmp_path):
    with VoucherLedger(tmp_path / "vouchers.sqlite3") as ledger:
        yield ledger


@pytest.fixture
def gate(market, ledger, clock) -> ChannelGate:
    return ChannelGate(market, ledger, min_seconds_to_expiry=60, clock=clock)


@pytest.fixture
def settler(market, ledger, relayer) -> Settler:
    return Settler(market, ledger, relayer, interval=0.05)


def header(market, signer, channel_id: int, cumulative: int) -> str:
    return Voucher(channel_id, cumulative, market.channels.sign_voucher(signer, channel_id, cumulative)).to_header()


def refusal(gate: ChannelGate, value: str | None, asset_id: int, price: int = PRICE) -> PaymentRequired:
    with pytest.raises(PaymentRequired) as info:
        gate.charge(value, price, asset_id=asset_id)
    return info.value


# ---------------------------------------------------------------------- paying


def test_paid_calls_are_debited_and_settled_into_the_vault(market, session_key, model, channel, gate, ledger, settler):
    calls = 10
    for n in range(1, calls + 1):
        receipt = gate.charge(header(market, session_key, channel, n * PRICE), PRICE, asset_id=model)
        assert (receipt.channel_id, receipt.debited, receipt.highest_voucher, receipt.calls) == (
            channel, n * PRICE, n * PRICE, n,
        )  # fmt: skip
    entry = ledger.entry(channel)
    assert (entry.cumulative, entry.debited, entry.calls, entry.claimed) == (calls * PRICE, calls * PRICE, calls, 0)

    (settled,) = settler.settle_once()
    assert (settled.outcome, settled.amount) == ("claimed", calls * PRICE)
    assert market.token.balance_of(market.marketplace.vault_of(model)) == calls * PRICE
    assert market.channels.channel(channel).claimed == calls * PRICE
    assert ledger.entry(channel).claimed == calls * PRICE
    assert settler.settle_once() == []  # nothing new: no transaction


def test_out_of_order_concurrent_vouchers_are_all_served_once(market, session_key, model, channel, gate, ledger):
    calls = 20
    rng = random.Random(7)

    def wave(first: int) -> list[str]:
        """``calls`` concurrent calls carrying vouchers ``first``.. in shuffled order."""
        headers = [header(market, session_key, channel, n * PRICE) for n in range(first, first + calls)]
        rng.shuffle(headers)
        start = threading.Barrier(calls)

        def call(value: str):
            start.wait()
            return gate.charge(value, PRICE, asset_id=model)

        with ThreadPoolExecutor(max_workers=calls) as pool:
            receipts = list(pool.map(call, headers))
        # Every debit saw a distinct running total: no call was served twice or on the same credit.
        assert sorted(r.debited for r in receipts) == [n * PRICE for n in range(first, first + calls)]
        return headers

    wave(1)  # the channel state is read from chain while the calls wait
    headers = wave(calls + 1)  # the state is cached: the calls race each other only
    entry = ledger.entry(channel)
    assert entry.debited == 2 * calls * PRICE <= entry.cumulative == 2 * calls * PRICE
    assert entry.calls == 2 * calls
    # The credit is used up: replaying any voucher, even the highest, buys nothing more.
    refused = refusal(gate, headers[0], model)
    assert refused.reason == "insufficient_voucher"
    assert refused.requirements["channel"]["minCumulativeAmount"] == str((2 * calls + 1) * PRICE)


def test_a_voucher_signed_ahead_pays_for_later_calls(market, session_key, model, channel, gate):
    ahead = header(market, session_key, channel, 3 * PRICE)
    assert [gate.charge(ahead, PRICE, asset_id=model).debited for _ in range(3)] == [PRICE, 2 * PRICE, 3 * PRICE]
    assert refusal(gate, ahead, model).reason == "insufficient_voucher"
    low = header(market, session_key, channel, 2 * PRICE)  # below the highest, which is used up
    assert refusal(gate, low, model).reason == "insufficient_voucher"


# ---------------------------------------------------------------------- refusing


def test_missing_or_insufficient_payment_gets_the_price_and_how_to_pay(market, session_key, model, channel, gate):
    missing = refusal(gate, None, model)
    assert (missing.reason, missing.status, missing.code) == ("payment_missing", 402, "payment_required")
    req = missing.requirements
    assert req["header"] == HEADER == "X-Payment-Channel"
    assert (req["price"], req["assetId"], req["token"]) == (str(PRICE), model, market.token.address)
    assert (req["channels"], req["chainId"]) == (market.channels.address, market.chain.chain_id)
    assert req["payTo"] == market.marketplace.vault_of(model)
    assert req["voucher"]["domain"] == market.channels.domain.as_dict()
    assert req["voucher"]["types"]["Voucher"] == [
        {"name": "channelId", "type": "uint256"}, {"name": "cumulativeAmount", "type": "uint256"},
    ]  # fmt: skip
    json.dumps(missing.to_dict())  # the 402 body is JSON as it stands

    short = refusal(gate, header(market, session_key, channel, PRICE - 1), model)
    assert short.reason == "insufficient_voucher"
    assert short.requirements["channel"] == {
        "channelId": channel, "highestVoucher": "0", "debited": "0", "minCumulativeAmount": str(PRICE),
    }  # fmt: skip
    over = refusal(gate, header(market, session_key, channel, to_units(2)), model)  # deposit is 1 tUSD
    assert over.reason == "voucher_exceeds_deposit"
    assert refusal(gate, header(market, session_key, 999, PRICE), model).reason == "unknown_channel"


def test_vouchers_of_the_wrong_signer_channel_or_asset_are_refused(
    market, alice, bob, session_key, model, channel, open_channel, gate, ledger
):
    by_payer = header(market, alice, channel, PRICE)  # alice pays, but the session key signs
    assert refusal(gate, by_payer, model).reason == "invalid_signature"

    other_channel = open_channel(model)
    signed_for_other = market.channels.sign_voucher(session_key, other_channel, PRICE)
    replayed = Voucher(channel, PRICE, signed_for_other).to_header()
    assert refusal(gate, replayed, model).reason == "invalid_signature"

    # The same signature made malleable (s -> n - s, v flipped) recovers the same key off-chain,
    # but the contract would refuse it: so does the gate.
    good = market.channels.sign_voucher(session_key, channel, PRICE)
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    high_s = good[:32] + (n - int.from_bytes(good[32:64], "big")).to_bytes(32, "big") + bytes([55 - good[64]])
    assert refusal(gate, Voucher(channel, PRICE, high_s).to_header(), model).reason == "invalid_signature"

    other_asset = _publish(market, bob, "ipfs://other-model")
    for_other_asset = open_channel(other_asset)
    refused = refusal(gate, header(market, session_key, for_other_asset, PRICE), model)
    assert refused.reason == "wrong_asset"
    assert ledger.entries() == []  # nothing was debited by any refused call
    assert gate.charge(header(market, session_key, channel, PRICE), PRICE, asset_id=model).calls == 1


def test_channels_near_expiry_are_refused_until_extended(chain, market, alice, session_key, model, open_channel, gate):
    expiring = open_channel(model, seconds=30)  # the gate wants 60 s left
    value = header(market, session_key, expiring, PRICE)
    assert refusal(gate, value, model).reason == "channel_expiring"
    market.channels.extend(alice, expiring, chain.timestamp() + HOUR)
    assert gate.charge(value, PRICE, asset_id=model).debited == PRICE  # re-read from chain


def test_a_top_up_is_seen_when_a_voucher_exceeds_the_cached_deposit(market, alice, session_key, model, channel, gate):
    assert gate.charge(header(market, session_key, channel, PRICE), PRICE, asset_id=model).calls == 1  # cached
    beyond = header(market, session_key, channel, to_units(1) + PRICE)
    assert refusal(gate, beyond, model).reason == "voucher_exceeds_deposit"
    market.channels.top_up(alice, channel, to_units(1))
    assert gate.charge(beyond, PRICE, asset_id=model).highest_voucher == to_units(1) + PRICE


def test_a_price_change_reaches_the_gate_once_its_cached_asset_expires(market, bob, model, ledger, clock):
    now = [0.0]
    gate = ChannelGate(market, ledger, clock=clock, assets=AssetCache(market, max_age=2.0, clock=lambda: now[0]))
    assert gate.requirements(model, PRICE)["payTo"] == market.marketplace.vault_of(model)
    assert gate.assets.get(model).price == PRICE
    market.marketplace.set_price(bob, model, 3 * PRICE)
    now[0] += 1.0
    assert gate.assets.get(model).price == PRICE  # still within max_age
    now[0] += 1.5
    assert gate.assets.get(model).price == 3 * PRICE  # re-read from chain
    market.marketplace.set_price(bob, model, 2 * PRICE)
    gate.assets.invalidate(model)
    assert gate.assets.get(model).price == 2 * PRICE


def test_an_expired_asset_is_read_once_however_many_threads_want_it(market, model):
    now, reads, release = [0.0], [], threading.Event()
    cache = AssetCache(market, max_age=2.0, clock=lambda: now[0])
    first = cache.get(model)
    read = market.marketplace.asset

    def slow_read(asset_id: int):
        reads.append(asset_id)
        release.wait(5)
        return read(asset_id)

    now[0] += 3.0
    market.marketplace.asset = slow_read
    try:
        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(cache.get, model) for _ in range(8)]
            time.sleep(0.2)
            stale = [f.result() for f in futures if f.done()]  # the threads not reading got the previous value
            release.set()
            results = [f.result() for f in futures]
    finally:
        del market.marketplace.asset
    assert reads == [model] and len(stale) == 7 and all(r == first for r in results)


def test_malformed_headers_raise_malformed_payment(market, model, gate):
    def encoded(body) -> str:
        return base64.b64encode(json.dumps(body).encode()).decode()

    good_sig = "0x" + "11" * 65
    bad = [
        "not base64 at all!",
        base64.b64encode(b"\xff\xfe not json").decode(),
        encoded([1, 2, 3]),
        encoded({"cumulativeAmount": "1", "signature": good_sig}),
        encoded({"channelId": 0, "cumulativeAmount": "1", "signature": good_sig}),
        encoded({"channelId": 1, "cumulativeAmount": -1, "signature": good_sig}),
        encoded({"channelId": 1, "cumulativeAmount": 1.5, "signature": good_sig}),
        encoded({"channelId": True, "cumulativeAmount": "1", "signature": good_sig}),
        encoded({"channelId": 1, "cumulativeAmount": str(2**256), "signature": good_sig}),
        encoded({"channelId": 1, "cumulativeAmount": "1", "signature": "0x1234"}),
        encoded({"channelId": 1, "cumulativeAmount": "1", "signature": "zz" * 65}),
        "A" * 5000,
    ]
    for value in bad:
        with pytest.raises(MalformedPayment) as info:
            gate.charge(value, PRICE, asset_id=model)
        assert (info.value.status, info.value.code) == (400, "malformed_payment")
    round_trip = Voucher(3, 2**200, bytes(range(65)))
    assert Voucher.from_header(round_trip.to_header()) == round_trip
    urlsafe = round_trip.to_header().replace("+", "-").replace("/", "_").rstrip("=")
    assert Voucher.from_header(urlsafe) == round_trip


# ---------------------------------------------------------------------- settling


def test_settler_runs_in_the_background_and_settles_at_stop(market, session_key, model, channel, gate, ledger, settler):
    vault = market.marketplace.vault_of(model)
    gate.charge(header(market, session_key, channel, PRICE), PRICE, asset_id=model)
    settler.start()
    try:
        deadline = time.monotonic() + 20
        while ledger.entry(channel).claimed < PRICE and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ledger.entry(channel).claimed == PRICE
        for n in range(2, 6):
            gate.charge(header(market, session_key, channel, n * PRICE), PRICE, asset_id=model)
    finally:
        settler.stop()
    assert ledger.entry(channel).claimed == 5 * PRICE
    assert market.token.balance_of(vault) == 5 * PRICE


def test_closed_or_expired_channels_are_recorded_and_skipped(
    chain, market, bob, session_key, model, channel, open_channel, gate, ledger, settler
):
    short = open_channel(model, seconds=HOUR // 2)
    gate.charge(header(market, session_key, channel, PRICE), PRICE, asset_id=model)
    gate.charge(header(market, session_key, short, PRICE), PRICE, asset_id=model)
    market.channels.close(bob, channel)  # the owner closes early, without the gate's voucher
    chain.increase_time(HOUR // 2 + 1)  # `short` expires

    outcomes = {s.channel_id: s.outcome for s in settler.settle_once()}
    assert outcomes == {channel: "closed", short: "expired"}
    assert (ledger.entry(channel).final, ledger.entry(short).final) == ("ChannelClosed", "ChannelExpired")
    assert settler.settle_once() == []  # skipped from now on
    # The gate still holds the channel as open in its cache; the ledger refuses it anyway.
    refused = refusal(gate, header(market, session_key, channel, 2 * PRICE), model)
    assert refused.reason == "channel_closed"


def test_a_ledger_belongs_to_one_channels_contract(tmp_path):
    with VoucherLedger(tmp_path / "l.sqlite3") as ledger:
        ledger.bind("eip155:1/genesis:0xaa/channels:0x01")
        ledger.bind("eip155:1/genesis:0xaa/channels:0x01")
        with pytest.raises(LedgerError, match="own data directory"):
            ledger.bind("eip155:1/genesis:0xbb/channels:0x01")


def test_the_fast_voucher_hasher_signs_and_recovers_like_eth_account(market, alice, session_key, channel):
    hasher = VoucherHasher(market.channels.domain)
    for cumulative in (0, PRICE, 2**255 + 12345):
        signature = hasher.sign(session_key, channel, cumulative)
        assert signature == market.channels.sign_voucher(session_key, channel, cumulative)  # same bytes (RFC 6979)
        assert hasher.recover(Voucher(channel, cumulative, signature)) == session_key.address.lower()
        assert hasher.recover(Voucher(channel + 1, cumulative, signature)) != session_key.address.lower()
    forged = Voucher(channel, PRICE, bytes(64) + b"\x1b")  # r = s = 0
    assert hasher.recover(forged) is None


# ---------------------------------------------------------------------- durability


def test_concurrent_writes_share_commits_and_refusals_stay_their_own(tmp_path):
    """Group commit: many threads' debits go to disk in fewer commits (one fsync each) than writes, a
    refused debit in a batch leaves the others in, and every thread returns only after its commit."""
    channels, per_channel = 4, 6
    with VoucherLedger(tmp_path / "vouchers.sqlite3") as ledger:
        start = threading.Barrier(channels * per_channel)

        def pay(args: tuple[int, int]) -> str:
            channel_id, n = args
            start.wait()
            try:
                # Vouchers cover 5 calls per channel: the sixth call on each channel is refused.
                ledger.record(channel_id, asset_id=1, cumulative=min(n, 5) * PRICE, signature=b"s", price=PRICE)
            except InsufficientCredit:
                return "refused"
            return "paid"

        jobs = [(c, n) for c in range(1, channels + 1) for n in range(1, per_channel + 1)]
        with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
            outcomes = list(pool.map(pay, jobs))
        assert outcomes.count("refused") == channels and outcomes.count("paid") == channels * (per_channel - 1)
        assert ledger.commits < len(jobs)
        for entry in ledger.entries():
            assert (entry.cumulative, entry.debited, entry.calls) == (5 * PRICE, 5 * PRICE, 5)
        ledger.refund(1, PRICE)  # a failed call's credit comes back
        assert (ledger.entry(1).debited, ledger.entry(1).calls) == (4 * PRICE, 4)
        with pytest.raises(ValueError):
            ledger.refund(99, PRICE)


_RECORDER = """
import json, sys, time
from marketplace.payments.channels import VoucherLedger
ledger = VoucherLedger(sys.argv[1])
for line in sys.stdin:
    v = json.loads(line)
    ledger.record(v["channel"], asset_id=v["asset"], cumulative=v["cumulative"],
                  signature=bytes.fromhex(v["signature"]), price=v["price"])
    print(v["cumulative"], flush=True)  # the call is answered only after the commit
    time.sleep(0.005)  # the work of the call
"""


def test_vouchers_answered_before_a_kill_9_are_all_claimed(market, relayer, session_key, model, channel, tmp_path):
    total, kill_after = 60, 20
    path = tmp_path / "vouchers.sqlite3"
    vouchers = "".join(
        json.dumps({
            "channel": channel, "asset": model, "cumulative": n * PRICE, "price": PRICE,
            "signature": market.channels.sign_voucher(session_key, channel, n * PRICE).hex(),
        }) + "\n"
        for n in range(1, total + 1)
    )  # fmt: skip
    recorder = subprocess.Popen(
        [sys.executable, "-c", _RECORDER, str(path)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=REPO_ROOT,
    )  # fmt: skip
    try:
        recorder.stdin.write(vouchers)
        recorder.stdin.flush()
        answered = [int(recorder.stdout.readline()) for _ in range(kill_after)]
        os.kill(recorder.pid, signal.SIGKILL)
        answered += [int(line) for line in recorder.stdout.read().split()]  # printed before it died
    finally:
        recorder.kill()
        recorder.wait(timeout=10)
        recorder.stdin.close()
        recorder.stdout.close()
    assert recorder.returncode == -signal.SIGKILL
    assert kill_after <= len(answered) < total, "the recorder was to be killed mid-stream"

    with VoucherLedger(path) as ledger:  # the restarted server
        entry = ledger.entry(channel)
        # Every answered voucher is there; at most one more was committed but not yet answered.
        assert max(answered) <= entry.cumulative <= max(answered) + PRICE
        assert entry.debited == entry.cumulative
        (settled,) = Settler(market, ledger, relayer).settle_once()
    assert settled.outcome == "claimed"
    assert market.token.balance_of(market.marketplace.vault_of(model)) == entry.cumulative >= max(answered)
