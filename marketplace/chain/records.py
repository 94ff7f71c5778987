"""The record types the contract wrappers return: what a contract's state means, in plain dataclasses.

Amounts are token base units, times unix seconds, shares basis points (see :mod:`marketplace.chain.units`).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

from marketplace.chain.units import CLAIM_WINDOW, PERPETUAL


class AssetKind(IntEnum):
    """What an asset is (the Solidity enum's order)."""

    DATASET = 0
    MODEL = 1


class SubjectKind(IntEnum):
    """What feedback is about (the Solidity enum's order)."""

    ASSET = 0
    AGENT = 1


@dataclass(frozen=True)
class Asset:
    """A listed dataset or model."""

    asset_id: int
    kind: AssetKind
    owner: str
    token: str
    price: int
    license_duration: int
    version: int
    listed: bool
    content_hash: bytes
    uri: str
    vault: str
    parents: tuple[int, ...]


@dataclass(frozen=True)
class License:
    """An account's license to an asset; ``expires_at`` 0 means never bought."""

    asset_id: int
    account: str
    expires_at: int

    @property
    def perpetual(self) -> bool:
        """True for a license that never ends."""
        return self.expires_at == PERPETUAL

    def active_at(self, timestamp: int) -> bool:
        """True if the license is valid at ``timestamp``."""
        return self.expires_at > timestamp


@dataclass(frozen=True)
class Channel:
    """A payment channel's on-chain state (amounts in base units of ``token``, times in unix seconds).

    Calls are served until ``expiry`` (the asset owner's ``close`` moves it to the closing time);
    ``receiver_authorizer`` may claim until ``claim_deadline``; then anyone may reclaim the rest for
    the payer, which sets ``settled``.
    """

    channel_id: int
    payer: str
    expiry: int
    settled: bool
    signer: str
    asset_id: int
    receiver_authorizer: str
    token: str
    deposit: int
    claimed: int

    @property
    def unclaimed(self) -> int:
        """What the deposit still holds."""
        return self.deposit - self.claimed

    @property
    def claim_deadline(self) -> int:
        """The first second at which claims are refused (and reclaim allowed): expiry plus the claim window."""
        return self.expiry + CLAIM_WINDOW


@dataclass(frozen=True)
class AgentRecord:
    """An ERC-8004 agent identity as the marketplace reads it."""

    agent_id: int
    owner: str
    uri: str
    wallet: str | None
    encryption_key: bytes | None
    endpoint: str | None


@dataclass(frozen=True)
class SpendPermission:
    """An owner's grant letting one agent wallet spend the owner's tokens (amounts in token base
    units, ``period`` and ``period_start`` in seconds).

    ``grantor`` is the zero address once revoked (or if never granted); ``wallet`` is the wallet it
    was granted to; ``epoch`` and ``binding`` the agent's ownership epoch and wallet-binding count at
    the grant. ``active`` is true while the agent wallet can use it (granted, not revoked, the agent
    not moved and its wallet not bound again since); ``remaining`` is what is left in the current
    period (0 when not active).
    """

    grantor: str
    allowance: int
    period: int
    period_start: int
    spent_in_period: int
    remaining: int
    wallet: str = "0x0000000000000000000000000000000000000000"
    epoch: int = 0
    active: bool = False
    binding: int = 0


@dataclass(frozen=True)
class FeedbackSummary:
    """Count and average of the paid-for feedback about a subject; ``average_raw`` is on the
    [0, 100] scale with ``decimals`` decimals (0 when ``count`` is 0)."""

    count: int
    average_raw: int
    decimals: int

    @property
    def average(self) -> float:
        """The average value as a float."""
        return self.average_raw / 10**self.decimals


@dataclass(frozen=True)
class Feedback:
    """One rater's feedback: ``value / 10**value_decimals`` lies in [0, 100]."""

    value: int
    value_decimals: int
    tag1: str
    tag2: str

    @property
    def score(self) -> float:
        """The value on the [0, 100] scale."""
        return self.value / 10**self.value_decimals


@dataclass(frozen=True)
class RaterPayment:
    """What an account paid into an asset's vault by one proof and what qualifies a rater (token base
    units): by its licenses (each bought at the price of its day), ``required`` = the deployment's floor;
    by one channel's claims, ``required`` = max(the asset's current price, the floor)."""

    paid: int
    required: int

    @property
    def qualifies(self) -> bool:
        """True if the payment is enough to rate."""
        return self.paid >= self.required


@dataclass(frozen=True)
class PurchaseAuthorization:
    """A buyer's signed EIP-3009 ReceiveWithAuthorization bound to one asset purchase."""

    asset_id: int
    buyer: str
    value: int
    valid_after: int
    valid_before: int
    salt: bytes
    signature: bytes
