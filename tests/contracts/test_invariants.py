"""Stateful property test: random publishing, buying, releasing and channel traffic never loses money.

A hypothesis ``RuleBasedStateMachine`` drives the real contracts on the embedded chain with six
actors (dev accounts 1..6) and two TestUSD tokens. It keeps a ledger — a Python model of every
balance, every vault's releases, every channel and every license — predicts each transaction's
outcome (including the exact revert it must raise) and compares the chain to the model.

After every step these invariants are checked:

* for each token, total supply == the balances of every dev account, every vault, PaymentChannels
  and the Marketplace (which holds nothing): every unit is accounted for, none went elsewhere;
* for every vault and token, total released <= total received, the payees' releases add up to
  the total released, and no payee ever got more than floor(total received x share / 10^8);
* for every channel, claimed <= deposit, and PaymentChannels holds, per token, exactly the sum of
  (deposit - claimed) over the open channels;
* every license bought shows in ``hasAccess`` (licenses here are perpetual), and only those.

The chain is slow to read (~7 ms a call), so a step re-reads what it may have changed — every
address in a Transfer event of its receipts, every vault that paid out, every channel and license
it touched, and whatever the model says moved — and the invariants are evaluated over those fresh
reads plus earlier reads of everything else. A Transfer to or from an address outside the
accounted set fails at once. The ``spot_check`` rule, drawn like any other, re-reads a token's
balances and supply, a vault, all channels, an asset's licenses, or everything.

The chain is deployed once per module with a small catalog (a two-level royalty lineage on token
A, a one-level one on token B, a few licenses and two open channels) and snapshotted; every example
reverts to that snapshot, so even a short example can buy, release royalties and claim vouchers.
Chain time is kept a day ahead of the wall clock, so a block's timestamp is its parent's + 1 and
channel expiries (always half an hour off the hour grid time moves on) are never ambiguous.

Profiles: ``AGENTMARKET_HYPOTHESIS_PROFILE=ci`` (default) or ``long``; see ``_PROFILES``.
"""

from __future__ import annotations

import copy
import hashlib
import os
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test
from web3.types import TxReceipt

from marketplace.chain import Chain, ContractRevert, connect
from marketplace.chain.contracts import RevenueVaultContract, TestUSD
from marketplace.chain.deployment import deploy_all
from marketplace.chain.market import Market
from marketplace.chain.records import AssetKind, Channel
from marketplace.chain.units import BPS, CLAIM_WINDOW, PERPETUAL, TOTAL_SHARES

# ---------------------------------------------------------------------- profiles

PROFILE_ENV = "AGENTMARKET_HYPOTHESIS_PROFILE"
_COMMON: dict[str, Any] = {
    "deadline": None,  # every step is several chain calls
    "suppress_health_check": [HealthCheck.too_slow, HealthCheck.data_too_large],
    "print_blob": True,
}
# A step costs ~15-250 ms on the embedded chain (a transaction ~30 ms, a read ~7 ms, a revert to
# the snapshot ~20 ms), ~90 ms on average. The CI profile keeps 200 examples and pays for them with
# short ones: 4 steps each, ~850 steps in ~75 s on an idle 2-core machine (6 steps would be ~110 s).
# Short examples still reach deep state because each starts from the snapshot's catalog (a
# two-level lineage, licenses, open channels with a claimed voucher); long interleavings (channels
# opened, topped up, claimed, expired and reclaimed in one run; lineages up to six levels deep) are
# the long profile's job. Hypothesis ends an example early once its choice buffer is 80% full, so
# a 50-step example averages ~42 steps: 200 x 50 ran 8,820 steps in 18 min, hence 250 examples
# for >= 10,000 steps (~22 min).
_PROFILES = {
    "ci": settings(max_examples=200, stateful_step_count=4, **_COMMON),
    "long": settings(max_examples=250, stateful_step_count=50, **_COMMON),
}
for _name, _settings in _PROFILES.items():
    # Namespaced: hypothesis has a built-in "ci" profile other tests may rely on.
    settings.register_profile(f"agentmarket-{_name}", _settings)
PROFILE = os.environ.get(PROFILE_ENV, "ci")
if PROFILE not in _PROFILES:
    raise ValueError(f"{PROFILE_ENV}={PROFILE!r}: use one of {', '.join(_PROFILES)}")

# ---------------------------------------------------------------------- constants

ADMIN = 0  # deployer, token admin, fee treasury
ACTORS = (1, 2, 3, 4, 5, 6)
RELAYER = 7
SESSION_KEYS = (8, 9)  # sign vouchers only; never hold tokens
CALLERS = (ADMIN, *ACTORS, RELAYER)
TOKENS = (0, 1)
TOKEN_NAMES = ("tUSD-A", "tUSD-B")

MINT = 10**12  # per actor and token: never runs out within an example
HOUR = 3600
DAY = 24 * HOUR
EXPIRY_MARGIN = 600  # seconds an expiry must stay away from the head for its check to be exact
CLOSED_MARGIN = 100  # the same for the claim deadline of a channel closed on the grid (15 minutes off it)

PROGRESS_EVERY = 25  # examples between progress lines

GAS = 600_000
PUBLISH_GAS = 3_000_000

TRANSFER_TOPIC = keccak(text="Transfer(address,address,uint256)")

ACTOR = st.sampled_from(ACTORS)
CALLER = st.sampled_from(CALLERS)
PRICES = st.one_of(st.integers(1, 1_000), st.integers(1, 100_000_000), st.just(0))
DEPOSITS = st.one_of(st.integers(1, 20_000_000), st.integers(1, 100))


def _splits(count: int) -> st.SearchStrategy[list[int]]:
    """``count`` positive bps amounts adding up to 10,000."""
    return st.lists(st.integers(1, BPS - 1), min_size=count - 1, max_size=count - 1, unique=True).map(
        lambda cuts: [hi - lo for lo, hi in zip([0, *sorted(cuts)], [*sorted(cuts), BPS], strict=True)]
    )


