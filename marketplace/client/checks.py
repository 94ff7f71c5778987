"""What a client checks, against the chain, before it signs an x402 payment.

A server answers an unpaid request with HTTP 402 and a ``PAYMENT-REQUIRED`` header (x402 v2): what
to sign, for whom, for how much. Whoever writes that header — a hostile gateway, or anything between
the client and an honest one — can ask for any amount, to any address, in any token, on any network.
So the client never takes those values from the server. :meth:`X402Terms.from_chain` reads them
from the chain the client is connected to:

- ``x402Version``: 2;
- ``scheme``: ``exact`` (an EIP-3009 ``transferWithAuthorization`` of one exact amount);
- ``network``: ``eip155:<chain id>`` (CAIP-2);
- ``asset``: the asset's token (``Marketplace.getAsset(assetId).token``);
- ``payTo``: ``Marketplace.vaultOf(assetId)``, the asset's RevenueVault;
- ``amount``: the asset's on-chain price, in the token's base units (one call or one download);
- ``maxTimeoutSeconds``: at most :data:`MAX_TIMEOUT_SECONDS` (the authorization's lifetime: the
  client signs ``validBefore = now + maxTimeoutSeconds``);
- ``extra``: exactly ``{"name", "version"}`` of the token's EIP-712 domain, read from the token
  (ERC-5267 ``eip712Domain()``), and no other key (e.g. no Permit2 transfer method).

:meth:`X402Terms.select` picks the first requirement the server offers that matches every
field, or raises :class:`X402TermsRefused` naming the field, the server's value and the chain's;
:meth:`X402Terms.before_payment_creation` is the same check as an x402 SDK hook, so the SDK's
client cannot sign a requirement that did not pass it. This module is the one place these checks
live: the SDK (``MarketplaceClient``), the CLI and agent wallets all pay through it. "The chain"
means the contracts of the deployment the client connected with: pin the one you trust with
``MarketplaceClient.connect(..., trusted=...)`` (the CLI pins one by default: :mod:`marketplace.client.pins`).
A caller's own limit on the price (``max_price``, ``max_amount``) is checked here too
(:meth:`X402Terms.at_most`, :class:`PriceChanged`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from web3 import Web3
from web3.exceptions import Web3Exception
from x402.schemas import PaymentCreationContext, PaymentRequired, PaymentRequirements
from x402.schemas.v1 import PaymentRequiredV1, PaymentRequirementsV1

from marketplace.chain import ContractRevert
from marketplace.chain.contracts import TestUSD
from marketplace.chain.market import Market
from marketplace.chain.units import caip2
from marketplace.errors import AgentmarketError

__all__ = [
    "MAX_TIMEOUT_SECONDS",
    "SCHEME",
    "X402_VERSION",
    "Mismatch",
    "PriceChanged",
    "X402Terms",
    "X402TermsRefused",
]

#: The only x402 protocol version signed (x402 v2: PAYMENT-REQUIRED / PAYMENT-SIGNATURE headers).
X402_VERSION = 2
#: The only x402 scheme signed: ``exact`` with an EIP-3009 authorization.
SCHEME = "exact"
#: The longest authorization lifetime signed, in seconds. A server asking more (an authorization
#: that stays spendable for years) is refused; this marketplace's servers ask 300.
MAX_TIMEOUT_SECONDS = 900


@dataclass(frozen=True)
class Mismatch:
    """One field of a server's requirement that is not what the chain says.

    ``field`` is the x402 wire name (``payTo``, ``extra.name``…), ``offered`` the server's value,
    ``expected`` the chain's and ``source`` where that value comes from.
    """

    field: str
    offered: Any
    expected: Any
    source: str

    def sentence(self) -> str:
        """``the server asks payTo 0x…, but Marketplace.vaultOf(2) is 0x…``."""
        return f"the server asks {self.field} {_show(self.offered)}, but {self.source} is {_show(self.expected)}"


class X402TermsRefused(AgentmarketError):
    """A server asked for an x402 payment that is not what the chain says; nothing was signed.

    ``asset_id`` names the asset paid for, ``mismatch`` the first wrong field (with the server's and
    the chain's value) and ``others`` the names of any other wrong fields.
    """

    def __init__(self, asset_id: int, mismatch: Mismatch, others: tuple[str, ...] = ()) -> None:
        also = f" (also wrong: {', '.join(others)})" if others else ""
        super().__init__(
            f"refused to pay for asset {asset_id} over x402: {mismatch.sentence()}{also}; nothing was signed"
        )
        self.asset_id, self.mismatch, self.others = asset_id, mismatch, others

    @property
    def field(self) -> str:
        """The x402 field at fault, e.g. ``amount``."""
        return self.mismatch.field


class PriceChanged(X402TermsRefused):
    """The asset's price on chain is above what the caller approved; nothing was signed.

    ``price`` is the on-chain price now and ``approved`` the caller's limit, both in the token's base
    units; ``limit`` names that limit (``max_price``, ``max_amount``, or the price read when the call
    began). Raised for an x402 payment and for a channel call alike: a server (or an asset owner
    running one) that raises the price in the middle of a call gets a refusal, never a signature for
    the new price.
    """

    def __init__(self, asset_id: int, price: int, approved: int, limit: str = "max_price") -> None:
        super().__init__(asset_id, Mismatch("amount", price, approved, f"your limit ({limit})"))
        self.price, self.approved, self.limit = price, approved, limit
        self.args = (
            f"refused to pay for asset {asset_id}: its price on chain is {price} base units, above your limit "
            f"({limit}) of {approved}; nothing was signed",
        )


@dataclass(frozen=True)
class X402Terms:
    """What the chain says one x402 payment for ``asset_id`` must be.

    ``amount`` is in the token's base units (1 tUSD = 1,000,000), ``max_timeout_seconds`` the
    longest authorization lifetime this client signs.
    """

    asset_id: int
    network: str
    asset: str
    pay_to: str
    amount: int
    domain_name: str
    domain_version: str
    max_timeout_seconds: int = MAX_TIMEOUT_SECONDS

    @classmethod
    def from_chain(cls, market: Market, asset_id: int, *, max_timeout_seconds: int = MAX_TIMEOUT_SECONDS) -> X402Terms:
        """Read the terms from the chain: the asset's price and token, its vault, the token's EIP-712 domain.

        Raises :class:`AgentmarketError` when the asset does not exist or its token exposes no
        EIP-712 domain (ERC-5267), and :class:`ContractRevert` for any other failed read.
        """
        marketplace = market.marketplace
        try:
            asset = marketplace.asset(asset_id)
        except ContractRevert as exc:
            if exc.error == "UnknownAsset":
                raise AgentmarketError(f"asset {asset_id} does not exist on chain; nothing was signed") from None
            raise
        same_token = asset.token.lower() == market.token.address.lower()
        token = market.token if same_token else TestUSD(market.chain, asset.token)
        try:
            domain = token.domain
        except (ContractRevert, Web3Exception, ValueError):  # no code, or no ERC-5267 eip712Domain()
            raise AgentmarketError(
                f"asset {asset_id}'s token {asset.token} has no EIP-712 domain (ERC-5267); it cannot be paid over x402"
            ) from None
        return cls(
            asset_id=asset_id,
            network=caip2(market.chain.chain_id),
            asset=Web3.to_checksum_address(asset.token),
            pay_to=Web3.to_checksum_address(marketplace.vault_of(asset_id)),
            amount=asset.price,
            domain_name=domain.name,
            domain_version=domain.version,
            max_timeout_seconds=max_timeout_seconds,
        )

    def at_most(self, limit: int | None, name: str = "max_amount") -> X402Terms:
        """These terms, or :class:`PriceChanged` (a :class:`X402TermsRefused`) when the chain's price is above
        the caller's ``limit`` (base units; ``name`` says which argument set it)."""
        if limit is not None and self.amount > limit:
            raise PriceChanged(self.asset_id, self.amount, limit, name)
        return self

    def mismatches(self, requirement: PaymentRequirements | PaymentRequirementsV1) -> list[Mismatch]:
        """Every field of ``requirement`` that differs from these terms (empty: it may be signed)."""
        found: list[Mismatch] = []
        aid = self.asset_id

        def expect(field: str, offered: Any, expected: Any, source: str, ok: bool) -> None:
            if not ok:
                found.append(Mismatch(field, offered, expected, source))

        expect("scheme", requirement.scheme, SCHEME, "the only scheme this client signs", requirement.scheme == SCHEME)
        expect("network", requirement.network, self.network, "the chain's network (CAIP-2)",
               requirement.network == self.network)  # fmt: skip
        expect("asset", requirement.asset, self.asset, f"asset {aid}'s token on chain",
               _same_address(requirement.asset, self.asset))  # fmt: skip
        expect("payTo", requirement.pay_to, self.pay_to, f"Marketplace.vaultOf({aid})",
               _same_address(requirement.pay_to, self.pay_to))  # fmt: skip
        amount = getattr(requirement, "amount", None)
        expect("amount", amount, self.amount, f"asset {aid}'s price on chain (base units)", amount == str(self.amount))
        timeout = requirement.max_timeout_seconds
        expect("maxTimeoutSeconds", timeout, self.max_timeout_seconds, "this client's longest authorization (seconds)",
               isinstance(timeout, int) and 0 < timeout <= self.max_timeout_seconds)  # fmt: skip
        extra = requirement.extra or {}
        expect("extra.name", extra.get("name"), self.domain_name, "the token's EIP-712 domain name",
               extra.get("name") == self.domain_name)  # fmt: skip
        expect("extra.version", extra.get("version"), self.domain_version, "the token's EIP-712 domain version",
               extra.get("version") == self.domain_version)  # fmt: skip
        for key in sorted(set(extra) - {"name", "version"}):
            expect(f"extra.{key}", extra[key], None, f"an EIP-3009 payment's extra.{key}", False)
        return found

    def check(self, requirement: PaymentRequirements | PaymentRequirementsV1) -> None:
        """Raise :class:`X402TermsRefused` unless ``requirement`` matches these terms in every field."""
        found = self.mismatches(requirement)
        if found:
            raise X402TermsRefused(self.asset_id, found[0], tuple(m.field for m in found[1:]))

    def select(self, required: PaymentRequired | PaymentRequiredV1) -> PaymentRequirements:
        """The first of the server's ``accepts`` that matches these terms.

        Raises :class:`X402TermsRefused` for an x402 version other than 2, no requirement at all,
        or no matching one (naming the wrong fields of the offer closest to the terms).
        """
        version = required.x402_version
        if version != X402_VERSION or not isinstance(required, PaymentRequired):
            mismatch = Mismatch("x402Version", version, X402_VERSION, "the only x402 version this client signs")
            raise X402TermsRefused(self.asset_id, mismatch)
        if not required.accepts:
            mismatch = Mismatch("accepts", [], "one requirement", "what a 402 must offer")
            raise X402TermsRefused(self.asset_id, mismatch)
        closest: list[Mismatch] | None = None
        for requirement in required.accepts:
            found = self.mismatches(requirement)
            if not found:
                return requirement
            if closest is None or len(found) < len(closest):
                closest = found
        assert closest
        raise X402TermsRefused(self.asset_id, closest[0], tuple(m.field for m in closest[1:]))

    def before_payment_creation(self, context: PaymentCreationContext) -> None:
        """x402 SDK ``on_before_payment_creation`` hook: the same check on the requirement the SDK selected.

        Raises :class:`X402TermsRefused` (which the SDK lets through) so nothing is signed.
        """
        version = context.payment_required.x402_version
        if version != X402_VERSION:
            mismatch = Mismatch("x402Version", version, X402_VERSION, "the only x402 version this client signs")
            raise X402TermsRefused(self.asset_id, mismatch)
        self.check(context.selected_requirements)


def _same_address(offered: Any, expected: str) -> bool:
    return isinstance(offered, str) and Web3.is_address(offered) and offered.lower() == expected.lower()


def _show(value: Any) -> str:
    """A value as the refusal shows it, on one line whatever the server sent, cut at 80 characters."""
    if value is None:
        return "absent"
    text = value if isinstance(value, str) else repr(value) if not isinstance(value, int) else str(value)
    text = " ".join(text.split())
    return text if len(text) <= 80 else text[:77] + "..."
