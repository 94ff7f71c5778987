"""The channel gate, ledger and settler against the real contract (both backends): the vault receives exactly
the prices of the calls the gateway answered, whatever the payer signs, however calls fail or race.

Each of issue 12 §2's inputs is attacked here at the gate level (the live-server versions are in
``test_channel_attacks.py``): vouchers paid ahead, concurrent failing calls, an empty ledger for a
voucher already claimed, calls after a close or the chain clock's expiry, and signatures the
contract would refuse.
"""

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

from marketplace.chain.records import AssetKind
from marketplace.chain.units import CLAIM_WINDOW, UINT128_MAX, to_units
from marketplace.payments.channels import (
    HEADER,
    AssetCache,
    ChainWatcher,
    ChannelGate,
    ChannelPaymentRequired,
    MalformedPayment,
    Receipt,
    Settler,
    Voucher,
    VoucherHasher,
    VoucherLedger,
    VoucherLedgerError,
    settler_for,
)

HOUR = 3600
PRICE = to_units("0.01")
REPO_ROOT = Path(__file__).resolve().parents[2]


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
def open_channel(chain, market, alice, session_key, relayer):
    """Open a channel from alice (the session key signs, the relayer claims unless ``receiver``):
    ``open_channel(asset, deposit, seconds)``."""
    market.token.approve(alice, market.channels.address, to_units(1000))

    def open_(asset_id: int, deposit: int = to_units(1), seconds: int = HOUR, receiver: str | None = None) -> int:
        return market.channels.open(alice, asset_id, market.token.address, deposit, chain.timestamp() + seconds,
                                    session_key.address, receiver_authorizer=receiver or relayer.address)  # fmt: skip

    return open_


@pytest.fixture
def channel(model, open_channel) -> int:
    """A 1 tUSD channel for the model, expiring in an hour."""
    return open_channel(model)


@pytest.fixture
def ledger(tmp_path):
    with VoucherLedger(tmp_path / "vouchers.sqlite3") as ledger:
        yield ledger


@pytest.fixture
def watcher(market) -> ChainWatcher:
    """A chain view re-read on every call (poll interval 0): what the watcher saw is what the chain says now."""
    return ChainWatcher(market, poll_interval=0)


@pytest.fixture
def gate(market, ledger, relayer, watcher) -> ChannelGate:
    return ChannelGate(market, ledger, receiver_authorizer=relayer.address, watcher=watcher, min_seconds_to_expiry=60)


@pytest.fixture
def settler(gate, relayer) -> Settler:
    return settler_for(gate, relayer, interval=0.05)


def header(market, signer, channel_id: int, ceiling: int) -> str:
    return Voucher(channel_id, ceiling, market.channels.sign_voucher(signer, channel_id, ceiling)).to_header()


def call(gate: ChannelGate, value: str | None, asset_id: int, *, fails: bool = False, price: int = PRICE):
    """One call through the gate: reserve, run (or fail), commit (or release). The receipt, or None if it failed."""
    reservation = gate.reserve(value, price, asset_id=asset_id)
    if fails:
        gate.release(reservation)
        return None
    return gate.commit(reservation)


def refusal(gate: ChannelGate, value: str | None, asset_id: int, price: int = PRICE) -> ChannelPaymentRequired:
    with pytest.raises(ChannelPaymentRequired) as info:
        gate.reserve(value, price, asset_id=asset_id)
    return info.value


def vault_balance(market, asset_id: int) -> int:
    return market.token.balance_of(market.marketplace.vault_of(asset_id))


# ---------------------------------------------------------------------- paying


def test_answered_calls_are_debited_and_claimed_exactly(market, session_key, model, channel, gate, ledger, settler):
    calls = 10
    for n in range(1, calls + 1):
        receipt = call(gate, header(market, session_key, channel, n * PRICE), model)
        assert (receipt.channel_id, receipt.debited, receipt.highest_voucher, receipt.calls) == (
            channel, n * PRICE, n * PRICE, n,
        )  # fmt: skip
    entry = ledger.entry(channel)
    assert (entry.ceiling, entry.debited, entry.calls, entry.claimed) == (calls * PRICE, calls * PRICE, calls, 0)

    (settled,) = settler.settle_once()
    assert (settled.outcome, settled.amount, settled.total) == ("claimed", calls * PRICE, calls * PRICE)
    assert vault_balance(market, model) == calls * PRICE
    assert market.channels.channel(channel).claimed == ledger.entry(channel).claimed == calls * PRICE
    assert settler.settle_once() == []  # nothing new: no transaction