# ---------------------------------------------------------------------- model


@dataclass
class AssetModel:
    """An asset as the model knows it."""

    asset_id: int
    token: int
    owner: int
    price: int
    vault: str
    shares: dict[str, int]  # vault payee -> shares of TOTAL_SHARES (parents' vaults and treasury included)
    parents: tuple[int, ...]
    depth: int  # 0 for a root, else 1 + the deepest parent


@dataclass
class ChannelModel:
    """A payment channel as the model knows it."""

    channel_id: int
    asset_id: int
    token: int
    payer: int
    signer: int
    deposit: int
    expiry: int
    receiver: int  # the receiver authorizer: the only account that may claim
    claimed: int = 0
    settled: bool = False
    closed_at: int | None = None  # the block time of the owner's close (then the expiry)
    vouchers: list[tuple[int, bytes]] = field(default_factory=list)  # (ceiling, signature) by the signer


@dataclass
class Ledger:
    """What the chain must hold, and what changed since the last check."""

    balances: dict[tuple[int, str], int]  # (token, holder) -> balance
    assets: dict[int, AssetModel] = field(default_factory=dict)
    vault_asset: dict[str, int] = field(default_factory=dict)
    channels: dict[int, ChannelModel] = field(default_factory=dict)
    released: dict[tuple[str, int, str], int] = field(default_factory=dict)  # (vault, token, payee)
    total_released: dict[tuple[str, int], int] = field(default_factory=dict)  # (vault, token)
    licenses: set[tuple[int, str]] = field(default_factory=set)
    touched_balances: set[tuple[int, str]] = field(default_factory=set)
    touched_totals: set[tuple[str, int]] = field(default_factory=set)
    touched_released: set[tuple[str, int, str]] = field(default_factory=set)
    touched_channels: set[int] = field(default_factory=set)
    touched_licenses: set[tuple[int, str]] = field(default_factory=set)
    touched_supply: set[int] = field(default_factory=set)

    def transfer(self, token: int, sender: str, to: str, amount: int) -> None:
        assert self.balances[(token, sender)] >= amount, "model error: an overdraft was predicted to succeed"
        self.balances[(token, sender)] -= amount
        self.balances[(token, to)] += amount
        self.touched_balances |= {(token, sender), (token, to)}

    def total_received(self, vault: str, token: int) -> int:
        return self.balances[(token, vault)] + self.total_released.get((vault, token), 0)

    def claimable(self, asset: AssetModel, token: int, payee: str) -> int:
        due = self.total_received(asset.vault, token) * asset.shares.get(payee, 0) // TOTAL_SHARES
        return max(due - self.released.get((asset.vault, token, payee), 0), 0)

    def release(self, vault: str, token: int, payee: str, amount: int) -> None:
        self.released[(vault, token, payee)] = self.released.get((vault, token, payee), 0) + amount
        self.total_released[(vault, token)] = self.total_released.get((vault, token), 0) + amount
        self.touched_released.add((vault, token, payee))
        self.touched_totals.add((vault, token))
        self.transfer(token, vault, payee, amount)


@dataclass
class Observed:
    """The chain state as last read (each value was equal to the model when read)."""

    balances: dict[tuple[int, str], int]  # keys: every holder that may hold tokens
    supply: list[int] = field(default_factory=list)
    released: dict[tuple[str, int, str], int] = field(default_factory=dict)
    total_released: dict[tuple[str, int], int] = field(default_factory=dict)
    channels: dict[int, Channel] = field(default_factory=dict)


@dataclass
class World:
    """The module's chain and contracts, and the snapshot every example starts from."""

    chain: Chain
    market: Market
    tokens: tuple[TestUSD, TestUSD]
    accounts: list[LocalAccount]
    fee_bps: int
    supply: list[int] = field(default_factory=list)
    snapshot: Any = None
    base_ledger: Ledger | None = None
    base_observed: Observed | None = None
    vaults: dict[str, RevenueVaultContract] = field(default_factory=dict)
    stats: Counter[str] = field(default_factory=Counter)
    depths: Counter[int] = field(default_factory=Counter)
    started: float = 0.0

    @property
    def token_index(self) -> dict[str, int]:
        return {token.address: i for i, token in enumerate(self.tokens)}

    def address(self, account: int) -> str:
        return self.accounts[account].address

    def vault(self, address: str) -> RevenueVaultContract:
        if address not in self.vaults:  # clone addresses depend only on the asset id: valid across examples
            self.vaults[address] = RevenueVaultContract(self.chain, address)
        return self.vaults[address]


# ---------------------------------------------------------------------- the harness


