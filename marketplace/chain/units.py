"""Units and constants shared by the contracts and everything that reads them.

Amounts on chain are token base units (TestUSD has :data:`DECIMALS` = 6: 1 tUSD = :data:`UNIT`);
royalty and fee shares are basis points out of :data:`BPS`; a vault's payee shares are out of
:data:`TOTAL_SHARES` (``RevenueVault.TOTAL_SHARES`` = BPS x BPS); times are unix seconds; networks are
CAIP-2 ids ``eip155:<chain id>`` (:func:`caip2`, :data:`CAIP2_PATTERN`).
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from marketplace.errors import AgentmarketError

#: TestUSD's decimals: base units per tUSD are ``10**DECIMALS``.
DECIMALS = 6
#: Base units of one tUSD.
UNIT = 10**DECIMALS
#: Largest amount of a token in base units (a uint256).
MAX_UNITS = 2**256 - 1
#: Largest voucher ceiling and claim total (``uint128``).
UINT128_MAX = 2**128 - 1

#: Basis points in a whole: payee, parent and fee shares are out of 10,000.
BPS = 10_000
#: ``RevenueVault.TOTAL_SHARES``: the denominator of every vault share (a payee's bps of the net times
#: the fee's complement, so BPS x BPS).
TOTAL_SHARES = BPS * BPS

#: ``Marketplace``'s license expiry for a perpetual license (``type(uint64).max``).
PERPETUAL = 2**64 - 1
#: ``PaymentChannels.CLAIM_WINDOW``: seconds after a channel's expiry during which its receiver may still claim.
CLAIM_WINDOW = 15 * 60

#: A CAIP-2 id of an EVM chain (namespace ``eip155``, reference = the EIP-155 chain id in decimal), as a
#: regular expression whose group ``chain_id`` is the id: what :func:`caip2` builds, for parsers.
CAIP2_PATTERN = r"eip155:(?P<chain_id>[0-9]{1,20})"


def caip2(chain_id: int) -> str:
    """The CAIP-2 id of the EVM chain ``chain_id``: ``"eip155:<chain id>"`` (x402's ``network``)."""
    return f"eip155:{chain_id}"


def to_units(amount: str | int | Decimal, *, maximum: int = MAX_UNITS, what: str = "tUSD amount") -> int:
    """Parse a human amount of tUSD ("1.5") into base units (1_500_000), exactly.

    Accepts a finite, non-negative decimal number with at most 6 decimals whose base units are at most
    ``maximum`` (default: a uint256; a price on chain must fit 96 bits, a channel deposit 128). Anything
    else (``inf``, ``nan``, ``-1``, ``0x10``, 1e-7, an 80-digit number) raises :class:`AgentmarketError`
    naming ``what`` and the rule it broke.
    """
    text = str(amount).strip()
    shown = text if len(text) <= 40 else f"{text[:20]}…({len(text)} characters)"
    try:
        value = Decimal(text)
    except (InvalidOperation, ValueError):
        raise AgentmarketError(f"{what} {shown!r} is not a number (want a decimal number of tUSD, like 1.5)") from None
    if not value.is_finite():
        raise AgentmarketError(f"{what} {shown!r} is not a finite number (want a decimal number of tUSD, like 1.5)")
    if value < 0:
        raise AgentmarketError(f"{what} {shown} is negative; want 0 or more tUSD")
    _sign, digits, exponent = value.as_tuple()
    assert isinstance(exponent, int)  # finite
    if exponent < -DECIMALS and any(digits[exponent + DECIMALS :]):
        raise AgentmarketError(f"{what} {shown} has more than {DECIMALS} decimals (the smallest unit is 0.000001)")
    if value.adjusted() > len(str(maximum)):  # bounds the integer below before it is built
        raise AgentmarketError(f"{what} {shown} is too large: at most {format_units(maximum)} tUSD")
    coefficient = int("".join(map(str, digits)) or "0")
    shift = exponent + DECIMALS
    units = coefficient * 10**shift if shift >= 0 else coefficient // 10**-shift  # exact: no rounding context
    if units > maximum:
        raise AgentmarketError(f"{what} {shown} is too large: at most {format_units(maximum)} tUSD")
    return units


def format_units(units: int) -> str:
    """Render atomic units as a tUSD amount with all six decimals ("1.500000")."""
    sign = "-" if units < 0 else ""
    whole, frac = divmod(abs(units), UNIT)
    return f"{sign}{whole}.{frac:0{DECIMALS}d}"
