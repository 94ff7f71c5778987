"""Metered calls paid with payment-channel vouchers: the gate (the "metered model call" row of
docs/architecture.md, "Where a payment is signed, verified, settled and split").

A payer opens a channel for one asset on chain, naming this gateway's settlement key as its
``receiverAuthorizer``. With every call it sends, in the ``X-Payment-Channel`` header, a voucher:
an EIP-712 ``Voucher(channelId, maxClaimableAmount)`` — a **ceiling** the channel's signer allows
the receiver to claim in total (wire format: :mod:`marketplace.protocol.vouchers`). The receiver
claims what it served, never more: so the amount claimed into the model's vault equals the prices
of the calls the gateway answered, whatever the payer signs.

A call goes through the :class:`ChannelGate` in three steps:

1. :meth:`ChannelGate.reserve` verifies the voucher off chain (signature by the channel's signer,
   the contract's exact ECDSA rule; the channel's asset, token and receiver; its expiry by the
   chain's clock) and **reserves** the price in memory: accepted iff
   ``min(max(highest voucher, this one), deposit) >= debited + reserved + price``, where ``debited``
   is what the answered calls used (never less than what was claimed on chain);
2. the model runs;
3. on success :meth:`ChannelGate.commit` writes ``debited += price`` and the highest voucher to the
   :class:`~marketplace.payments.voucher_ledger.VoucherLedger` (group commit, durable) **before** the answer
   is sent; on failure :meth:`ChannelGate.release` drops the reservation (no disk write).

A crash with calls in flight thus loses nothing that was answered, and a failed call can never
push what is claimed above what was served. The :class:`~marketplace.payments.settler.Settler`
claims ``debited`` under the highest voucher. The chain's state reaches the gate through a
:class:`~marketplace.payments.watcher.ChainWatcher` (block time and channel logs, re-read at most
every ``chain_poll_interval`` seconds): no chain call is made per paid call once a channel's state
is cached, and a close, top-up, extension or claim drops the cached state.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_account.signers.local import LocalAccount

from marketplace.chain import ContractRevert
from marketplace.chain.eip712 import VOUCHER_FIELDS
from marketplace.chain.identity import ChainReplaced
from marketplace.chain.market import Market
from marketplace.chain.records import Asset, Channel
from marketplace.chain.units import CLAIM_WINDOW, caip2
from marketplace.errors import AgentmarketError
from marketplace.payments.secp256k1 import recover_public_key
from marketplace.payments.settler import CLAIM_GAS, ClaimResult, Settler, chain_identity
from marketplace.payments.voucher_ledger import (
    ChannelFinalized,
    ChannelRecord,
    Debit,
    InsufficientCredit,
    VoucherLedger,
    VoucherLedgerError,
)
from marketplace.payments.watcher import ChainWatcher
from marketplace.protocol.vouchers import (
    EIP712_DOMAIN_FIELDS,
    HEADER,
    MalformedVoucher,
    Voucher,
    VoucherHasher,
)

log = logging.getLogger("agentmarket.payments.channels")

__all__ = [  # the ledger's, settler's and wire format's names are part of this module's interface too
    "CLAIM_GAS", "HEADER", "AssetCache", "ChainWatcher", "ChannelFinalized", "ChannelGate", "ChannelPaymentRequired",
    "ChannelRecord", "ClaimResult", "InsufficientCredit", "MalformedPayment", "PaymentError", "Receipt", "Reservation",
    "Settler", "Voucher", "VoucherHasher", "VoucherLedger", "VoucherLedgerError", "chain_identity",
]  # fmt: skip


# ---------------------------------------------------------------------- errors


class PaymentError(AgentmarketError):
    """A call's payment was refused; ``status`` and ``code`` say how to answer over HTTP."""

    status = 400
    code = "payment_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class MalformedPayment(PaymentError):
    """The ``X-Payment-Channel`` header is not base64 JSON ``{channelId, maxClaimableAmount, signature}`` (400)."""

    status = 400
    code = "malformed_payment"