class Harness:
    """Operations on the contracts with the model's prediction of each, and the checks."""

    def __init__(self, world: World, ledger: Ledger, observed: Observed) -> None:
        self.w = world
        self.ledger = ledger
        self.observed = observed
        self.transfers: list[tuple[int, str, str]] = []  # Transfer events since the last check
        self._token_index = world.token_index

    # ------------------------------------------------------------------ chain access

    def read(self, fn: Any) -> Any:
        # An explicit sender spares eth-tester a guess of the caller (a third of a call's time).
        return self.w.chain.call(fn, sender=self.w.address(ADMIN))

    def head(self) -> int:
        return self.w.chain.timestamp()

    def note(self, receipt: TxReceipt) -> None:
        for log in receipt["logs"]:
            token = self._token_index.get(to_checksum_address(log["address"]))
            if token is None or not log["topics"] or bytes(log["topics"][0]) != TRANSFER_TOPIC:
                continue
            sender, to = (to_checksum_address(bytes(topic)[-20:]) for topic in log["topics"][1:3])
            self.transfers.append((token, sender, to))

    def send(self, fn: Any, sender: int, gas: int = GAS) -> TxReceipt:
        receipt = self.w.chain.send(fn, self.w.accounts[sender], gas=gas)
        self.note(receipt)
        return receipt

    def attempt(
        self, expected: str | None, action: Callable[[int | None], TxReceipt], gas: int = GAS
    ) -> TxReceipt | None:
        """Run ``action(gas)``; it must succeed (``expected`` None) or revert with error ``expected``.

        A transaction expected to revert goes without explicit gas: its gas estimate reverts and
        nothing is mined (a third of the cost of mining a failed transaction and replaying it).
        Should it succeed after all, it is sent with the estimate and the step fails.
        """
        try:
            receipt = action(gas if expected is None else None)
        except ContractRevert as exc:
            if exc.error != expected:
                raise AssertionError(f"expected {expected or 'success'}, but the transaction {exc}") from exc
            self.w.stats[f"revert {expected}"] += 1
            return None
        if expected is not None:
            raise AssertionError(f"expected a revert with {expected}, but the transaction succeeded")
        self.note(receipt)
        return receipt

    def approve(self, owner: int, token: int, spender: str, amount: int) -> None:
        self.send(self.w.tokens[token].contract.functions.approve(spender, amount), owner)

    # ------------------------------------------------------------------ marketplace

    def publish(
        self,
        owner: int,
        token: int,
        price: int,
        payees: list[tuple[int, int]],
        parents: list[tuple[int, int]],
        *,
        kind: AssetKind = AssetKind.DATASET,
        expected: str | None = None,
    ) -> int | None:
        led, w = self.ledger, self.w
        marketplace = w.market.marketplace
        serial = len(led.assets) + 1
        fn = marketplace.contract.functions.publish(
            int(kind),
            hashlib.sha256(f"asset {serial}".encode()).digest(),
            f"ipfs://asset-{serial}",
            price,
            w.tokens[token].address,
            0,
            [w.address(p) for p, _ in payees],
            [bps for _, bps in payees],
            [p for p, _ in parents],
            [bps for _, bps in parents],
            True,
        )
        receipt = self.attempt(expected, lambda gas: w.chain.send(fn, w.accounts[owner], gas=gas), PUBLISH_GAS)
        if receipt is None:
            return None
        (event,) = w.chain.events(marketplace.contract, receipt, "AssetPublished")
        asset_id, vault = event["assetId"], event["vault"]
        assert asset_id == serial

        cut = BPS - w.fee_bps
        shares: Counter[str] = Counter()
        for payee, bps in payees:
            shares[w.address(payee)] += bps * cut
        for parent, bps in parents:
            shares[led.assets[parent].vault] += bps * cut
        if w.fee_bps:
            shares[w.address(ADMIN)] += w.fee_bps * BPS
        depth = 1 + max(led.assets[p].depth for p, _ in parents) if parents else 0
        asset = AssetModel(asset_id, token, owner, price, vault, dict(shares), tuple(p for p, _ in parents), depth)
        led.assets[asset_id] = asset
        led.vault_asset[vault] = asset_id

        on_chain = marketplace.asset(asset_id)
        assert (on_chain.owner, on_chain.token, on_chain.price, on_chain.vault, on_chain.parents) == (
            w.address(owner),
            w.tokens[token].address,
            price,
            vault,
            asset.parents,
        )
        assert on_chain.license_duration == 0
        assert w.vault(vault).payees() == asset.shares
        for t in TOKENS:  # a new holder: read its balances (zero unless something was sent there before)
            led.balances[(t, vault)] = 0
            self.observed.balances[(t, vault)] = 0
            led.touched_balances.add((t, vault))
        return asset_id

    def buy(self, asset_id: int, buyer: int, mode: str, relayer: int = RELAYER) -> None:
        """``mode``: approve | authorization | short_allowance | low_max."""
        led, w = self.ledger, self.w
        asset = led.assets[asset_id]
        marketplace = w.market.marketplace
        account = w.accounts[buyer]
        licensed = (asset_id, account.address) in led.licenses
        led.touched_licenses.add((asset_id, account.address))
        if mode == "authorization":
            auth = marketplace.sign_purchase(account, asset_id, valid_before=self.head() + 30 * DAY)
            expected = "AlreadyLicensed" if licensed else None
            receipt = self.attempt(
                expected, lambda gas: marketplace.buy_with_authorization(auth, w.accounts[relayer], gas=gas)
            )
        else:
            short = asset.price > 0 and mode == "short_allowance"
            max_price = asset.price - 1 if asset.price > 0 and mode == "low_max" else asset.price
            if max_price < asset.price:
                expected = "PriceAboveMax"
            elif licensed:
                expected = "AlreadyLicensed"
            else:  # the purchase reaches the transfer: approve first (only then does it matter)
                self.approve(buyer, asset.token, marketplace.address, asset.price - 1 if short else asset.price)
                expected = "ERC20InsufficientAllowance" if short else None
            receipt = self.attempt(expected, lambda gas: marketplace.buy(account, asset_id, max_price, gas=gas))
        if receipt is not None:
            led.transfer(asset.token, account.address, asset.vault, asset.price)
            led.licenses.add((asset_id, account.address))
            assert marketplace.license(asset_id, account.address).expires_at == PERPETUAL

    def release(self, asset_id: int, token: int, payee: str, caller: int) -> None:
        led, w = self.ledger, self.w
        asset = led.assets[asset_id]
        amount = led.claimable(asset, token, payee)
        expected = None if amount else "NothingToRelease" if asset.shares.get(payee) else "NotAPayee"
        vault = w.vault(asset.vault)
        receipt = self.attempt(
            expected, lambda gas: vault.release(w.accounts[caller], w.tokens[token].address, payee, gas=gas)
        )
        if receipt is not None:
            led.release(asset.vault, token, payee, amount)
            self.w.stats[f"release depth {asset.depth}"] += 1

    # ------------------------------------------------------------------ channels

    def expired(self, channel: ChannelModel) -> bool:
        """Whether the next block is at or past the expiry (the head is never near an expiry it did not set)."""
        if channel.closed_at is not None:
            return True  # the close set the expiry to its own block's time: every later block is past it
        head = self.head()
        assert abs(channel.expiry - head) > EXPIRY_MARGIN, "test timing drifted onto a channel expiry"
        return head >= channel.expiry

    def claim_window_over(self, channel: ChannelModel) -> bool:
        """Whether the next block is at or past expiry + CLAIM_WINDOW (the head is never near it)."""
        head, deadline = self.head(), channel.expiry + CLAIM_WINDOW
        # A close lands on the hour grid time moves on: its deadline is 15 minutes off it, not 30.
        margin = EXPIRY_MARGIN if channel.closed_at is None else CLOSED_MARGIN
        assert abs(deadline - head) > margin, "test timing drifted onto a claim deadline"
        return head >= deadline

    def open_channel(
        self,
        payer: int,
        asset_id: int,
        deposit: int,
        hours: int,
        signer: int,
        receiver: int = RELAYER,
        *,
        wrong_token: bool = False,
    ) -> int | None:
        led, w = self.ledger, self.w
        asset = led.assets[asset_id]
        channels = w.market.channels
        token = 1 - asset.token if wrong_token else asset.token
        if not wrong_token:
            self.approve(payer, token, channels.address, deposit)
        expiry = self.head() + hours * HOUR + HOUR // 2  # half an hour off the grid time moves on
        fn = channels.contract.functions.open(asset_id, w.tokens[token].address, deposit, expiry, w.address(signer),
                                              w.address(receiver))  # fmt: skip
        receipt = self.attempt(
            "TokenMismatch" if wrong_token else None, lambda gas: w.chain.send(fn, w.accounts[payer], gas=gas)
        )
        if receipt is None:
            return None
        (event,) = w.chain.events(channels.contract, receipt, "ChannelOpened")
        channel_id = len(led.channels) + 1
        assert event["channelId"] == channel_id
        led.channels[channel_id] = ChannelModel(channel_id, asset_id, token, payer, signer, deposit, expiry, receiver)
        led.touched_channels.add(channel_id)
        led.transfer(token, w.address(payer), channels.address, deposit)
        return channel_id

    def _claim_outcome(
        self, channel: ChannelModel, caller: int, ceiling: int, total: int, signed_by_signer: bool
    ) -> str | None:
        """The contract's verdict on ``claim`` / ``claimAndSettle``, in its order of checks."""
        if channel.settled:
            return "AlreadySettled"
        if caller != channel.receiver:
            return "NotReceiverAuthorizer"
        if self.claim_window_over(channel):
            return "ClaimWindowOver"
        if total <= channel.claimed:
            return "ClaimNotIncreasing"
        if total > ceiling:
            return "ClaimAboveVoucher"
        if total > channel.deposit:
            return "ClaimExceedsDeposit"
        return None if signed_by_signer else "InvalidVoucherSignature"

    def _before_expiry_outcome(self, channel: ChannelModel) -> str | None:
        if channel.settled:
            return "AlreadySettled"
        return "ChannelExpired" if self.expired(channel) else None

    def _pay_claim(self, channel: ChannelModel, total: int) -> None:
        vault = self.ledger.assets[channel.asset_id].vault
        self.ledger.transfer(channel.token, self.w.market.channels.address, vault, total - channel.claimed)
        channel.claimed = total

    def _settle(self, channel: ChannelModel) -> None:
        channel.settled = True
        refund = channel.deposit - channel.claimed
        self.ledger.transfer(channel.token, self.w.market.channels.address, self.w.address(channel.payer), refund)

    def sign_voucher(self, channel: ChannelModel, ceiling: int, signing: int) -> bytes:
        signature = self.w.market.channels.sign_voucher(self.w.accounts[signing], channel.channel_id, ceiling)
        if signing == channel.signer:
            channel.vouchers.append((ceiling, signature))
        return signature

    def claim(
        self, channel_id: int, ceiling: int, total: int, signature: bytes, signed_by_signer: bool, caller: int
    ) -> None:
        led, w = self.ledger, self.w
        channel = led.channels[channel_id]
        led.touched_channels.add(channel_id)
        expected = self._claim_outcome(channel, caller, ceiling, total, signed_by_signer)
        fn = w.market.channels.contract.functions.claim(channel_id, ceiling, total, signature)
        if self.attempt(expected, lambda gas: w.chain.send(fn, w.accounts[caller], gas=gas)) is not None:
            self._pay_claim(channel, total)

    def claim_and_settle(
        self, channel_id: int, ceiling: int, total: int, signature: bytes, signed_by_signer: bool, caller: int
    ) -> None:
        """The receiver's final claim (none when ``total`` adds nothing) and the rest back to the payer."""
        led, w = self.ledger, self.w
        channel = led.channels[channel_id]
        led.touched_channels.add(channel_id)
        final_claim = total > channel.claimed
        expected = self._claim_outcome(channel, caller, ceiling, total, signed_by_signer)
        if expected == "ClaimNotIncreasing" and not final_claim:
            expected = None  # nothing more to claim: it only settles
        fn = w.market.channels.contract.functions.claimAndSettle(channel_id, ceiling, total, signature)
        if self.attempt(expected, lambda gas: w.chain.send(fn, w.accounts[caller], gas=gas)) is not None:
            if final_claim:
                self._pay_claim(channel, total)
            self._settle(channel)

    def top_up(self, channel_id: int, caller: int, amount: int) -> None:
        led, w = self.ledger, self.w
        channel = led.channels[channel_id]
        led.touched_channels.add(channel_id)
        expected = self._before_expiry_outcome(channel)
        if expected is None and caller != channel.payer:
            expected = "NotPayer"
        if expected is None and amount == 0:
            expected = "InvalidAmount"
        if expected is None:
            self.approve(caller, channel.token, w.market.channels.address, amount)
        fn = w.market.channels.contract.functions.topUp(channel_id, amount)
        if self.attempt(expected, lambda gas: w.chain.send(fn, w.accounts[caller], gas=gas)) is not None:
            channel.deposit += amount
            led.transfer(channel.token, w.address(caller), w.market.channels.address, amount)

    def reclaim(self, channel_id: int, caller: int) -> None:
        led, w = self.ledger, self.w
        channel = led.channels[channel_id]
        led.touched_channels.add(channel_id)
        if channel.settled:
            expected: str | None = "AlreadySettled"
        else:
            expected = None if self.claim_window_over(channel) else "ReclaimTooEarly"
        fn = w.market.channels.contract.functions.reclaim(channel_id)
        if self.attempt(expected, lambda gas: w.chain.send(fn, w.accounts[caller], gas=gas)) is not None:
            self._settle(channel)

    def close(self, channel_id: int, caller: int) -> None:
        """The asset owner ends service: the expiry becomes the close's block time; nothing moves."""
        led, w = self.ledger, self.w
        channel = led.channels[channel_id]
        led.touched_channels.add(channel_id)
        expected = self._before_expiry_outcome(channel)
        if expected is None and caller != led.assets[channel.asset_id].owner:
            expected = "NotChannelAssetOwner"
        fn = w.market.channels.contract.functions.close(channel_id)
        receipt = self.attempt(expected, lambda gas: w.chain.send(fn, w.accounts[caller], gas=gas))
        if receipt is not None:
            channel.closed_at = channel.expiry = w.chain.w3.eth.get_block(receipt["blockNumber"])["timestamp"]

    # ------------------------------------------------------------------ checks

    def touch_everything(self) -> None:
        """Make the next check re-read the whole state, not only what changed."""
        for token in TOKENS:
            self.touch_token(token)
        for asset_id in self.ledger.assets:
            self.touch_vault(asset_id)
        self.touch_channels()
        for asset_id in self.ledger.assets:
            self.touch_licenses(asset_id)

    def touch_token(self, token: int) -> None:
        """Re-read ``token``'s supply and every balance of it."""
        self.ledger.touched_balances |= {key for key in self.observed.balances if key[0] == token}
        self.ledger.touched_supply.add(token)

    def touch_vault(self, asset_id: int) -> None:
        """Re-read one vault: its balances, totals and every payee's releases of its token."""
        led = self.ledger
        asset = led.assets[asset_id]
        led.touched_balances |= {(t, asset.vault) for t in TOKENS}
        led.touched_totals |= {(asset.vault, t) for t in TOKENS}
        led.touched_released |= {(asset.vault, asset.token, payee) for payee in asset.shares}

    def touch_channels(self) -> None:
        """Re-read every channel."""
        self.ledger.touched_channels |= set(self.ledger.channels)

    def touch_licenses(self, asset_id: int) -> None:
        """Re-read the access of every actor, relayer and session key to one asset."""
        accounts = (*CALLERS, *SESSION_KEYS)
        self.ledger.touched_licenses |= {(asset_id, self.w.address(a)) for a in accounts}

    def refresh(self) -> None:
        """Re-read what may have changed; each value must equal the model's."""
        led, obs, w = self.ledger, self.observed, self.w
        balances, totals, released = set(led.touched_balances), set(led.touched_totals), set(led.touched_released)
        for token, sender, to in self.transfers:
            for holder in (sender, to):
                assert (token, holder) in obs.balances, (
                    f"{TOKEN_NAMES[token]} moved {'from' if holder == sender else 'to'} {holder}, "
                    "an address outside the accounted set"
                )
                balances.add((token, holder))
            if sender in led.vault_asset:
                released.add((sender, token, to))
        totals |= {(vault, token) for vault, token, _ in released}

        for token, holder in sorted(balances):
            value = self.read(w.tokens[token].contract.functions.balanceOf(holder))
            expected = led.balances[(token, holder)]
            assert value == expected, f"{TOKEN_NAMES[token]} balance of {holder}: chain {value}, model {expected}"
            obs.balances[(token, holder)] = value
        for vault, token in sorted(totals):
            value = self.read(w.vault(vault).contract.functions.totalReleased(w.tokens[token].address))
            expected = led.total_released.get((vault, token), 0)
            assert value == expected, f"vault {vault} released {value} {TOKEN_NAMES[token]}, model {expected}"
            obs.total_released[(vault, token)] = value
        for vault, token, payee in sorted(released):
            value = self.read(w.vault(vault).contract.functions.released(w.tokens[token].address, payee))
            expected = led.released.get((vault, token, payee), 0)
            assert value == expected, f"vault {vault} released {value} to {payee}, model {expected}"
            obs.released[(vault, token, payee)] = value
        for channel_id in sorted(led.touched_channels):
            raw = self.read(w.market.channels.contract.functions.getChannel(channel_id))
            seen = Channel(channel_id, *raw)
            model = led.channels[channel_id]
            assert seen == Channel(
                channel_id,
                w.address(model.payer),
                model.expiry,
                model.settled,
                w.address(model.signer),
                model.asset_id,
                w.address(model.receiver),
                w.tokens[model.token].address,
                model.deposit,
                model.claimed,
            ), f"channel {channel_id}: chain {seen}, model {model}"
            obs.channels[channel_id] = seen
        marketplace = w.market.marketplace.contract.functions
        for asset_id, account in sorted(led.touched_licenses):
            licensed = (asset_id, account) in led.licenses
            access = self.read(marketplace.hasAccess(asset_id, account))
            assert access == licensed, f"asset {asset_id}: {account} has access {access}, licensed {licensed}"
        for token in sorted(led.touched_supply):
            obs.supply[token] = self.read(w.tokens[token].contract.functions.totalSupply())
            assert obs.supply[token] == w.supply[token], f"{TOKEN_NAMES[token]} supply changed to {obs.supply[token]}"

        self.transfers.clear()
        for touched in (
            led.touched_balances,
            led.touched_totals,
            led.touched_released,
            led.touched_channels,
            led.touched_licenses,
            led.touched_supply,
        ):
            touched.clear()

    def check(self) -> None:
        """Refresh, then check the invariants over the chain state as read."""
        self.refresh()
        led, obs, w = self.ledger, self.observed, self.w
        for token in TOKENS:
            contract = w.tokens[token]
            supply = obs.supply[token]
            held = sum(value for (t, _), value in obs.balances.items() if t == token)
            assert held == supply, f"{TOKEN_NAMES[token]}: supply {supply} but accounted balances hold {held}"
            assert obs.balances[(token, w.market.marketplace.address)] == 0, "the Marketplace kept tokens"
            in_channels = sum(
                c.deposit - c.claimed for c in obs.channels.values() if c.token == contract.address and not c.settled
            )
            held_by_channels = obs.balances[(token, w.market.channels.address)]
            assert held_by_channels == in_channels, (
                f"PaymentChannels holds {held_by_channels} {TOKEN_NAMES[token]}, open channels {in_channels}"
            )
        for channel in obs.channels.values():
            assert channel.claimed <= channel.deposit, channel
        for asset in led.assets.values():
            for token in TOKENS:
                total_released = obs.total_released.get((asset.vault, token), 0)
                received = obs.balances[(token, asset.vault)] + total_released
                released = {payee: obs.released.get((asset.vault, token, payee), 0) for payee in asset.shares}
                where = f"vault of asset {asset.asset_id}, {TOKEN_NAMES[token]}"
                assert total_released <= received, f"{where}: released {total_released} > received {received}"
                assert sum(released.values()) == total_released, f"{where}: payees got {released}, {total_released}"
                for payee, share in asset.shares.items():
                    cap = received * share // TOTAL_SHARES
                    assert released[payee] <= cap, f"{where}: {payee} got {released[payee]} > its share {cap}"


