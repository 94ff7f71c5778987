"""Metered calls paid with payment-channel vouchers (DESIGN.md, "The money path", point 4).

A payer opens a channel for one asset on chain. With every call it sends, in the
``X-Payment-Channel`` header, base64 JSON ``{"channelId", "cumulativeAmount", "signature"}``: an
EIP-712 ``Voucher`` the channel's signer signed for everything paid so far. Three pieces:

- :class:`~marketplace.payments.ledger.VoucherLedger` keeps, per channel, the highest voucher, the
  credit the calls served so far used (``debited``) and what was claimed on chain: in memory,
  written through to SQLite (WAL, ``synchronous=FULL`` by default). :meth:`VoucherLedger.record`
  debits one call and returns once its voucher is committed: answer the request only after it returned.
  Concurrent writes share commits (group commit): one fsync makes a whole batch durable.
- :class:`ChannelGate` verifies a voucher off-chain (channel state read from chain and cached,
  signature recovered locally with :class:`VoucherHasher`) and debits the call's price through the
  ledger. No chain call is made per voucher once a channel's state is cached; the asset (price,
  token, vault) is re-read at most every couple of seconds (:class:`AssetCache`).
- :class:`Settler` claims each channel's served voucher (the highest whose amount the calls served
  used up: credit paid ahead or handed back by a failed call is not claimed) on chain, every
  ``interval`` seconds and once more when stopped; the claimed increase goes into the asset's vault.

Vouchers may arrive out of order when a client makes concurrent calls: a voucher is accepted when
the highest voucher seen so far (counting this one) covers every call served plus this one.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from coincurve import PrivateKey
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount

from marketplace.chain import ContractRevert
from marketplace.chain.eip712 import VOUCHER_FIELDS, Domain
from marketplace.chain.market import Asset, Channel, Market
from marketplace.errors import AgentmarketError
from marketplace.payments.ledger import (
    ChannelFinalized,
    InsufficientCredit,
    LedgerEntry,
    LedgerError,
    VoucherLedger,
)
from marketplace.payments.secp256k1 import recover_public_key

__all__ = [  # the ledger's names are part of this module's interface too
    "HEADER", "AssetCache", "ChannelFinalized", "ChannelGate", "InsufficientCredit", "LedgerEntry", "LedgerError",
    "MalformedPayment", "PaymentError", "PaymentRequired", "Receipt", "Settlement", "Settler", "Voucher",
    "VoucherHasher", "VoucherLedger", "chain_identity",
]  # fmt: skip

try:  # the C Keccak of safe-pysha3 holds the GIL for a short hash; pycryptodome's releases it several times
    from sha3 import keccak_256

    def keccak(data: bytes) -> bytes:
        """Keccak-256 of ``data``."""
        return keccak_256(data).digest()

except ImportError:  # pragma: no cover - depends on the environment
    from eth_hash.auto import keccak

log = logging.getLogger("agentmarket.payments.channels")

#: The request header carrying a voucher.
HEADER = "X-Payment-Channel"
#: Gas given to a claim (measured: 68k-86k; no estimate round trip on the settlement path).
CLAIM_GAS = 150_000
#: Longest header value accepted (a voucher is about 250 characters).
MAX_HEADER_LENGTH = 2048

_UINT256_MAX = 2**256 - 1
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_SECP256K1_HALF_N = _SECP256K1_N // 2
_EIP712_DOMAIN_FIELDS = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]


# ---------------------------------------------------------------------- errors


class PaymentError(AgentmarketError):
    """A call's payment was refused; ``status`` and ``code`` say how to answer over HTTP."""

    status = 400
    code = "payment_error"

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class MalformedPayment(PaymentError):
    """The ``X-Payment-Channel`` header is not base64 JSON ``{channelId, cumulativeAmount, signature}`` (400)."""

    status = 400
    code = "malformed_payment"


