"""Stateful property test of metered calls: the vault gets exactly the prices of the calls the gateway answered.

A hypothesis ``RuleBasedStateMachine`` drives the real thing on the embedded chain: the
``PaymentChannels`` contract, a real :class:`VoucherLedger` on disk, a real :class:`ChannelGate`
(reserve, model run, commit or release) and a real :class:`Settler`. The payer chooses every voucher
(exact, ahead, far ahead, behind, a stale one replayed out of order, above the deposit, signed by the
wrong key); models fail; batches of concurrent calls mix failures; the gateway crashes and restarts
on its ledger file, or is replaced by one with an empty data directory (after a graceful stop);
settlement rounds run; the asset's owner closes the channel; the chain's clock jumps past the
expiry (into the claim window, or beyond it — the settler having run meanwhile, as a settler does
every ``settle_interval`` seconds); the payer tops up, and reclaims after the window.

The model predicts every call's outcome (answered, or refused with which reason) and, after each
step, the chain's and the ledger's state. At the end, after a final settlement: the vault received
from the channel exactly the sum of the prices of the answered calls, and the payer got back the
deposit minus that. Profiles (``AGENTMARKET_HYPOTHESIS_PROFILE``): ``ci`` (default, ~40 s) and
``long`` (>= 2,000 steps).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from marketplace.chain import Chain, ContractRevert, connect
from marketplace.chain.deployment import deploy_all
from marketplace.chain.market import Market
from marketplace.chain.records import AssetKind
from marketplace.chain.units import CLAIM_WINDOW, UINT128_MAX
from marketplace.payments.channels import (
    ChainWatcher,
    ChannelGate,
    ChannelPaymentRequired,
    Settler,
    VoucherLedger,
    settler_for,
)
from marketplace.protocol.vouchers import VoucherHasher

PROFILE_ENV = "AGENTMARKET_HYPOTHESIS_PROFILE"
_COMMON: dict[str, Any] = {
    "deadline": None,
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "print_blob": True,
}
_PROFILES = {
    "ci": settings(max_examples=30, stateful_step_count=15, **_COMMON),
    "long": settings(max_examples=150, stateful_step_count=25, **_COMMON),
}
for _name, _settings in _PROFILES.items():
    settings.register_profile(f"agentmarket-channels-{_name}", _settings)
PROFILE = os.environ.get(PROFILE_ENV, "ci")
if PROFILE not in _PROFILES:
    raise ValueError(f"{PROFILE_ENV}={PROFILE!r}: use one of {', '.join(_PROFILES)}")

HOUR = 3600
DAY = 24 * HOUR
MIN_SECONDS_TO_EXPIRY = 60
ADMIN, PAYER, OWNER, SIGNER = 0, 1, 2, 5
RECEIVER = 9  # the gateway's settlement key
MINT = 10**12
PRICES = (1, 7, 10_000, 333_333)  # one model per price (base units)
GAS = 500_000


@dataclass
class World:
    """The module's chain, contracts and models, and the snapshot every example starts from."""

    chain: Chain
    market: Market
    models: dict[int, int]  # price -> asset id
    hasher: VoucherHasher
    snapshot: Any = None
    stats: dict[str, int] = field(default_factory=dict)

    def count(self, what: str) -> None:
        self.stats[what] = self.stats.get(what, 0) + 1


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    chain = connect("embedded")
    try:
        admin, owner = chain.accounts[ADMIN], chain.accounts[OWNER]
        # A day ahead of the wall clock, every block is its parent + 1 second: the chain's clock leads.
        chain.time_travel(int(time.time()) + DAY)
        market = deploy_all(chain, admin).market(chain)
        market.token.mint(admin, chain.accounts[PAYER].address, MINT)
        market.token.approve(chain.accounts[PAYER], market.channels.address, MINT)
        models = {
            price: market.marketplace.publish(owner, kind=AssetKind.MODEL, content_hash=os.urandom(32), uri="m",
                                              price=price, token=market.token.address,
                                              payees=[(owner.address, 10_000)])
            for price in PRICES
        }  # fmt: skip
        world = World(chain, market, models, VoucherHasher(market.channels.domain))
        chain.mine()
        world.snapshot = chain.snapshot()
        yield world
    finally:
        chain.close()