# ---------------------------------------------------------------------- the starting catalog

# (owner, token, price, payees (actor, bps), parents (asset id, bps)) — ids 1..5 in order.
BASE_ASSETS = [
    (1, 0, 1_000_000, [(1, 6_000), (2, 4_000)], []),
    (3, 0, 2_500_001, [(3, 7_000)], [(1, 3_000)]),
    (4, 0, 333_333, [(4, 5_000), (1, 2_500)], [(2, 2_000), (1, 500)]),
    (5, 1, 10_000_000, [(5, 10_000)], []),
    (6, 1, 7, [(6, 3_333), (2, 3_333)], [(4, 3_334)]),
]
BASE_LICENSES = [(3, 2), (2, 6), (5, 1), (1, 4)]  # (asset id, buyer)


def _build_world(chain: Chain) -> World:
    accounts = chain.accounts
    admin = accounts[ADMIN]
    # A day ahead of the wall clock, every block is its parent + 1 second: time is deterministic.
    chain.time_travel(int(time.time()) + DAY)
    market = deploy_all(chain, admin).market(chain)
    second = TestUSD(chain, chain.deploy("TestUSD", admin.address, sender=admin).address)
    tokens = (market.token, second)
    for token in tokens:
        for actor in ACTORS:
            chain.send(token.contract.functions.mint(accounts[actor].address, MINT), admin, gas=GAS)
    assert market.marketplace.treasury() == admin.address
    world = World(chain, market, tokens, accounts, fee_bps=market.marketplace.fee_bps())
    world.supply = [token.total_supply() for token in tokens]
    assert world.supply == [MINT * len(ACTORS)] * 2

    holders = [a.address for a in accounts] + [market.marketplace.address, market.channels.address]
    balances = {(t, h): (MINT if h in {accounts[a].address for a in ACTORS} else 0) for t in TOKENS for h in holders}
    harness = Harness(
        world, Ledger(balances=dict(balances)), Observed(balances=dict(balances), supply=list(world.supply))
    )
    for owner, token, price, payees, parents in BASE_ASSETS:
        harness.publish(owner, token, price, payees, parents)
    for asset_id, buyer in BASE_LICENSES:
        harness.buy(asset_id, buyer, "approve")
    first = harness.open_channel(2, 3, 5_000_000, 2, SESSION_KEYS[0])
    assert first is not None
    ceiling = 2_000_000  # claimed up to 1,234,567 under a higher ceiling
    harness.claim(first, ceiling, 1_234_567, harness.sign_voucher(harness.ledger.channels[first], ceiling, 8), True, 7)
    harness.open_channel(6, 5, 999, 0, 6)
    harness.touch_everything()
    harness.check()
    world.base_ledger, world.base_observed = harness.ledger, harness.observed
    chain.mine()  # reverting re-imports the snapshot's block: an empty one is the cheapest
    world.snapshot = chain.snapshot()
    return world


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    """One embedded chain for the module, with the catalog deployed and snapshotted."""
    chain = connect("embedded")
    try:
        yield _build_world(chain)
    finally:
        chain.close()


