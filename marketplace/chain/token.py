"""Typed wrapper of the TestUSD stablecoin (ERC-20 + EIP-2612 permit + EIP-3009)."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from functools import cached_property

from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from marketplace.chain.chain import Chain
from marketplace.chain.eip712 import (
    Domain,
    TransferAuthorization,
    sign_authorization,
    sign_cancel_authorization,
    sign_permit,
)
from marketplace.errors import AgentmarketError

DECIMALS = 6
UNIT = 10**DECIMALS

_TRANSFER_WITH_AUTH_BYTES = "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)"
_TRANSFER_WITH_AUTH_VRS = (
    "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)"
)
_RECEIVE_WITH_AUTH_BYTES = "receiveWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)"
_CANCEL_AUTH_BYTES = "cancelAuthorization(address,bytes32,bytes)"


#: Largest amount of a token in base units (a uint256).
MAX_UNITS = 2**256 - 1


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


class TestUSD:
    """The deployed TestUSD token at ``address`` on ``chain``."""

    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, chain: Chain, address: str) -> None:
        self.chain = chain
        self.contract = chain.contract("TestUSD", address)
        self.address = self.contract.address

    @cached_property
    def domain(self) -> Domain:
        """The token's EIP-712 domain, read from the contract (EIP-5267)."""
        _fields, name, version, chain_id, verifying_contract, _salt, _ext = self.chain.call(
            self.contract.functions.eip712Domain()
        )
        return Domain(name, version, chain_id, verifying_contract)

    # ------------------------------------------------------------------ reads

    def name(self) -> str:
        """Token name ("Test USD")."""
        return self.chain.call(self.contract.functions.name())

    def symbol(self) -> str:
        """Token symbol ("tUSD")."""
        return self.chain.call(self.contract.functions.symbol())

    def decimals(self) -> int:
        """Token decimals (6)."""
        return self.chain.call(self.contract.functions.decimals())

    def total_supply(self) -> int:
        """Total supply in atomic units."""
        return self.chain.call(self.contract.functions.totalSupply())

    def balance_of(self, account: str) -> int:
        """Balance of ``account`` in atomic units."""
        return self.chain.call(self.contract.functions.balanceOf(account))

    def allowance(self, owner: str, spender: str) -> int:
        """What ``spender`` may still pull from ``owner``."""
        return self.chain.call(self.contract.functions.allowance(owner, spender))

    def permit_nonce(self, owner: str) -> int:
        """The EIP-2612 nonce ``owner``'s next permit must carry."""
        return self.chain.call(self.contract.functions.nonces(owner))

    def authorization_state(self, authorizer: str, nonce: bytes) -> bool:
        """True if the EIP-3009 ``nonce`` of ``authorizer`` was used or cancelled."""
        return self.chain.call(self.contract.functions.authorizationState(authorizer, nonce))

    # ------------------------------------------------------------------ writes

    def mint(self, minter: LocalAccount, to: str, amount: int) -> TxReceipt:
        """Mint ``amount`` to ``to`` (``minter`` must hold MINTER_ROLE): the local faucet."""
        return self.chain.send(self.contract.functions.mint(to, amount), minter)

    def transfer(self, sender: LocalAccount, to: str, amount: int) -> TxReceipt:
        """Plain ERC-20 transfer."""
        return self.chain.send(self.contract.functions.transfer(to, amount), sender)

    def approve(self, owner: LocalAccount, spender: str, amount: int) -> TxReceipt:
        """Plain ERC-20 approval."""
        return self.chain.send(self.contract.functions.approve(spender, amount), owner)

    def permit(self, owner: LocalAccount, spender: str, value: int, deadline: int, relayer: LocalAccount) -> TxReceipt:
        """Sign an EIP-2612 permit with ``owner``'s key and have ``relayer`` submit it."""
        sig = sign_permit(owner, self.domain, spender, value, self.permit_nonce(owner.address), deadline)
        fn = self.contract.functions.permit(owner.address, spender, value, deadline, sig.v, sig.r, sig.s)
        return self.chain.send(fn, relayer)

    def sign_transfer(
        self,
        signer: LocalAccount,
        to: str,
        value: int,
        *,
        valid_before: int,
        valid_after: int = 0,
        nonce: bytes | None = None,
        receive: bool = False,
    ) -> TransferAuthorization:
        """Sign an EIP-3009 authorization moving ``value`` from ``signer`` to ``to``."""
        primary = "ReceiveWithAuthorization" if receive else "TransferWithAuthorization"
        return sign_authorization(
            signer,
            self.domain,
            to,
            value,
            valid_after=valid_after,
            valid_before=valid_before,
            nonce=nonce,
            primary_type=primary,
        )

    def transfer_with_authorization(
        self, auth: TransferAuthorization, relayer: LocalAccount, *, vrs: bool = False, gas: int | None = None
    ) -> TxReceipt:
        """Relay a signed EIP-3009 transfer (``vrs`` picks the (v, r, s) overload over bytes)."""
        if vrs:
            fn = self.contract.get_function_by_signature(_TRANSFER_WITH_AUTH_VRS)(*auth.call_args_vrs())
        else:
            fn = self.contract.get_function_by_signature(_TRANSFER_WITH_AUTH_BYTES)(*auth.call_args())
        return self.chain.send(fn, relayer, gas=gas)

    def receive_with_authorization(self, auth: TransferAuthorization, payee: LocalAccount) -> TxReceipt:
        """Submit a signed EIP-3009 receive; only the payee may (front-running protection)."""
        fn = self.contract.get_function_by_signature(_RECEIVE_WITH_AUTH_BYTES)(*auth.call_args())
        return self.chain.send(fn, payee)

    def cancel_authorization(self, authorizer: LocalAccount, nonce: bytes, relayer: LocalAccount) -> TxReceipt:
        """Cancel an unused EIP-3009 nonce of ``authorizer``."""
        sig = sign_cancel_authorization(authorizer, self.domain, nonce)
        fn = self.contract.get_function_by_signature(_CANCEL_AUTH_BYTES)(authorizer.address, nonce, sig.packed)
        return self.chain.send(fn, relayer)