@pytest.mark.parametrize("ahead", ["same voucher every call", "one call ahead"])
def test_a_payer_paying_ahead_is_charged_for_the_calls_answered(
    chain, market, alice, session_key, relayer, model, open_channel, gate, ledger, settler, ahead
):
    """Issue 12 §2, pay ahead: deposit 10·P + 1, vouchers above what was served. Before, the settler never
    claimed and the payer reclaimed everything; now the vault gets 10·P and the payer 1 back."""
    deposit = 10 * PRICE + 1
    channel = open_channel(model, deposit=deposit)
    for k in range(10):
        ceiling = deposit if ahead == "same voucher every call" else (k + 1) * PRICE + 1
        assert call(gate, header(market, session_key, channel, ceiling), model).debited == (k + 1) * PRICE
    refused = refusal(gate, header(market, session_key, channel, deposit), model)
    assert refused.reason == "deposit_exhausted"  # an 11th call would need 11·P of a 10·P + 1 deposit
    assert [s.outcome for s in settler.settle_once()] == ["claimed"]
    assert vault_balance(market, model) == 10 * PRICE
    chain.time_travel(market.channels.channel(channel).claim_deadline)
    before = market.token.balance_of(alice.address)
    market.channels.reclaim(relayer, channel)
    assert market.token.balance_of(alice.address) - before == 1


def test_out_of_order_concurrent_vouchers_are_all_served_once(market, session_key, model, channel, gate, ledger):
    calls = 20
    rng = random.Random(7)

    def wave(first: int) -> list[str]:
        """``calls`` concurrent calls carrying vouchers ``first``.. in shuffled order."""
        headers = [header(market, session_key, channel, n * PRICE) for n in range(first, first + calls)]
        rng.shuffle(headers)
        start = threading.Barrier(calls)

        def one(value: str) -> Receipt:
            start.wait()
            return call(gate, value, model)

        with ThreadPoolExecutor(max_workers=calls) as pool:
            receipts = list(pool.map(one, headers))
        # Every commit saw a distinct running total: no call was served twice or on the same credit.
        assert sorted(r.debited for r in receipts) == [n * PRICE for n in range(first, first + calls)]
        return headers

    wave(1)  # the channel state is read from chain while the calls wait
    headers = wave(calls + 1)  # the state is cached: the calls race each other only
    entry = ledger.entry(channel)
    assert entry.debited == 2 * calls * PRICE == entry.ceiling
    assert entry.calls == 2 * calls
    # The credit is used up: replaying any voucher, even the highest, buys nothing more.
    refused = refusal(gate, headers[0], model)
    assert refused.reason == "insufficient_voucher"
    assert refused.requirements["channel"]["minMaxClaimableAmount"] == str((2 * calls + 1) * PRICE)


def test_concurrent_failing_calls_leave_the_answered_ones_claimable(
    market, session_key, model, channel, gate, ledger, settler
):
    """Issue 12 §2, concurrent failures: 5 good calls, then 8 at once whose model fails. Before, the claimable
    voucher sometimes dropped to 0; now the 5 answered calls are claimed, and only they."""
    for n in range(1, 6):
        call(gate, header(market, session_key, channel, n * PRICE), model)
    start = threading.Barrier(8)

    def failing(n: int) -> None:
        start.wait()
        reservation = gate.reserve(header(market, session_key, channel, n * PRICE), PRICE, asset_id=model)
        time.sleep(0.01)  # the model runs, and fails
        gate.release(reservation)

    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(failing, range(6, 14)))
    entry = ledger.entry(channel)
    assert (entry.debited, entry.calls, entry.ceiling) == (5 * PRICE, 5, 5 * PRICE)  # failed calls wrote nothing
    settler.settle_once()
    assert vault_balance(market, model) == 5 * PRICE
    # The failed calls' vouchers still pay for the next calls (their ceilings were verified).
    assert call(gate, header(market, session_key, channel, 6 * PRICE), model).debited == 6 * PRICE