# ---------------------------------------------------------------------- the machine


class MarketplaceMachine(RuleBasedStateMachine):
    """Random traffic against the contracts, checked against the ledger after every step."""

    world: World  # set by the test before running

    def __init__(self) -> None:
        super().__init__()
        w = self.world
        w.chain.revert(w.snapshot)
        w.snapshot = w.chain.snapshot()  # anvil consumes a snapshot on revert: always take a new one
        assert w.base_ledger is not None and w.base_observed is not None
        self.h = Harness(w, copy.deepcopy(w.base_ledger), copy.deepcopy(w.base_observed))
        w.stats["examples"] += 1

    def _step(self, name: str) -> None:
        self.world.stats["steps"] += 1
        self.world.stats[f"rule {name}"] += 1

    @property
    def _ledger(self) -> Ledger:
        return self.h.ledger

    # ------------------------------------------------------------------ marketplace

    @rule(data=st.data())
    def publish(self, data: st.DataObject) -> None:
        self._step("publish")
        led = self._ledger
        token = data.draw(st.sampled_from(TOKENS), label="token")
        same_token = sorted(aid for aid, a in led.assets.items() if a.token == token)
        wanted = data.draw(st.sampled_from([1, 2, 3, 0]), label="parent count")  # parents likely
        count = min(wanted, len(same_token))
        parent_ids = data.draw(
            st.lists(st.sampled_from(same_token), min_size=count, max_size=count, unique=True), label="parents"
        )
        payee_ids = data.draw(st.lists(ACTOR, min_size=1, max_size=4), label="payees")  # repeats allowed: summed
        split = data.draw(_splits(len(payee_ids) + len(parent_ids)), label="bps")
        payees = list(zip(payee_ids, split, strict=False))
        parents = list(zip(parent_ids, split[len(payee_ids) :], strict=True))
        flaw = data.draw(st.sampled_from([None, None, None, None, None, None, "shares", "parent"]), label="flaw")
        expected = None
        if flaw == "parent" and parents:
            parents[0] = (len(led.assets) + 1, parents[0][1])
            expected = "UnknownParent"
        elif flaw:
            payees[0] = (payees[0][0], payees[0][1] + 1)
            expected = "SharesDoNotSum"
        kind = data.draw(st.sampled_from(AssetKind), label="kind")
        asset_id = self.h.publish(
            data.draw(ACTOR, label="owner"),
            token,
            data.draw(PRICES, label="price"),
            payees,
            parents,
            kind=kind,
            expected=expected,
        )
        if asset_id is not None:
            self.world.stats[f"published depth {led.assets[asset_id].depth}"] += 1

    @rule(data=st.data())
    def buy(self, data: st.DataObject) -> None:
        self._step("buy")
        asset_id = data.draw(st.sampled_from(sorted(self._ledger.assets)), label="asset")
        buyer = data.draw(ACTOR, label="buyer")
        mode = data.draw(
            st.sampled_from(["approve", "authorization", "approve", "authorization", "short_allowance", "low_max"]),
            label="mode",
        )
        relayer = data.draw(st.sampled_from([RELAYER, *ACTORS]), label="relayer")
        self.h.buy(asset_id, buyer, mode, relayer)

    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        self._step("release")
        led, w = self._ledger, self.world
        asset = led.assets[data.draw(st.sampled_from(sorted(led.assets)), label="asset")]
        payees = sorted(asset.shares)
        due = [p for p in payees if led.claimable(asset, asset.token, p) > 0]
        strangers = [w.address(a) for a in (*ACTORS, RELAYER) if w.address(a) not in asset.shares]
        how = data.draw(st.sampled_from(["due", "due", "due", "payee", "stranger", "other token"]), label="how")
        pool = {"due": due or payees, "stranger": strangers or payees}.get(how, payees)
        payee = data.draw(st.sampled_from(pool), label="payee")  # vault payees include parents and treasury
        token = 1 - asset.token if how == "other token" else asset.token
        self.h.release(asset.asset_id, token, payee, data.draw(CALLER, label="caller"))

    # ------------------------------------------------------------------ channels

    @rule(data=st.data())
    def open_channel(self, data: st.DataObject) -> None:
        self._step("open_channel")
        payer = data.draw(ACTOR, label="payer")
        self.h.open_channel(
            payer,
            data.draw(st.sampled_from(sorted(self._ledger.assets)), label="asset"),
            data.draw(DEPOSITS, label="deposit"),
            data.draw(st.integers(0, 3), label="hours"),
            data.draw(st.sampled_from([payer, *SESSION_KEYS]), label="signer"),
            data.draw(st.sampled_from([RELAYER, RELAYER, *ACTORS]), label="receiver"),
            wrong_token=data.draw(st.sampled_from([False, False, False, False, True]), label="wrong token"),
        )

    def _draw_channel(self, data: st.DataObject) -> ChannelModel:
        channels = self._ledger.channels
        live = sorted(cid for cid, c in channels.items() if not c.settled)
        pool = data.draw(st.sampled_from(["live", "live", "any"]), label="channel pool")
        ids = live if pool == "live" and live else sorted(channels)
        return channels[data.draw(st.sampled_from(ids), label="channel")]

    def _draw_claim(self, data: st.DataObject, channel: ChannelModel) -> tuple[int, int, bytes, bool, int]:
        """(ceiling, total, signature, signed by the signer, caller) for a claim, honest or not."""
        kind = data.draw(
            st.sampled_from(["raise", "raise", "raise", "replay", "lower", "above voucher", "exceed", "wrong signer"]),
            label="voucher",
        )
        caller = data.draw(st.sampled_from([channel.receiver] * 3 + list(CALLERS)), label="caller")
        if kind == "replay" and channel.vouchers:
            ceiling, signature = data.draw(st.sampled_from(channel.vouchers), label="old voucher")
            total = data.draw(st.integers(0, ceiling + 1), label="total")
            self.world.stats["voucher replayed"] += 1
            return ceiling, total, signature, True, caller
        if kind == "lower":  # often exactly the amount already claimed: the boundary
            total = data.draw(st.one_of(st.just(channel.claimed), st.integers(0, channel.claimed)), label="total")
        elif kind == "exceed":
            total = data.draw(
                st.one_of(st.just(channel.deposit + 1), st.integers(channel.deposit + 1, channel.deposit + 10**6)),
                label="total",
            )
        else:
            total = data.draw(
                st.integers(channel.claimed + 1, max(channel.claimed + 1, channel.deposit)), label="total"
            )
        if kind == "above voucher":
            ceiling = data.draw(st.integers(max(total - 10**6, 0), max(total - 1, 0)), label="ceiling")
        else:  # the ceiling a payer signed ahead: the claim, a little more, or everything
            ceiling = data.draw(st.sampled_from([total, total + 1, total + 10**6, 2**128 - 1]), label="ceiling")
        signing = channel.signer
        if kind == "wrong signer":
            others = [a for a in (channel.payer, *SESSION_KEYS, RELAYER) if a != channel.signer]
            signing = data.draw(st.sampled_from(others), label="wrong signer")
        signature = self.h.sign_voucher(channel, ceiling, signing)
        return ceiling, total, signature, signing == channel.signer, caller

    @rule(data=st.data())
    def claim(self, data: st.DataObject) -> None:
        self._step("claim")
        channel = self._draw_channel(data)
        self.h.claim(channel.channel_id, *self._draw_claim(data, channel))

    @rule(data=st.data())
    def claim_and_settle(self, data: st.DataObject) -> None:
        self._step("claim_and_settle")
        channel = self._draw_channel(data)
        ceiling, total, signature, signed, caller = self._draw_claim(data, channel)
        if data.draw(st.sampled_from([False, False, True]), label="nothing more"):
            ceiling, total, signature, signed = 0, channel.claimed, b"", False
        self.h.claim_and_settle(channel.channel_id, ceiling, total, signature, signed, caller)

    @rule(data=st.data())
    def top_up(self, data: st.DataObject) -> None:
        self._step("top_up")
        channel = self._draw_channel(data)
        who = data.draw(st.sampled_from(["payer", "payer", "payer", "stranger", "zero"]), label="who")
        caller = channel.payer
        if who == "stranger":
            caller = data.draw(st.sampled_from([a for a in ACTORS if a != channel.payer]), label="stranger")
        amount = 0 if who == "zero" else data.draw(DEPOSITS, label="amount")
        self.h.top_up(channel.channel_id, caller, amount)

    @rule(data=st.data())
    def close_early(self, data: st.DataObject) -> None:
        self._step("close_early")
        channel = self._draw_channel(data)
        owner = self._ledger.assets[channel.asset_id].owner
        caller = owner
        if data.draw(st.sampled_from(["owner", "owner", "stranger"]), label="who") == "stranger":
            caller = data.draw(st.sampled_from([a for a in CALLERS if a != owner]), label="stranger")
        self.h.close(channel.channel_id, caller)

    @rule(hours=st.integers(1, 3))
    def advance_time(self, hours: int) -> None:
        self._step("advance_time")
        self.world.chain.increase_time(hours * HOUR)  # whole hours: expiries stay half an hour off

    @rule(data=st.data())
    def reclaim(self, data: st.DataObject) -> None:
        self._step("reclaim")
        channel = self._draw_channel(data)
        self.h.reclaim(channel.channel_id, data.draw(CALLER, label="caller"))

    # ------------------------------------------------------------------ checks

    @rule(data=st.data())
    def spot_check(self, data: st.DataObject) -> None:
        """Have the next check re-read part of the state, or all of it, not only what the step changed."""
        self._step("spot_check")
        what = data.draw(
            st.sampled_from(["vault", "token", "licenses", "channels", "vault", "licenses", "everything"]),
            label="spot check",
        )
        self.world.stats[f"spot check {what}"] += 1
        if what == "token":
            self.h.touch_token(data.draw(st.sampled_from(TOKENS), label="token"))
        elif what == "vault":
            self.h.touch_vault(data.draw(st.sampled_from(sorted(self._ledger.assets)), label="asset"))
        elif what == "channels":
            self.h.touch_channels()
        elif what == "licenses":
            self.h.touch_licenses(data.draw(st.sampled_from(sorted(self._ledger.assets)), label="asset"))
        else:
            self.h.touch_everything()

    @invariant()
    def money_is_accounted_for(self) -> None:
        self.h.check()

    def teardown(self) -> None:
        w = self.world
        w.depths[max(a.depth for a in self._ledger.assets.values())] += 1
        if w.stats["examples"] % PROGRESS_EVERY == 0:  # shown with pytest -s; long runs need a pulse
            elapsed = time.monotonic() - w.started
            print(
                f"  [{PROFILE}] {w.stats['examples']} examples, {w.stats['steps']} steps, {elapsed:.0f} s", flush=True
            )


# ---------------------------------------------------------------------- the test


@pytest.mark.backend("embedded")  # a chain of its own: connect("embedded")
# ~80 s alone; the margin is for a machine busy with other work (the long run is capped from outside).
@pytest.mark.timeout(0 if PROFILE == "long" else 600)
def test_marketplace_invariants(world: World) -> None:
    MarketplaceMachine.world = world
    world.stats.clear()
    world.depths.clear()
    world.started = time.monotonic()
    run_state_machine_as_test(MarketplaceMachine, settings=settings.get_profile(f"agentmarket-{PROFILE}"))
    elapsed = time.monotonic() - world.started
    stats = world.stats
    print(
        f"\n[{PROFILE}] {stats['examples']} examples, {stats['steps']} steps in {elapsed:.1f} s; "
        f"deepest lineage per example {dict(sorted(world.depths.items()))}"
    )
    for key, count in sorted(stats.items()):
        if key not in ("examples", "steps"):
            print(f"  {key}: {count}")
    assert stats["steps"] >= stats["examples"]