class ChannelPaymentRequired(PaymentError):
    """No payment, or one that does not pay for the call (402).

    ``reason`` is a machine code (see :data:`REFUSAL_REASONS`), ``requirements`` the JSON-able dict of
    :meth:`ChannelGate.requirements`, plus a ``channel`` entry (``channelId``, ``highestVoucher``,
    ``debited``, ``claimed``, ``deposit``, ``minMaxClaimableAmount``; amounts as decimal strings) when
    the channel is known.
    """

    status = 402
    code = "payment_required"

    def __init__(self, reason: str, requirements: dict[str, Any], detail: str | None = None) -> None:
        super().__init__(detail or REFUSAL_REASONS.get(reason, reason))
        self.reason = reason
        self.requirements = requirements

    def to_dict(self) -> dict[str, Any]:
        """The 402 response body: the API's ``{error, detail}`` plus ``reason`` and ``requirements``."""
        return {"error": self.code, "detail": self.detail, "reason": self.reason, "requirements": self.requirements}


#: Every ``ChannelPaymentRequired.reason``, with the default sentence.
REFUSAL_REASONS = {
    "payment_missing": f"this call is paid per call: send a voucher in the {HEADER} header",
    "unknown_channel": "no payment channel has this id",
    "channel_closed": "the payment channel is settled: nothing more can be claimed from it",
    "channel_expired": "the payment channel expired or its asset's owner closed it; open a new one",
    "channel_expiring": "the payment channel expires too soon; extend it or open a new one",
    "wrong_asset": "the payment channel pays for another asset",
    "wrong_token": "the payment channel holds another token than the asset's",
    "wrong_receiver": "the payment channel's receiverAuthorizer is not this gateway's settlement key: it could "
    "not claim what it serves (see requirements.receiverAuthorizer)",
    "deposit_exhausted": "the channel's deposit does not cover the calls answered plus this one; top it up",
    "invalid_signature": "the voucher was not signed (ECDSA) by the channel's signer for this channel and contract",
    "insufficient_voucher": "the voucher's ceiling does not cover every call answered so far plus this one",
}


# ---------------------------------------------------------------------- assets