def test_a_reservation_is_committed_or_released_once(market, session_key, model, channel, gate, ledger):
    reservation = gate.reserve(header(market, session_key, channel, 2 * PRICE), PRICE, asset_id=model)
    second = gate.reserve(header(market, session_key, channel, 2 * PRICE), PRICE, asset_id=model)
    assert refusal(gate, header(market, session_key, channel, 2 * PRICE), model).reason == "insufficient_voucher"
    gate.release(second)
    gate.release(second)  # twice: nothing more is given back
    assert gate.commit(reservation).debited == PRICE
    with pytest.raises(ValueError, match="already committed or released"):
        gate.commit(reservation)
    assert call(gate, header(market, session_key, channel, 2 * PRICE), model).debited == 2 * PRICE
    assert refusal(gate, header(market, session_key, channel, 2 * PRICE), model).reason == "insufficient_voucher"


def test_an_empty_ledger_counts_what_was_claimed_on_chain_as_used(
    market, relayer, session_key, model, channel, gate, settler, tmp_path
):
    """Issue 12 §2, fresh ledger: a second gateway with an empty data directory must not answer calls for a
    voucher the first one already claimed."""
    for n in range(1, 6):
        call(gate, header(market, session_key, channel, n * PRICE), model)
    settler.settle_once()
    assert market.channels.channel(channel).claimed == 5 * PRICE

    with VoucherLedger(tmp_path / "fresh" / "vouchers.sqlite3") as fresh:
        second = ChannelGate(market, fresh, receiver_authorizer=relayer.address, watcher=ChainWatcher(market, 0))
        claimed_voucher = header(market, session_key, channel, 5 * PRICE)
        refused = refusal(second, claimed_voucher, model)
        assert refused.reason == "insufficient_voucher"
        assert refused.requirements["channel"]["minMaxClaimableAmount"] == str(6 * PRICE)
        receipt = call(second, header(market, session_key, channel, 6 * PRICE), model)
        assert (receipt.debited, receipt.calls) == (6 * PRICE, 1)
        (settled,) = settler_for(second, relayer).settle_once()
        assert (settled.outcome, settled.amount) == ("claimed", PRICE)
    assert vault_balance(market, model) == 6 * PRICE


def test_a_close_stops_calls_and_the_answered_ones_are_still_claimed(
    chain, market, bob, session_key, model, channel, gate, ledger, settler
):
    """Issue 12 §2, closed on chain: once the owner's close is seen, no call is answered; the calls answered
    before it are claimed within the claim window, and the payer reclaims the rest after it."""
    for _ in range(3):
        call(gate, header(market, session_key, channel, 5 * PRICE), model)
    market.channels.close(bob, channel)
    refused = refusal(gate, header(market, session_key, channel, 5 * PRICE), model)
    assert refused.reason == "channel_expired"
    (settled,) = settler.settle_once()
    assert (settled.outcome, settled.total) == ("claimed", 3 * PRICE)
    assert vault_balance(market, model) == 3 * PRICE
    chain.time_travel(market.channels.channel(channel).claim_deadline)
    market.channels.reclaim(bob, channel)
    assert market.token.balance_of(market.channels.address) == 0


def test_a_close_wakes_the_settler(market, bob, session_key, model, channel, gate, watcher, ledger, settler):
    settler.interval = 300  # only a wake-up can make it claim within the test
    call(gate, header(market, session_key, channel, PRICE), model)
    settler.start()
    try:
        market.channels.close(bob, channel)
        watcher.refresh()  # the watcher sees ChannelClosed
        deadline = time.monotonic() + 20
        while ledger.entry(channel).claimed < PRICE and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ledger.entry(channel).claimed == PRICE
    finally:
        settler.interval = 0.05
        settler.stop()


def test_the_chain_clock_not_the_wall_clock_ends_a_channel(
    chain, market, session_key, model, channel, gate, ledger, settler
):
    """Issue 12 §2, expired on chain: the chain's clock passes the expiry (far ahead of the wall clock):
    the next call is refused, and the calls answered before are claimed in the window."""
    call(gate, header(market, session_key, channel, 2 * PRICE), model)
    expiry = market.channels.channel(channel).expiry
    chain.time_travel(expiry)
    assert refusal(gate, header(market, session_key, channel, 2 * PRICE), model).reason == "channel_expired"
    (settled,) = settler.settle_once()
    assert settled.outcome == "claimed" and vault_balance(market, model) == PRICE