class Refused(Exception):
    """The model's verdict: the gate must refuse with ``reason``."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class ChannelMachine(RuleBasedStateMachine):
    """One channel, one gateway at a time, the payer choosing every voucher; the model predicts each answer."""

    world: World
    directory: Path

    def __init__(self) -> None:
        super().__init__()
        w = self.world
        w.chain.revert(w.snapshot)
        w.snapshot = w.chain.snapshot()
        w.count("examples")
        self.chain, self.market = w.chain, w.market
        self.payer, self.signer = self.chain.accounts[PAYER], self.chain.accounts[SIGNER]
        self.receiver = self.chain.accounts[RECEIVER]
        self.ledger: VoucherLedger | None = None
        self.ledgers = 0
        self.signed: list[tuple[int, str]] = []  # (ceiling, header) the signer signed, for replays
        self.answered = 0  # the sum of the prices of the calls answered (the model's count)
        self.deposits = 0
        self.vault_before = 0
        self.payer_before = 0
        self.expiry = 0
        self.committed_highest = 0  # the highest voucher the current ledger holds (the gate's best at its last commit)
        self._read: tuple[int, Any] | None = None

    # ------------------------------------------------------------------ the gateway

    def _start_gateway(self, fresh: bool) -> None:
        """A gateway on ledger file ``ledgers`` (a new, empty one if ``fresh``); the gate's memory starts empty."""
        if fresh:
            self.ledgers += 1
        path = self.directory / f"example-{self.world.stats['examples']}-{self.ledgers}.sqlite3"
        self.ledger = VoucherLedger(path, synchronous="normal")
        watcher = ChainWatcher(self.market, poll_interval=0)  # what the chain says now: no gap to model
        self.gate = ChannelGate(self.market, self.ledger, receiver_authorizer=self.receiver.address,
                                watcher=watcher, min_seconds_to_expiry=MIN_SECONDS_TO_EXPIRY)  # fmt: skip
        self.settler: Settler = settler_for(self.gate, self.receiver, interval=60)
        entry = self.ledger.entry(self.channel_id)
        if fresh:
            assert entry is None
            self.committed_highest = 0
        else:  # what the crashed gateway had committed, and only that
            assert (entry.ceiling if entry else 0) == self.committed_highest
        self.highest = self.committed_highest  # the best verified voucher the gate holds (memory)

    def _stop_gateway(self, *, graceful: bool) -> None:
        assert self.ledger is not None
        if graceful and not self._past_window():
            self.settler.stop()  # the lifespan's last round: claims every answered call
        self.ledger.close()
        self.ledger = None

    # ------------------------------------------------------------------ chain reads

    def _channel(self):
        """The channel on chain (read again only once a block was mined: an eth_call costs ~50 ms here)."""
        block = self.chain.block_number()
        if self._read is None or self._read[0] != block:
            self._read = (block, self.market.channels.channel(self.channel_id))
        return self._read[1]

    def _head(self) -> int:
        return self.chain.timestamp()

    def _past_window(self) -> bool:
        return self._head() + 1 >= self._channel().claim_deadline

    # ------------------------------------------------------------------ the oracle

    def _expected(self, ceiling: int, by_signer: bool, highest: int) -> None:
        """Raise :class:`Refused` with the gate's reason, or return if the call must be served."""
        channel = self._channel()
        if channel.settled:
            raise Refused("channel_closed")
        now = self._head()  # the gate's clock: the head's time plus the (sub-second) time since it was read
        if channel.expiry <= now:
            raise Refused("channel_expired")
        assert channel.expiry - now > MIN_SECONDS_TO_EXPIRY + 30, "test timing drifted onto the expiry margin"
        if not by_signer:
            raise Refused("invalid_signature")
        needed = self.answered + self.price  # credit claimed on chain is used: the chain never holds more
        if min(max(highest, ceiling), channel.deposit) < needed:
            raise Refused("deposit_exhausted" if channel.deposit < needed else "insufficient_voucher")

    def _voucher(self, data: st.DataObject) -> tuple[int, str, bool]:
        """A voucher the payer chooses: (ceiling, header, signed by the channel's signer)."""
        base = max(self.answered, self._channel().claimed)
        deposit = self._channel().deposit
        kind = data.draw(
            st.sampled_from(["exact", "exact", "ahead", "far ahead", "behind", "stale", "above deposit", "wrong key"]),
            label="voucher",
        )
        if kind == "stale" and self.signed:
            ceiling, header = data.draw(st.sampled_from(self.signed), label="stale voucher")
            return ceiling, header, True
        ceiling = {
            "exact": base + self.price,
            "ahead": base + self.price * data.draw(st.integers(2, 5), label="calls ahead"),
            "far ahead": data.draw(st.sampled_from([deposit, UINT128_MAX]), label="far"),
            "behind": base,
            "above deposit": deposit + self.price,
            "wrong key": base + self.price,
            "stale": base + self.price,
        }[kind]
        ceiling = min(ceiling, UINT128_MAX)
        key = self.payer if kind == "wrong key" else self.signer
        header = self.world.hasher.voucher(key, self.channel_id, ceiling).to_header()
        if key is self.signer:
            self.signed.append((ceiling, header))
        return ceiling, header, key is self.signer

    def _one_call(self, header: str, fails: bool) -> tuple[str, int]:
        """Through the real gate: ('answered' | 'failed' | refusal reason, debited after)."""
        try:
            reservation = self.gate.reserve(header, self.price, asset_id=self.model)
        except ChannelPaymentRequired as exc:
            return exc.reason, 0
        if fails:
            self.gate.release(reservation)
            return "failed", 0
        return "answered", self.gate.commit(reservation).debited

    # ------------------------------------------------------------------ rules

    @initialize(data=st.data())
    def open_channel(self, data: st.DataObject) -> None:
        self.price = data.draw(st.sampled_from(PRICES), label="price")
        self.model = self.world.models[self.price]
        deposit = self.price * data.draw(st.integers(1, 12), label="calls in the deposit") + data.draw(
            st.sampled_from([0, 0, 1, self.price - 1 if self.price > 1 else 0]), label="deposit remainder"
        )
        self.vault_before = self.market.token.balance_of(self.market.marketplace.vault_of(self.model))
        self.payer_before = self.market.token.balance_of(self.payer.address)
        self.channel_id = self.market.channels.open(self.payer, self.model, self.market.token.address, deposit,
                                                    self._head() + HOUR, self.signer.address,
                                                    receiver_authorizer=self.receiver.address)  # fmt: skip
        self.deposits = deposit
        self._start_gateway(fresh=True)

    @rule(data=st.data(), fails=st.booleans())
    def call(self, data: st.DataObject, fails: bool) -> None:
        """One call with a voucher the payer chose; its model answers or fails."""
        self.world.count("rule call")
        ceiling, header, by_signer = self._voucher(data)
        try:
            self._expected(ceiling, by_signer, self.highest)
            expected = "failed" if fails else "answered"
        except Refused as refused:
            expected = refused.reason
        outcome, debited = self._one_call(header, fails)
        assert outcome == expected, f"ceiling {ceiling} (highest {self.highest}): expected {expected}, got {outcome}"
        self.world.count(f"call {outcome}")
        if outcome in ("answered", "failed"):
            self.highest = max(self.highest, ceiling)
        if outcome == "answered":
            self.answered += self.price
            self.committed_highest = self.highest
            assert debited == self.answered

    @rule(data=st.data())
    def concurrent_calls(self, data: st.DataObject) -> None:
        """A batch of concurrent calls, some of whose models fail: whatever the interleaving, only answered
        calls are debited, and no more are served than the credit and the deposit allow."""
        self.world.count("rule concurrent_calls")
        size = data.draw(st.integers(2, 6), label="batch")
        batch = [(*self._voucher(data), data.draw(st.booleans(), label="fails")) for _ in range(size)]
        channel, head = self._channel(), self._head()
        live = not channel.settled and channel.expiry > head
        assert not live or channel.expiry - head > MIN_SECONDS_TO_EXPIRY + 30, "test timing drifted onto the margin"
        # Threads that find another refreshing the chain view use the one it replaces: start from a fresh one.
        self.gate.watcher.refresh()
        start = threading.Barrier(size)

        def one(item: tuple[int, str, bool, bool]) -> str:
            start.wait()
            return self._one_call(item[1], item[3])[0]

        with ThreadPoolExecutor(max_workers=size) as pool:
            outcomes = list(pool.map(one, batch))
        served = [item for item, outcome in zip(batch, outcomes, strict=True) if outcome in ("answered", "failed")]
        for (_ceiling, _header, by_signer, fails), outcome in zip(batch, outcomes, strict=True):
            self.world.count(f"concurrent {outcome}")
            assert outcome in ("answered", "failed", "insufficient_voucher", "deposit_exhausted", "invalid_signature",
                               "channel_expired", "channel_closed"), outcome  # fmt: skip
            if outcome in ("answered", "failed"):
                assert by_signer and live and outcome == ("failed" if fails else "answered")
            if not by_signer:
                assert outcome in ("invalid_signature", "channel_expired", "channel_closed")
        answered = outcomes.count("answered")
        if served:
            best = max(self.highest, *(ceiling for ceiling, *_ in served))
            # every call answered fitted under the best voucher and the deposit
            assert self.answered + answered * self.price <= min(best, channel.deposit)
            self.highest = best
        self.answered += self.price * answered
        if answered:
            entry = self.ledger.entry(self.channel_id)
            assert self.committed_highest <= entry.ceiling <= self.highest  # the gate's best at some commit
            self.committed_highest = entry.ceiling
        if not live:
            assert not served

    def settle(self) -> None:
        """A settlement round: the chain then holds every answered call as claimed (within the window)."""
        self.world.count("rule settle")
        results = self.settler.settle_once()
        if not self._past_window():
            assert self._channel().claimed == self.answered == self._vault_received()
            assert all(r.outcome in ("claimed", "already_claimed") for r in results), results

    def _vault_received(self) -> int:
        return self.market.token.balance_of(self.market.marketplace.vault_of(self.model)) - self.vault_before

    def restart(self) -> None:
        """The gateway crashes (no final settlement) and restarts on its ledger file."""
        self.world.count("rule restart")
        self._stop_gateway(graceful=False)
        self._start_gateway(fresh=False)

    def fresh_ledger(self) -> None:
        """The gateway stops (a last settlement round) and another starts with an empty data directory."""
        self.world.count("rule fresh_ledger")
        self._stop_gateway(graceful=True)
        self._start_gateway(fresh=True)

    def owner_closes(self) -> None:
        self.world.count("rule owner_closes")
        channel = self._channel()
        try:
            self.market.channels.close(self.chain.accounts[OWNER], self.channel_id)
        except ContractRevert as exc:
            assert channel.settled or channel.expiry <= self._head() + 1, exc
            assert exc.error == ("AlreadySettled" if channel.settled else "ChannelExpired")
            return
        assert self._channel().expiry == self._head()

    def top_up(self, data: st.DataObject) -> None:
        self.world.count("rule top_up")
        amount = self.price * data.draw(st.integers(1, 4), label="top-up calls")
        channel = self._channel()
        try:
            self.market.channels.top_up(self.payer, self.channel_id, amount)
        except ContractRevert as exc:
            assert channel.settled or channel.expiry <= self._head() + 1, exc
            return
        self.deposits += amount

    def time_travel(self, where: str, data: st.DataObject) -> None:
        """The chain's clock jumps past the expiry. The settler runs every settle_interval (well within the
        window), so before the clock passes the claim deadline it has had its round."""
        self.world.count(f"rule time_travel {where}")
        channel, head = self._channel(), self._head()
        if where == "into the claim window":
            target = channel.expiry + data.draw(st.integers(60, CLAIM_WINDOW // 2), label="seconds past expiry")
        else:
            if head + 1 < channel.claim_deadline and self.ledger is not None:
                self.settler.settle_once()
            target = channel.claim_deadline + data.draw(st.integers(10, 3 * HOUR), label="seconds past the window")
        if target > head + 1:
            self.chain.time_travel(target)

    def reclaim(self) -> None:
        """Anyone returns the unclaimed deposit to the payer, once the claim window is over."""
        self.world.count("rule reclaim")
        channel = self._channel()
        try:
            self.market.channels.reclaim(self.chain.accounts[ADMIN], self.channel_id)
        except ContractRevert as exc:
            expected = "AlreadySettled" if channel.settled else "ReclaimTooEarly"
            assert exc.error == expected, exc
            assert channel.settled or not self._past_window()
            return
        assert channel.claimed == self.answered  # the settler had claimed every answered call in time

    @rule(event=st.sampled_from(["settle", "settle", "restart", "fresh ledger"]))
    def gateway_event(self, event: str) -> None:
        """Something happens to the gateway: a settlement round, a crash and restart, an empty ledger."""
        {"settle": self.settle, "restart": self.restart, "fresh ledger": self.fresh_ledger}[event]()

    @rule(event=st.sampled_from(["owner closes", "top up", "top up", "into the claim window", "past the claim window",
                                 "reclaim"]), data=st.data())  # fmt: skip
    def chain_event(self, event: str, data: st.DataObject) -> None:
        """Something happens on chain: the owner's close, a top-up, the clock passing the expiry, a reclaim."""
        if event == "owner closes":
            self.owner_closes()
        elif event == "top up":
            self.top_up(data)
        elif event == "reclaim":
            self.reclaim()
        else:
            self.time_travel(event, data)

    # ------------------------------------------------------------------ invariants

    @invariant()
    def books_agree(self) -> None:
        if not hasattr(self, "channel_id"):
            return
        channel = self._channel()
        assert channel.claimed <= self.answered <= channel.deposit == self.deposits
        entry = self.ledger.entry(self.channel_id) if self.ledger else None
        if entry is not None:
            assert entry.claimed <= entry.debited <= max(entry.ceiling, entry.claimed)
            assert entry.debited == self.answered  # every answered call, once; failed ones never
            assert channel.claimed <= entry.debited <= channel.deposit
        else:
            assert self.answered == channel.claimed  # an empty ledger started after everything was claimed

    def teardown(self) -> None:
        if not hasattr(self, "channel_id") or self.ledger is None:
            return
        self._stop_gateway(graceful=True)  # the final settlement
        assert self._vault_received() == self._channel().claimed == self.answered
        if not self._channel().settled:
            deadline = self._channel().claim_deadline
            if self._head() < deadline:
                self.chain.time_travel(deadline)
            self.market.channels.reclaim(self.chain.accounts[ADMIN], self.channel_id)
        refund = self.market.token.balance_of(self.payer.address) - (self.payer_before - self.deposits)
        assert refund == self.deposits - self.answered
        self.world.count("steps")  # per example: a pulse for long runs


@pytest.mark.backend("embedded")  # a chain of its own: connect("embedded")
@pytest.mark.timeout(0 if PROFILE == "long" else 900)
def test_the_vault_gets_exactly_the_answered_calls(world: World, tmp_path: Path) -> None:
    ChannelMachine.world = world
    ChannelMachine.directory = tmp_path
    world.stats.clear()
    started = time.monotonic()
    run_state_machine_as_test(ChannelMachine, settings=settings.get_profile(f"agentmarket-channels-{PROFILE}"))
    elapsed = time.monotonic() - started
    steps = sum(count for name, count in world.stats.items() if name.startswith("rule "))
    print(f"\n[{PROFILE}] {world.stats.get('examples', 0)} examples, {steps} steps in {elapsed:.1f} s")
    for name, count in sorted(world.stats.items()):
        print(f"  {name}: {count}")
    assert world.stats.get("call answered", 0) > 0 and world.stats.get("concurrent answered", 0) > 0