class AssetCache:
    """Assets as read on chain at most ``max_age`` seconds ago, shared by every thread of a server.

    One thread at a time re-reads an expired asset; while it does, the others keep the value it
    replaces instead of queueing for the same read. So a ``setPrice``, a delisting or a new vault
    reaches callers within ``max_age`` seconds plus one chain read. ``clock`` is monotonic seconds.
    """

    def __init__(self, market: Market, max_age: float = 2.0, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.market = market
        self.max_age = max_age
        self.clock = clock
        self._entries: dict[int, tuple[float, Asset]] = {}
        self._refresh_lock = threading.Lock()

    def get(self, asset_id: int) -> Asset:
        """The asset (raises ContractRevert ``UnknownAsset`` for an unknown id; that is not cached)."""
        cached = self._entries.get(asset_id)
        if cached is not None and self.clock() - cached[0] <= self.max_age:
            return cached[1]
        if not self._refresh_lock.acquire(blocking=cached is None):
            return cached[1]  # type: ignore[index]  # another thread is re-reading: keep the previous value meanwhile
        try:
            cached = self._entries.get(asset_id)
            if cached is None or self.clock() - cached[0] > self.max_age:
                read_at = self.clock()
                cached = self._entries[asset_id] = (read_at, self.market.marketplace.asset(asset_id))
            return cached[1]
        finally:
            self._refresh_lock.release()

    def invalidate(self, asset_id: int | None = None) -> None:
        """Drop one asset (or all): the next :meth:`get` reads it from chain."""
        if asset_id is None:
            self._entries.clear()
        else:
            self._entries.pop(asset_id, None)


# ---------------------------------------------------------------------- calls


@dataclass
class _Account:
    """What the gate knows of one channel, guarded by ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    #: The on-chain state as last read (None: read it on the next call).
    channel: Channel | None = None
    #: The ledger's entry was loaded into the fields below.
    loaded: bool = False
    #: Credit used: the answered calls (committed, raised to the on-chain claimed) plus the calls in flight.
    debited: int = 0
    #: Prices reserved by calls in flight (reserved; neither committing nor released yet).
    in_flight: int = 0
    #: The highest verified voucher, committed or not.
    ceiling: int = 0
    signature: bytes = b""
    #: The settler found the channel unclaimable (the ledger's ``final``).
    final: str | None = None


@dataclass
class Reservation:
    """A call's price held on a channel while its model runs: then :meth:`ChannelGate.commit` or
    :meth:`ChannelGate.release` it (base units)."""

    channel_id: int
    asset_id: int
    price: int
    #: The ceiling of the voucher presented with this call.
    voucher: int
    _account: _Account = field(repr=False)
    _channel: Channel = field(repr=False)
    done: bool = False


@dataclass(frozen=True)
class Receipt:
    """An answered, committed call: what it cost and where the channel stands after it (base units).

    ``deposit`` is the channel's deposit as this gateway last read it from the chain (a top-up reaches it
    within ``chain_poll_interval``): ``deposit_left`` is what it still covers beyond every answered call,
    ``calls_left`` how many more calls at this price that is. (A voucher is a ceiling the client raises by
    one price per call, so "what the highest voucher still covers" is normally 0 and says nothing.)
    """

    channel_id: int
    asset_id: int
    price: int
    #: The ceiling of the voucher presented with this call.
    voucher: int
    #: The highest voucher held for the channel.
    highest_voucher: int
    #: Credit used by every call answered on the channel, this one included (what the settler claims).
    debited: int
    calls: int
    #: The channel's deposit, as last read from the chain.
    deposit: int

    @property
    def deposit_left(self) -> int:
        """What the deposit still covers beyond the calls answered."""
        return max(self.deposit - self.debited, 0)

    @property
    def calls_left(self) -> int:
        """How many more calls at this call's price the deposit covers."""
        return self.deposit_left // self.price if self.price else 0

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (amounts as decimal strings), e.g. for a response header or body."""
        return {
            "channelId": self.channel_id,
            "assetId": self.asset_id,
            "price": str(self.price),
            "maxClaimableAmount": str(self.voucher),
            "highestVoucher": str(self.highest_voucher),
            "debited": str(self.debited),
            "calls": self.calls,
            "deposit": str(self.deposit),
            "depositLeft": str(self.deposit_left),
            "callsLeft": self.calls_left,
        }


class ChannelGate:
    """Verifies vouchers off chain, reserves each call's price, commits it once the call was answered.

    ``receiver_authorizer`` is the address of the key the settler claims with: channels naming
    another one are refused (this gateway could not claim them). ``watcher`` provides the chain's
    clock and drops cached channels that changed on chain (one is made with ``chain_poll_interval``
    unless given; the gate refreshes it lazily, :meth:`ChainWatcher.start` keeps it fresh without
    traffic). Assets come from ``assets`` (an :class:`AssetCache`, re-read every ``asset_max_age``
    seconds unless given). Signatures are recovered locally with the contract's rule (plain ECDSA:
    contract signers and ERC-1271 are refused on chain, so here too). Calls on one channel or many
    run concurrently; reservations are per channel and in memory, commits group-committed.
    """

    def __init__(
        self,
        market: Market,
        ledger: VoucherLedger,
        *,
        receiver_authorizer: str,
        watcher: ChainWatcher | None = None,
        chain_poll_interval: float = 1.0,
        min_seconds_to_expiry: int = 60,
        assets: AssetCache | None = None,
        asset_max_age: float = 2.0,
    ) -> None:
        self.market = market
        self.assets = assets or AssetCache(market, asset_max_age)
        self.ledger = ledger
        self.receiver_authorizer = receiver_authorizer
        self.min_seconds_to_expiry = min_seconds_to_expiry
        self.watcher = watcher or ChainWatcher(market, chain_poll_interval)
        self.domain = market.channels.domain
        self.vouchers = VoucherHasher(self.domain, recover_public_key=recover_public_key)
        ledger.bind(chain_identity(market))
        self._accounts: dict[int, _Account] = {}
        self._accounts_guard = threading.Lock()
        self._chain_lock = threading.Lock()
        self.watcher.subscribe(self._on_chain_change)

    # ------------------------------------------------------------------ public

    def reserve(self, header_value: str | None, price: int, *, asset_id: int) -> Reservation:
        """Verify the ``X-Payment-Channel`` header and reserve ``price`` for one call on ``asset_id``.

        Nothing is written: :meth:`commit` once the call was answered, :meth:`release` otherwise.
        Raises :class:`MalformedPayment` (400) for an unreadable header, :class:`ChannelPaymentRequired`
        (402) for a missing or insufficient payment; an unknown asset raises ContractRevert ``UnknownAsset``;
        a chain replaced under the watcher raises :class:`~marketplace.chain.identity.ChainReplaced`.
        """
        if price < 0:
            raise ValueError(f"price must not be negative, got {price}")
        asset = self.assets.get(asset_id)
        if header_value is None or not header_value.strip():
            raise self._refuse("payment_missing", asset_id, price)
        try:
            voucher = Voucher.from_header(header_value)
        except MalformedVoucher as exc:
            raise MalformedPayment(str(exc)) from None
        return self._reserve(voucher, price, asset)

    def reserve_voucher(self, voucher: Voucher, price: int, *, asset_id: int) -> Reservation:
        """:meth:`reserve` for a voucher already parsed (a payer in the same process: no header to read).

        The same checks, refusals and reservation as :meth:`reserve` (minus the header's format).
        """
        if price < 0:
            raise ValueError(f"price must not be negative, got {price}")
        return self._reserve(voucher, price, self.assets.get(asset_id))

    def _reserve(self, voucher: Voucher, price: int, asset: Asset) -> Reservation:
        asset_id = asset.asset_id
        try:
            self.watcher.maybe_refresh()
        except Exception as exc:  # the chain is unreachable: judge by the last view (and the wall clock)
            log.warning("cannot refresh the chain view (%s: %s); using the one read %.1f s ago",
                        type(exc).__name__, exc, self.watcher.age)  # fmt: skip
        replaced = self.watcher.replaced
        if replaced is not None:  # a restarted chain: channel ids and signatures would match new ones
            raise ChainReplaced(replaced.expected, replaced.actual, replaced.detail)
        signer = self.vouchers.recover(voucher)  # outside any lock: 40 us of CPU
        channel_id = voucher.channel_id
        account = self._account(channel_id)
        with account.lock:
            channel = self._usable_channel(account, channel_id, asset, price)
            if signer != channel.signer.lower():
                raise self._refuse("invalid_signature", asset_id, price, channel_id, account=account)
            needed = account.debited + price
            ceiling = max(account.ceiling, voucher.max_claimable_amount)
            if min(ceiling, channel.deposit) < needed:
                reason = "deposit_exhausted" if channel.deposit < needed else "insufficient_voucher"
                detail = (
                    f"channel {channel_id} has used {account.debited} of its credit: this call needs a voucher with "
                    f"maxClaimableAmount of at least {needed} (the highest received is {ceiling}) and a deposit of "
                    f"at least {needed} (it holds {channel.deposit})"
                )
                raise self._refuse(reason, asset_id, price, channel_id, detail, account=account)
            account.debited = needed
            account.in_flight += price
            if voucher.max_claimable_amount > account.ceiling:
                account.ceiling, account.signature = voucher.max_claimable_amount, voucher.signature
        return Reservation(channel_id, asset_id, price, voucher.max_claimable_amount, account, channel)

    def commit(self, reservation: Reservation) -> Receipt:
        """Debit the answered call durably (with the highest voucher); returns once it is on disk.

        Send the answer only after this returned. Should the ledger refuse (the settler found the
        channel unclaimable meanwhile, or the chain says more was claimed than the voucher covers)
        the reservation is released and :class:`ChannelPaymentRequired` raised; a failed write raises
        :class:`VoucherLedgerError` (the reservation is released too).
        """
        account, channel_id, price = reservation._account, reservation.channel_id, reservation.price
        with account.lock:
            if reservation.done:
                raise ValueError(f"the reservation on channel {channel_id} was already committed or released")
            reservation.done = True
            # Counted as committed from here on, before the ledger has it: so a claim the watcher reports
            # meanwhile (which can only hold what the ledger had) is never counted on top of it.
            account.in_flight -= price
            ceiling, signature = account.ceiling, account.signature
            channel = account.channel or reservation._channel  # the state the reservation was judged on, if dropped
            claimed, deposit = channel.claimed, channel.deposit
        try:
            entry = self.ledger.record(channel_id, asset_id=reservation.asset_id, price=price, ceiling=ceiling,
                                       signature=signature, claimed_on_chain=claimed, deposit=deposit)  # fmt: skip
        except (InsufficientCredit, ChannelFinalized, VoucherLedgerError) as exc:
            with account.lock:  # not debited after all
                account.debited -= price
                if isinstance(exc, ChannelFinalized):
                    account.final = exc.reason
            if isinstance(exc, VoucherLedgerError):
                raise
            if isinstance(exc, ChannelFinalized):
                raise self._refuse("channel_closed", reservation.asset_id, price, channel_id, str(exc)) from None
            detail = f"the call was not answered: {exc}"
            raise self._refuse("insufficient_voucher", reservation.asset_id, price, channel_id, detail) from None
        return Receipt(channel_id, reservation.asset_id, price, reservation.voucher, entry.ceiling, entry.debited,
                       entry.calls, deposit)  # fmt: skip

    def commit_many(self, reservations: Sequence[Reservation]) -> list[Receipt]:
        """:meth:`commit` for many answered calls in one group commit of the ledger (one write, one fsync).

        Each reservation is committed as :meth:`commit` would have done it; a refused one is released
        (not debited) while the others stand, and then the first refusal is raised, as :meth:`commit`
        raises it (:class:`ChannelPaymentRequired`). A failed write releases them all and raises
        :class:`VoucherLedgerError`. Returns the receipts in the order given.
        """
        debits: list[Debit] = []
        deposits: list[int] = []
        for reservation in reservations:
            account, price = reservation._account, reservation.price
            with account.lock:
                if reservation.done:
                    raise ValueError(
                        f"the reservation on channel {reservation.channel_id} was already committed or released"
                    )
                reservation.done = True
                account.in_flight -= price
                channel = account.channel or reservation._channel
                debits.append(Debit(reservation.channel_id, reservation.asset_id, price, account.ceiling,
                                    account.signature, channel.claimed, channel.deposit))  # fmt: skip
                deposits.append(channel.deposit)
        try:
            entries = self.ledger.record_many(debits)
        except VoucherLedgerError:
            for reservation in reservations:
                with reservation._account.lock:
                    reservation._account.debited -= reservation.price
            raise
        receipts: list[Receipt] = []
        refusal: ChannelPaymentRequired | None = None
        for reservation, entry, deposit in zip(reservations, entries, deposits, strict=True):
            if isinstance(entry, ChannelRecord):
                receipts.append(Receipt(reservation.channel_id, reservation.asset_id, reservation.price,
                                        reservation.voucher, entry.ceiling, entry.debited, entry.calls,
                                        deposit))  # fmt: skip
                continue
            account = reservation._account
            with account.lock:
                account.debited -= reservation.price
                if isinstance(entry, ChannelFinalized):
                    account.final = entry.reason
            if refusal is None:
                reason = "channel_closed" if isinstance(entry, ChannelFinalized) else "insufficient_voucher"
                detail = str(entry) if isinstance(entry, ChannelFinalized) else f"the call was not answered: {entry}"
                refusal = self._refuse(reason, reservation.asset_id, reservation.price, reservation.channel_id, detail)
        if refusal is not None:
            raise refusal
        return receipts

    def release(self, reservation: Reservation) -> None:
        """Drop the reservation of a call that was not answered (its model failed): nothing is written."""
        account = reservation._account
        with account.lock:
            if reservation.done:
                return
            reservation.done = True
            account.in_flight -= reservation.price
            account.debited -= reservation.price

    def requirements(self, asset_id: int, price: int) -> dict[str, Any]:
        """How to pay for a call on ``asset_id`` with a channel (JSON-able; amounts as decimal strings)."""
        asset = self.assets.get(asset_id)
        return {**self.channel_terms(), "assetId": asset_id, "token": asset.token, "payTo": asset.vault,
                "price": str(price)}  # fmt: skip

    def channel_terms(self) -> dict[str, Any]:
        """What a payer must know before opening a channel with this gateway (JSON-able), for any asset."""
        domain = self.domain
        return {
            "scheme": "payment-channel",
            "header": HEADER,
            "headerFormat": "base64(JSON {channelId, maxClaimableAmount, signature})",
            "network": caip2(domain.chain_id),
            "chainId": domain.chain_id,
            "channels": self.market.channels.address,
            "receiverAuthorizer": self.receiver_authorizer,
            "claimWindowSeconds": CLAIM_WINDOW,
            "minSecondsToExpiry": self.min_seconds_to_expiry,
            "voucher": {
                "primaryType": "Voucher",
                "domain": domain.as_dict(),
                "types": {
                    "EIP712Domain": EIP712_DOMAIN_FIELDS,
                    "Voucher": [{"name": n, "type": t} for n, t in VOUCHER_FIELDS],
                },
                "maxClaimableAmount": "a ceiling: the receiver claims the prices of the calls it answered, up to it",
            },
        }

    def forget(self, channel_id: int | None = None) -> None:
        """Drop the cached on-chain state of one channel (or all): it is read again on its next call."""
        with self._accounts_guard:
            accounts = list(self._accounts.values()) if channel_id is None else [self._accounts.get(channel_id)]
        for account in accounts:
            if account is not None:
                with account.lock:
                    account.channel = None

    def _on_chain_change(self, touched: set[int] | None, _closed: set[int]) -> None:
        if touched is None:
            self.forget()
        else:
            for channel_id in touched:
                self.forget(channel_id)

    # ------------------------------------------------------------------ checks

    def _account(self, channel_id: int) -> _Account:
        account = self._accounts.get(channel_id)
        if account is None:
            with self._accounts_guard:
                account = self._accounts.setdefault(channel_id, _Account())
        return account

    def _usable_channel(self, account: _Account, channel_id: int, asset: Asset, price: int) -> Channel:
        """The channel, read from chain if not cached (under ``account.lock``); refusals as ChannelPaymentRequired."""
        if not account.loaded:
            entry = self.ledger.entry(channel_id)
            if entry is not None:
                account.debited += entry.debited
                account.final = entry.final
                if entry.ceiling > account.ceiling:
                    account.ceiling, account.signature = entry.ceiling, entry.signature
            account.loaded = True
        channel = account.channel
        if channel is None:
            channel = self._read_channel(channel_id)
            if channel is None:
                # Remember nothing of ids that are no channel: a flood of them costs no memory.
                with self._accounts_guard:
                    if self._accounts.get(channel_id) is account and not account.in_flight and not account.debited:
                        del self._accounts[channel_id]
                raise self._refuse("unknown_channel", asset.asset_id, price, None, f"no payment channel {channel_id}")
            account.channel = channel
            committed = account.debited - account.in_flight  # credit claimed on chain is used credit
            account.debited = max(committed, channel.claimed) + account.in_flight
        refusal = None
        now = self.watcher.now()
        if channel.settled or account.final is not None:
            refusal = "channel_closed"
        elif channel.asset_id != asset.asset_id:
            refusal = "wrong_asset"
        elif channel.token.lower() != asset.token.lower():
            refusal = "wrong_token"
        elif channel.receiver_authorizer.lower() != self.receiver_authorizer.lower():
            refusal = "wrong_receiver"
        elif channel.expiry <= now:
            refusal = "channel_expired"
        elif channel.expiry - now < self.min_seconds_to_expiry:
            refusal = "channel_expiring"
        if refusal is not None:
            raise self._refuse(refusal, asset.asset_id, price, channel_id, account=account)
        return channel

    def _read_channel(self, channel_id: int) -> Channel | None:
        try:
            with self._chain_lock:
                return self.market.channels.channel(channel_id)
        except ContractRevert as exc:
            if exc.error == "UnknownChannel":
                return None
            raise

    # ------------------------------------------------------------------ refusals

    def _refuse(
        self,
        reason: str,
        asset_id: int,
        price: int,
        channel_id: int | None = None,
        detail: str | None = None,
        *,
        account: _Account | None = None,
    ) -> ChannelPaymentRequired:
        requirements = self.requirements(asset_id, price)
        if channel_id is not None:
            if account is None:
                account = self._account(channel_id)
            channel = account.channel
            requirements["channel"] = {
                "channelId": channel_id,
                "highestVoucher": str(account.ceiling),
                "debited": str(account.debited),
                "claimed": str(channel.claimed if channel else 0),
                "deposit": str(channel.deposit if channel else 0),
                "minMaxClaimableAmount": str(account.debited + price),
            }
        return ChannelPaymentRequired(reason, requirements, detail)


def settler_for(gate: ChannelGate, relayer: LocalAccount, interval: float = 30.0, **options: Any) -> Settler:
    """A :class:`Settler` claiming with ``relayer`` (the gate's receiver authorizer), woken by the gate's
    watcher when a channel it holds answered calls for is closed."""
    if relayer.address.lower() != gate.receiver_authorizer.lower():
        raise ValueError(f"the settler's key {relayer.address} is not the gate's receiver {gate.receiver_authorizer}")
    settler = Settler(gate.market, gate.ledger, relayer, interval, **options)
    gate.watcher.subscribe(lambda _touched, closed: settler.wake() if closed else None)
    return settler