def test_claims_past_the_window_are_recorded_final_and_skipped(
    chain, market, session_key, model, channel, gate, ledger, settler
):
    call(gate, header(market, session_key, channel, PRICE), model)
    chain.time_travel(market.channels.channel(channel).claim_deadline)
    (settled,) = settler.settle_once()
    assert (settled.outcome, settled.detail) == ("final", "ClaimWindowOver")
    assert ledger.entry(channel).final == "ClaimWindowOver"
    assert settler.settle_once() == []  # skipped from now on
    assert vault_balance(market, model) == 0


# ---------------------------------------------------------------------- refusing


def test_missing_or_insufficient_payment_gets_the_price_and_how_to_pay(
    market, relayer, session_key, model, channel, gate
):
    missing = refusal(gate, None, model)
    assert (missing.reason, missing.status, missing.code) == ("payment_missing", 402, "payment_required")
    req = missing.requirements
    assert req["header"] == HEADER == "X-Payment-Channel"
    assert (req["price"], req["assetId"], req["token"]) == (str(PRICE), model, market.token.address)
    assert (req["channels"], req["chainId"]) == (market.channels.address, market.chain.chain_id)
    assert (req["receiverAuthorizer"], req["claimWindowSeconds"]) == (relayer.address, CLAIM_WINDOW)
    assert req["payTo"] == market.marketplace.vault_of(model)
    assert req["voucher"]["domain"] == market.channels.domain.as_dict()
    assert req["voucher"]["types"]["Voucher"] == [
        {"name": "channelId", "type": "uint256"}, {"name": "maxClaimableAmount", "type": "uint128"},
    ]  # fmt: skip
    json.dumps(missing.to_dict())  # the 402 body is JSON as it stands

    short = refusal(gate, header(market, session_key, channel, PRICE - 1), model)
    assert short.reason == "insufficient_voucher"
    assert short.requirements["channel"] == {
        "channelId": channel, "highestVoucher": "0", "debited": "0", "claimed": "0",
        "deposit": str(to_units(1)), "minMaxClaimableAmount": str(PRICE),
    }  # fmt: skip
    assert refusal(gate, header(market, session_key, 999, PRICE), model).reason == "unknown_channel"


def test_ids_that_are_no_channel_leave_nothing_behind(market, session_key, model, channel, gate):
    """A flood of vouchers for channel ids that do not exist costs one read each and no memory."""
    for missing in range(1000, 1020):
        assert refusal(gate, header(market, session_key, missing, PRICE), model).reason == "unknown_channel"
    assert call(gate, header(market, session_key, channel, PRICE), model).calls == 1
    assert set(gate._accounts) == {channel}


def test_a_ceiling_above_the_deposit_pays_up_to_the_deposit(market, session_key, model, open_channel, gate):
    """The contract claims any total up to min(ceiling, deposit): so does the gate serve."""
    channel = open_channel(model, deposit=2 * PRICE)
    generous = header(market, session_key, channel, UINT128_MAX)
    assert [call(gate, generous, model).debited for _ in range(2)] == [PRICE, 2 * PRICE]
    refused = refusal(gate, generous, model)
    assert refused.reason == "deposit_exhausted"
    assert refused.requirements["channel"]["deposit"] == str(2 * PRICE)


def test_a_channel_another_key_would_claim_is_refused(market, carol, session_key, model, open_channel, gate, ledger):
    channel = open_channel(model, receiver=carol.address)
    refused = refusal(gate, header(market, session_key, channel, PRICE), model)
    assert refused.reason == "wrong_receiver"
    assert refused.requirements["receiverAuthorizer"] == gate.receiver_authorizer != carol.address
    assert ledger.entries() == []