class PaymentRequired(PaymentError):
    """No payment, or one that does not pay for the call (402).

    ``reason`` is a machine code (see :data:`REFUSAL_REASONS`), ``requirements`` the JSON-able dict of
    :meth:`ChannelGate.requirements`, plus a ``channel`` entry (``channelId``, ``highestVoucher``,
    ``debited``, ``minCumulativeAmount``, amounts as decimal strings) when the channel is known.
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


#: Every ``PaymentRequired.reason``, with the default sentence.
REFUSAL_REASONS = {
    "payment_missing": f"this call is paid per call: send a voucher in the {HEADER} header",
    "unknown_channel": "no payment channel has this id",
    "channel_closed": "the payment channel is closed",
    "wrong_asset": "the payment channel pays for another asset",
    "wrong_token": "the payment channel holds another token than the asset's",
    "channel_expiring": "the payment channel expires too soon; extend it or open a new one",
    "voucher_exceeds_deposit": "the voucher is above the channel's deposit; top the channel up",
    "invalid_signature": "the voucher was not signed by the channel's signer for this channel and contract",
    "insufficient_voucher": "the voucher does not cover every call served so far plus this one",
}


# ---------------------------------------------------------------------- the voucher on the wire


@dataclass(frozen=True)
class Voucher:
    """What a ``X-Payment-Channel`` header carries."""

    channel_id: int
    cumulative_amount: int
    signature: bytes

    def to_header(self) -> str:
        """The header value: base64 of JSON ``{channelId, cumulativeAmount, signature}``."""
        body = {
            "channelId": self.channel_id,
            "cumulativeAmount": str(self.cumulative_amount),
            "signature": "0x" + self.signature.hex(),
        }
        return base64.b64encode(json.dumps(body, separators=(",", ":")).encode()).decode()

    @classmethod
    def from_header(cls, value: str) -> Voucher:
        """Parse a header value (standard or URL-safe base64, padding optional); raises :class:`MalformedPayment`."""
        if not isinstance(value, str) or not value.strip():
            raise MalformedPayment(f"the {HEADER} header is empty")
        value = value.strip()
        if len(value) > MAX_HEADER_LENGTH:
            raise MalformedPayment(f"the {HEADER} header is longer than {MAX_HEADER_LENGTH} characters")
        text = value.replace("-", "+").replace("_", "/")
        try:
            raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
            body = json.loads(raw)
        except (binascii.Error, ValueError):
            raise MalformedPayment(f"the {HEADER} header is not base64-encoded JSON") from None
        if not isinstance(body, dict):
            raise MalformedPayment(f"the {HEADER} header must hold a JSON object")
        return cls(
            channel_id=_uint(body, "channelId", minimum=1),
            cumulative_amount=_uint(body, "cumulativeAmount", minimum=0),
            signature=_signature(body),
        )


def _uint(body: dict[str, Any], name: str, *, minimum: int) -> int:
    value = body.get(name)
    if isinstance(value, str) and value.isascii() and value.isdecimal():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= _UINT256_MAX:
        raise MalformedPayment(f"{name} must be an integer from {minimum} to 2**256-1 (a number or a decimal string)")
    return value


def _signature(body: dict[str, Any]) -> bytes:
    value = body.get("signature")
    if isinstance(value, str):
        try:
            raw = bytes.fromhex(value.removeprefix("0x"))
        except ValueError:
            raw = b""
        if len(raw) == 65:
            return raw
    raise MalformedPayment("signature must be 0x followed by 130 hex digits (r, s, v)")


# ---------------------------------------------------------------------- signing and recovering vouchers


class VoucherHasher:
    """EIP-712 ``Voucher(channelId, cumulativeAmount)`` digests under one domain: sign and recover per call.

    The domain separator is computed once (by eth-account, and the struct hash checked against
    eth-account's at construction), so a voucher costs two keccaks plus one libsecp256k1 call
    (coincurve). Signatures are the same bytes eth-account makes (RFC 6979, low s).
    """

    def __init__(self, domain: Domain) -> None:
        self.domain = domain
        types = {"Voucher": [{"name": n, "type": t} for n, t in VOUCHER_FIELDS]}
        type_string = "Voucher(" + ",".join(f"{t} {n}" for n, t in VOUCHER_FIELDS) + ")"
        self._typehash = keccak(type_string.encode())
        sample = encode_typed_data(domain_data=domain.as_dict(), message_types=types,
                                   message_data={"channelId": 1, "cumulativeAmount": 2})  # fmt: skip
        if sample.body != self._struct_hash(1, 2):
            raise AssertionError("VOUCHER_FIELDS changed: the voucher struct hash no longer matches eth-account's")
        self._prefix = b"\x19\x01" + sample.header
        self._keys: dict[str, PrivateKey] = {}

    def _struct_hash(self, channel_id: int, cumulative_amount: int) -> bytes:
        return keccak(self._typehash + channel_id.to_bytes(32, "big") + cumulative_amount.to_bytes(32, "big"))

    def digest(self, channel_id: int, cumulative_amount: int) -> bytes:
        """The 32-byte EIP-712 hash a voucher's signer signs."""
        return keccak(self._prefix + self._struct_hash(channel_id, cumulative_amount))

    def sign(self, signer: LocalAccount, channel_id: int, cumulative_amount: int) -> bytes:
        """A voucher for ``cumulative_amount`` in total: 65 bytes r ‖ s ‖ v (v = 27 or 28)."""
        key = self._keys.get(signer.address)
        if key is None:
            key = self._keys[signer.address] = PrivateKey(bytes(signer.key))
        signature = key.sign_recoverable(self.digest(channel_id, cumulative_amount), hasher=None)  # r, s, recovery id
        return signature[:64] + bytes([signature[64] + 27])

    def recover(self, voucher: Voucher) -> str | None:
        """The signer's address (lowercase hex), or None for a signature the channels contract would refuse.

        Like OpenZeppelin's ECDSA: v must be 27 or 28 and s in the lower half of the curve order.
        """
        sig = voucher.signature
        r, s, v = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big"), sig[64]
        if v not in (27, 28) or not 0 < r < _SECP256K1_N or not 0 < s <= _SECP256K1_HALF_N:
            return None
        digest = self.digest(voucher.channel_id, voucher.cumulative_amount)
        public_key = recover_public_key(sig[:64], v - 27, digest)  # holds the GIL: see payments.secp256k1
        if public_key is None:
            return None
        return "0x" + keccak(public_key[1:])[-20:].hex()


def chain_identity(market: Market) -> str:
    """What a ledger is bound to: chain id, genesis block hash and channels contract address."""
    chain = market.chain
    genesis = bytes(chain.w3.eth.get_block(0)["hash"]).hex()
    return f"eip155:{chain.chain_id}/genesis:0x{genesis}/channels:{market.channels.address}"


# ---------------------------------------------------------------------- the gate


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


@dataclass(frozen=True)
class Receipt:
    """A paid call: what it cost and where the channel stands after it."""

    channel_id: int
    asset_id: int
    price: int
    #: The cumulative amount of the voucher presented with this call.
    voucher: int
    #: The highest voucher held for the channel (the credit calls may use).
    highest_voucher: int
    #: Credit used by every call served on the channel, this one included.
    debited: int
    calls: int

    @property
    def remaining(self) -> int:
        """Credit the highest voucher still holds."""
        return self.highest_voucher - self.debited

    def as_dict(self) -> dict[str, Any]:
        """JSON-able form (amounts as decimal strings), e.g. for a response header or body."""
        return {
            "channelId": self.channel_id,
            "assetId": self.asset_id,
            "price": str(self.price),
            "voucher": str(self.voucher),
            "highestVoucher": str(self.highest_voucher),
            "debited": str(self.debited),
            "remaining": str(self.remaining),
            "calls": self.calls,
        }


class ChannelGate:
    """Verifies vouchers off-chain and debits each call's price.

    Channel state is read from chain once and cached; it is read again when a voucher exceeds the
    cached deposit or the cached expiry is too near (a top-up or extension may have happened).
    Assets come from ``assets`` (an :class:`AssetCache`, re-read every ``asset_max_age`` seconds
    unless given; share it with whatever else reads assets per call).
    Signatures are recovered locally; calls on one channel or on many run concurrently, and the
    ledger alone decides, atomically, whether the credit covers each call.
    ``clock`` returns the current unix time (compare it with block timestamps).
    Vouchers of contract signers (ERC-1271) are refused: only ECDSA signers are verified off-chain.
    """

    def __init__(
        self,
        market: Market,
        ledger: VoucherLedger,
        *,
        min_seconds_to_expiry: int = 60,
        clock: Callable[[], float] = time.time,
        assets: AssetCache | None = None,
        asset_max_age: float = 2.0,
    ) -> None:
        self.market = market
        self.assets = assets or AssetCache(market, asset_max_age)
        self.ledger = ledger
        self.min_seconds_to_expiry = min_seconds_to_expiry
        self.clock = clock
        self.domain = market.channels.domain
        self.vouchers = VoucherHasher(self.domain)
        ledger.bind(chain_identity(market))
        self._channels: dict[int, Channel] = {}
        self._locks: dict[int, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._chain_lock = threading.Lock()

    # ------------------------------------------------------------------ public

    def charge(self, header_value: str | None, price: int, *, asset_id: int) -> Receipt:
        """Take payment of ``price`` for one call on ``asset_id`` from the ``X-Payment-Channel`` header.

        Returns once the debit and the voucher are committed to the ledger. Raises
        :class:`MalformedPayment` (400) for an unreadable header and :class:`PaymentRequired` (402)
        for a missing or insufficient payment; an unknown asset raises ContractRevert ``UnknownAsset``.
        """
        if price < 0:
            raise ValueError(f"price must not be negative, got {price}")
        asset = self._asset(asset_id)
        if header_value is None or not header_value.strip():
            raise self._refuse("payment_missing", asset_id, price)
        voucher = Voucher.from_header(header_value)
        channel_id, cumulative = voucher.channel_id, voucher.cumulative_amount
        channel = self._usable_channel(voucher, asset, price)
        if self.vouchers.recover(voucher) != channel.signer.lower():
            raise self._refuse("invalid_signature", asset_id, price, channel_id)
        try:
            entry = self.ledger.record(
                channel_id, asset_id=asset_id, cumulative=cumulative, signature=voucher.signature, price=price
            )
        except InsufficientCredit as exc:
            detail = (
                f"channel {channel_id} has used {exc.debited} of its credit: this call needs a voucher for "
                f"at least {exc.needed} in total (the highest received is {exc.highest})"
            )
            raise self._refuse("insufficient_voucher", asset_id, price, channel_id, detail) from None
        except ChannelFinalized as exc:
            with self._lock_for(channel_id):
                self._channels[channel_id] = replace(channel, closed=True)
            raise self._refuse("channel_closed", asset_id, price, channel_id, str(exc)) from None
        return Receipt(channel_id, asset_id, price, cumulative, entry.cumulative, entry.debited, entry.calls)

    def refund(self, receipt: Receipt) -> None:
        """Give back the credit of a charged call that was not answered (its model failed)."""
        self.ledger.refund(receipt.channel_id, receipt.price)

    def requirements(self, asset_id: int, price: int) -> dict[str, Any]:
        """How to pay for a call on ``asset_id`` with a channel (JSON-able; amounts as decimal strings)."""
        asset = self._asset(asset_id)
        domain = self.domain
        return {
            "scheme": "payment-channel",
            "header": HEADER,
            "headerFormat": "base64(JSON {channelId, cumulativeAmount, signature})",
            "network": f"eip155:{domain.chain_id}",
            "chainId": domain.chain_id,
            "channels": self.market.channels.address,
            "assetId": asset_id,
            "token": asset.token,
            "payTo": asset.vault,
            "price": str(price),
            "minSecondsToExpiry": self.min_seconds_to_expiry,
            "voucher": {
                "primaryType": "Voucher",
                "domain": domain.as_dict(),
                "types": {
                    "EIP712Domain": _EIP712_DOMAIN_FIELDS,
                    "Voucher": [{"name": n, "type": t} for n, t in VOUCHER_FIELDS],
                },
                "cumulativeAmount": "everything paid on the channel so far, this call included",
            },
        }

    def forget(self, channel_id: int) -> None:
        """Drop the cached state of a channel (it is read from chain again on the next call)."""
        with self._lock_for(channel_id):
            self._channels.pop(channel_id, None)

    # ------------------------------------------------------------------ checks

    def _usable_channel(self, voucher: Voucher, asset: Asset, price: int) -> Channel:
        channel_id, cumulative = voucher.channel_id, voucher.cumulative_amount
        with self._lock_for(channel_id):  # one chain read per channel refresh, however many calls wait for it
            channel = self._channels.get(channel_id)
            stale = channel is not None and (cumulative > channel.deposit or self._expiring(channel))
            if channel is None or (stale and not channel.closed):
                channel = self._read_channel(channel_id)
        if channel is None:
            raise self._refuse("unknown_channel", asset.asset_id, price, None, f"no payment channel {channel_id}")
        refusal = None
        if channel.closed:
            refusal = "channel_closed"
        elif channel.asset_id != asset.asset_id:
            refusal = "wrong_asset"
        elif channel.token.lower() != asset.token.lower():
            refusal = "wrong_token"
        elif self._expiring(channel):
            refusal = "channel_expiring"
        elif cumulative > channel.deposit:
            refusal = "voucher_exceeds_deposit"
        if refusal is not None:
            raise self._refuse(refusal, asset.asset_id, price, channel_id)
        return channel

    def _expiring(self, channel: Channel) -> bool:
        return channel.expiry - self.clock() < self.min_seconds_to_expiry

    # ------------------------------------------------------------------ chain reads (cached)

    def _lock_for(self, channel_id: int) -> threading.Lock:
        with self._locks_guard:
            lock = self._locks.get(channel_id)
            if lock is None:
                lock = self._locks[channel_id] = threading.Lock()
            return lock

    def _read_channel(self, channel_id: int) -> Channel | None:
        try:
            with self._chain_lock:
                channel = self.market.channels.channel(channel_id)
        except ContractRevert as exc:
            if exc.error == "UnknownChannel":
                self._channels.pop(channel_id, None)
                return None
            raise
        self._channels[channel_id] = channel
        return channel

    def _asset(self, asset_id: int) -> Asset:
        return self.assets.get(asset_id)

    # ------------------------------------------------------------------ refusals

    def _refuse(
        self, reason: str, asset_id: int, price: int, channel_id: int | None = None, detail: str | None = None
    ) -> PaymentRequired:
        requirements = self.requirements(asset_id, price)
        if channel_id is not None:
            entry = self.ledger.entry(channel_id)
            debited = entry.debited if entry else 0
            requirements["channel"] = {
                "channelId": channel_id,
                "highestVoucher": str(entry.cumulative if entry else 0),
                "debited": str(debited),
                "minCumulativeAmount": str(debited + price),
            }
        return PaymentRequired(reason, requirements, detail)


# ---------------------------------------------------------------------- the settler


@dataclass(frozen=True)
class Settlement:
    """What one settlement round did for one channel.

    ``outcome``: ``claimed`` (``amount`` went to the vault), ``already_claimed`` (the chain already
    held the voucher), ``closed`` / ``expired`` / ``unknown_channel`` (nothing can be claimed any
    more; recorded and skipped from then on), ``failed`` (``detail`` says why; a revert is retried
    only for a higher voucher, any other error on the next round).
    """

    channel_id: int
    outcome: str
    cumulative: int
    amount: int = 0
    tx_hash: str | None = None
    detail: str = ""


_FINAL_OUTCOMES = {"ChannelClosed": "closed", "ChannelExpired": "expired", "UnknownChannel": "unknown_channel"}


class Settler:
    """Claims the served voucher of every channel on chain, now and then and once more at shutdown.

    ``relayer`` pays the gas. Pass ``send_lock`` when something else sends transactions from the
    same account, so that nonces do not collide. Keep ``interval`` well below the gate's
    ``min_seconds_to_expiry``, so that the last vouchers of a channel are claimed before it expires.
    """

    def __init__(
        self,
        market: Market,
        ledger: VoucherLedger,
        relayer: LocalAccount,
        interval: float = 30.0,
        *,
        gas: int = CLAIM_GAS,
        send_lock: threading.Lock | None = None,
    ) -> None:
        self.market = market
        self.ledger = ledger
        self.relayer = relayer
        self.interval = interval
        self.gas = gas
        self._send_lock = send_lock or threading.Lock()
        self._round_lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        ledger.bind(chain_identity(market))

    def settle_once(self) -> list[Settlement]:
        """Claim every channel whose served voucher is above what was claimed; one result per channel tried."""
        with self._round_lock:
            entries = self.ledger.unclaimed()
            if not entries:
                return []
            now = self.market.chain.timestamp()
            return [self._settle(entry, now) for entry in entries]

    def start(self) -> None:
        """Settle every ``interval`` seconds on a background thread."""
        if self._thread is not None and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="channel-settler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = 60.0) -> list[Settlement]:
        """Stop the background thread and settle one last time; returns that last round."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        return self.settle_once()

    def __enter__(self) -> Settler:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stopping.wait(self.interval):
            try:
                self.settle_once()
            except Exception:
                log.exception("channel settlement round failed; retrying in %s s", self.interval)

    def _settle(self, entry: LedgerEntry, now: int) -> Settlement:
        channel_id, cumulative = entry.channel_id, entry.served
        try:
            state = self.market.channels.channel(channel_id)
            if state.claimed >= cumulative:
                self.ledger.mark_claimed(channel_id, cumulative)
                return Settlement(channel_id, "already_claimed", cumulative)
            if state.closed:
                return self._final(entry, "ChannelClosed")
            if now >= state.expiry:
                return self._final(entry, "ChannelExpired")
            with self._send_lock:
                receipt = self.market.channels.claim(
                    self.relayer, channel_id, cumulative, entry.served_signature, gas=self.gas
                )
        except ContractRevert as exc:
            if exc.error in _FINAL_OUTCOMES:
                return self._final(entry, exc.error)
            if exc.error == "VoucherNotIncreasing":
                self.ledger.mark_claimed(channel_id, cumulative)
                return Settlement(channel_id, "already_claimed", cumulative)
            log.error("claim of channel %s for %s failed: %s", channel_id, cumulative, exc)
            self.ledger.mark_failed(channel_id, cumulative, str(exc))
            return Settlement(channel_id, "failed", cumulative, detail=str(exc))
        except Exception as exc:
            log.warning("claim of channel %s for %s failed, will retry: %s", channel_id, cumulative, exc)
            return Settlement(channel_id, "failed", cumulative, detail=f"{type(exc).__name__}: {exc}")
        self.ledger.mark_claimed(channel_id, cumulative)
        tx_hash = "0x" + bytes(receipt["transactionHash"]).hex()
        return Settlement(channel_id, "claimed", cumulative, cumulative - state.claimed, tx_hash)

    def _final(self, entry: LedgerEntry, error: str) -> Settlement:
        self.ledger.mark_final(entry.channel_id, error)
        log.warning(
            "channel %s can no longer be claimed (%s); %s of its vouchers stay unclaimed",
            entry.channel_id,
            error,
            entry.unclaimed,
        )
        return Settlement(entry.channel_id, _FINAL_OUTCOMES[error], entry.served, detail=error)