def test_vouchers_of_the_wrong_signer_channel_or_asset_are_refused(
    market, alice, bob, session_key, model, channel, open_channel, gate, ledger
):
    by_payer = header(market, alice, channel, PRICE)  # alice pays, but the session key signs
    assert refusal(gate, by_payer, model).reason == "invalid_signature"

    other_channel = open_channel(model)
    signed_for_other = market.channels.sign_voucher(session_key, other_channel, PRICE)
    replayed = Voucher(channel, PRICE, signed_for_other).to_header()
    assert refusal(gate, replayed, model).reason == "invalid_signature"

    # The same signature made malleable (s -> n - s, v flipped) recovers the same key with a bare
    # ecrecover, but the contract refuses it: so does the gate. So are v = 0/1.
    good = market.channels.sign_voucher(session_key, channel, PRICE)
    n = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
    high_s = good[:32] + (n - int.from_bytes(good[32:64], "big")).to_bytes(32, "big") + bytes([55 - good[64]])
    assert refusal(gate, Voucher(channel, PRICE, high_s).to_header(), model).reason == "invalid_signature"
    v01 = good[:64] + bytes([good[64] - 27])
    assert refusal(gate, Voucher(channel, PRICE, v01).to_header(), model).reason == "invalid_signature"

    other_asset = _publish(market, bob, "ipfs://other-model")
    for_other_asset = open_channel(other_asset)
    refused = refusal(gate, header(market, session_key, for_other_asset, PRICE), model)
    assert refused.reason == "wrong_asset"
    assert ledger.entries() == []  # nothing was debited by any refused call
    assert call(gate, header(market, session_key, channel, PRICE), model).calls == 1


def test_channels_near_expiry_are_refused_until_extended(chain, market, alice, session_key, model, open_channel, gate):
    expiring = open_channel(model, seconds=30)  # the gate wants 60 s left
    value = header(market, session_key, expiring, PRICE)
    assert refusal(gate, value, model).reason == "channel_expiring"
    market.channels.extend(alice, expiring, chain.timestamp() + HOUR)
    assert call(gate, value, model).debited == PRICE  # the watcher saw ChannelExtended: re-read


def test_a_top_up_is_seen_through_the_channels_events(market, alice, session_key, model, open_channel, gate, watcher):
    channel = open_channel(model, deposit=PRICE)
    assert call(gate, header(market, session_key, channel, 2 * PRICE), model).calls == 1  # cached now
    beyond = header(market, session_key, channel, 2 * PRICE)
    assert refusal(gate, beyond, model).reason == "deposit_exhausted"
    market.channels.top_up(alice, channel, PRICE)
    assert call(gate, beyond, model).debited == 2 * PRICE


def test_a_slow_watcher_bounds_how_long_a_close_goes_unseen(market, bob, relayer, session_key, model, channel, ledger):
    """With a poll interval, the gate reads the chain at most that often: a close is seen once it elapsed."""
    now = [0.0]
    watcher = ChainWatcher(market, poll_interval=1.0, clock=lambda: now[0])
    gate = ChannelGate(market, ledger, receiver_authorizer=relayer.address, watcher=watcher)
    call(gate, header(market, session_key, channel, 3 * PRICE), model)
    market.channels.close(bob, channel)
    now[0] += 0.5
    assert call(gate, header(market, session_key, channel, 3 * PRICE), model).debited == 2 * PRICE  # in the gap
    now[0] += 0.6
    assert refusal(gate, header(market, session_key, channel, 3 * PRICE), model).reason == "channel_expired"


def test_an_unreachable_chain_view_leaves_the_last_one_in_force(market, session_key, model, channel, gate, watcher):
    call(gate, header(market, session_key, channel, 2 * PRICE), model)  # the channel is cached, the view read

    def unreachable() -> None:
        raise ConnectionError("the RPC node went away")

    watcher._refresh = unreachable
    assert call(gate, header(market, session_key, channel, 2 * PRICE), model).debited == 2 * PRICE
    fresh = ChainWatcher(market, poll_interval=0)
    assert abs(fresh.now() - time.time()) < 5  # never read: the wall clock, nothing else


def test_a_price_change_reaches_the_gate_once_its_cached_asset_expires(market, bob, relayer, model, ledger):
    now = [0.0]
    gate = ChannelGate(market, ledger, receiver_authorizer=relayer.address,
                       assets=AssetCache(market, max_age=2.0, clock=lambda: now[0]))  # fmt: skip
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
    bad = {
        "not base64": "not base64 at all!",
        "not json": base64.b64encode(b"\xff\xfe not json").decode(),
        "a list": encoded([1, 2, 3]),
        "no channel": encoded({"maxClaimableAmount": "1", "signature": good_sig}),
        "channel 0": encoded({"channelId": 0, "maxClaimableAmount": "1", "signature": good_sig}),
        "negative": encoded({"channelId": 1, "maxClaimableAmount": -1, "signature": good_sig}),
        "fraction": encoded({"channelId": 1, "maxClaimableAmount": 1.5, "signature": good_sig}),
        "boolean": encoded({"channelId": True, "maxClaimableAmount": "1", "signature": good_sig}),
        "above uint128": encoded({"channelId": 1, "maxClaimableAmount": str(2**128), "signature": good_sig}),
        "short signature": encoded({"channelId": 1, "maxClaimableAmount": "1", "signature": "0x1234"}),
        "compact signature": encoded({"channelId": 1, "maxClaimableAmount": "1", "signature": "0x" + "11" * 64}),
        "not hex": encoded({"channelId": 1, "maxClaimableAmount": "1", "signature": "zz" * 65}),
        "old format": encoded({"channelId": 1, "cumulativeAmount": "1", "signature": good_sig}),
        "nested": encoded({"channelId": 1, "maxClaimableAmount": "1", "signature": good_sig, "x": [[[[1]]]]}),
        "deep": base64.b64encode(b"[" * 1500).decode(),
        "too long": "A" * 5000,
    }
    for name, value in bad.items():
        with pytest.raises(MalformedPayment) as info:
            gate.reserve(value, PRICE, asset_id=model)
        assert (info.value.status, info.value.code) == (400, "malformed_payment"), name
    messages = {name: _malformed(gate, bad[name], model) for name in ("old format", "compact signature", "nested")}
    assert "old voucher format" in messages["old format"] and "maxClaimableAmount" in messages["old format"]
    assert "EIP-2098" in messages["compact signature"]
    assert "flat JSON object" in messages["nested"]
    round_trip = Voucher(3, UINT128_MAX, bytes(range(65)))
    assert Voucher.from_header(round_trip.to_header()) == round_trip
    urlsafe = round_trip.to_header().replace("+", "-").replace("/", "_").rstrip("=")
    assert Voucher.from_header(urlsafe) == round_trip


def _malformed(gate, value: str, model: int) -> str:
    with pytest.raises(MalformedPayment) as info:
        gate.reserve(value, PRICE, asset_id=model)
    return info.value.detail


# ---------------------------------------------------------------------- settling


def test_settler_runs_in_the_background_and_settles_at_stop(market, session_key, model, channel, gate, ledger, settler):
    call(gate, header(market, session_key, channel, PRICE), model)
    settler.start()
    try:
        deadline = time.monotonic() + 20
        while ledger.entry(channel).claimed < PRICE and time.monotonic() < deadline:
            time.sleep(0.02)
        assert ledger.entry(channel).claimed == PRICE
        for n in range(2, 6):
            call(gate, header(market, session_key, channel, n * PRICE), model)
    finally:
        settler.stop()
    assert ledger.entry(channel).claimed == 5 * PRICE
    assert vault_balance(market, model) == 5 * PRICE


def test_a_settled_channel_is_recorded_final_and_refused(
    market, relayer, session_key, model, channel, gate, ledger, settler
):
    call(gate, header(market, session_key, channel, 2 * PRICE), model)
    market.channels.claim_and_settle(relayer, channel)  # the receiver settles at once, with nothing more claimed
    (settled,) = settler.settle_once()
    assert (settled.outcome, settled.detail) == ("final", "AlreadySettled")
    assert refusal(gate, header(market, session_key, channel, 2 * PRICE), model).reason == "channel_closed"


def test_a_settler_must_hold_the_gates_receiver_key(gate, carol):
    with pytest.raises(ValueError, match="not the gate's receiver"):
        settler_for(gate, carol)


def test_a_ledger_belongs_to_one_channels_contract(tmp_path):
    with VoucherLedger(tmp_path / "l.sqlite3") as ledger:
        ledger.bind("eip155:1/genesis:0xaa/channels:0x01")
        ledger.bind("eip155:1/genesis:0xaa/channels:0x01")
        with pytest.raises(VoucherLedgerError, match="holds the vouchers of eip155:1/genesis:0xaa"):
            ledger.bind("eip155:1/genesis:0xbb/channels:0x01")


def test_the_fast_voucher_hasher_signs_and_recovers_like_eth_account(market, session_key, channel):
    hasher = VoucherHasher(market.channels.domain)
    for ceiling in (0, PRICE, UINT128_MAX):
        signature = hasher.sign(session_key, channel, ceiling)
        assert signature == market.channels.sign_voucher(session_key, channel, ceiling)  # same bytes (RFC 6979)
        assert hasher.recover(Voucher(channel, ceiling, signature)) == session_key.address.lower()
        assert hasher.recover(Voucher(channel + 1, ceiling, signature)) != session_key.address.lower()
    forged = Voucher(channel, PRICE, bytes(64) + b"\x1b")  # r = s = 0
    assert hasher.recover(forged) is None
    with pytest.raises(ValueError, match="uint128"):
        hasher.sign(session_key, channel, UINT128_MAX + 1)


# ---------------------------------------------------------------------- durability

_RECORDER = """
import json, sys, time
from marketplace.payments.channels import VoucherLedger
ledger = VoucherLedger(sys.argv[1])
for line in sys.stdin:
    v = json.loads(line)
    entry = ledger.record(v["channel"], asset_id=v["asset"], price=v["price"], ceiling=v["ceiling"],
                          signature=bytes.fromhex(v["signature"]))
    print(entry.debited, flush=True)  # the call is answered only after the commit
    time.sleep(0.005)  # the work of the call
"""


def test_calls_answered_before_a_kill_9_are_all_claimed(market, relayer, session_key, model, channel, tmp_path):
    total, kill_after = 60, 20
    path = tmp_path / "vouchers.sqlite3"
    ceiling = total * PRICE  # paid ahead: what is claimed is what was answered, not the ceiling
    signature = market.channels.sign_voucher(session_key, channel, ceiling).hex()
    vouchers = "".join(
        json.dumps({"channel": channel, "asset": model, "ceiling": ceiling, "price": PRICE, "signature": signature})
        + "\n"
        for _ in range(total)
    )
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
    assert kill_after * PRICE <= max(answered) < total * PRICE, "the recorder was to be killed mid-stream"

    with VoucherLedger(path) as ledger:  # the restarted server
        entry = ledger.entry(channel)
        # Every answered call is there; at most one more was committed but not yet answered.
        assert max(answered) <= entry.debited <= max(answered) + PRICE
        (settled,) = Settler(market, ledger, relayer).settle_once()
    assert settled.outcome == "claimed"
    assert vault_balance(market, model) == entry.debited >= max(answered)


def test_vouchers_reserved_in_process_and_committed_in_a_batch_are_checked_the_same(
    market, session_key, alice, model, channel, gate, ledger
):
    """The fast engine's path (``reserve_voucher`` without the header, ``commit_many``: one ledger write) makes
    the same checks and leaves the same row as ``reserve``/``commit`` per call; a refused call in a batch is
    not debited and the others stand."""
    hasher = VoucherHasher(market.channels.domain)
    with pytest.raises(ChannelPaymentRequired) as info:  # a voucher the channel's signer did not sign
        gate.reserve_voucher(hasher.voucher(alice, channel, PRICE), PRICE, asset_id=model)
    assert info.value.reason == "invalid_signature"
    reservations = [gate.reserve_voucher(hasher.voucher(session_key, channel, n * PRICE), PRICE, asset_id=model)
                    for n in range(1, 8)]  # fmt: skip
    with pytest.raises(ChannelPaymentRequired) as info:  # the 8th call needs an 8-call voucher
        gate.reserve_voucher(hasher.voucher(session_key, channel, 7 * PRICE), PRICE, asset_id=model)
    assert info.value.reason == "insufficient_voucher"
    commits = ledger.commits
    receipts = gate.commit_many(reservations)
    assert ledger.commits == commits + 1
    assert [r.debited for r in receipts] == [n * PRICE for n in range(1, 8)]
    entry = ledger.entry(channel)
    assert (entry.debited, entry.calls, entry.ceiling) == (7 * PRICE, 7, 7 * PRICE)
    with pytest.raises(ValueError, match="already committed or released"):
        gate.commit_many(reservations[:1])
    # A batch whose channel the settler found final meanwhile: refused, and nothing of it debited.
    late = [gate.reserve_voucher(hasher.voucher(session_key, channel, n * PRICE), PRICE, asset_id=model)
            for n in (8, 9)]  # fmt: skip
    ledger.mark_final(channel, "AlreadySettled")
    with pytest.raises(ChannelPaymentRequired) as info:
        gate.commit_many(late)
    assert info.value.reason == "channel_closed"
    assert (ledger.entry(channel).debited, ledger.entry(channel).calls) == (7 * PRICE, 7)
