"""EIP-712 signing helpers: every off-chain signature agentmarket makes is bound to chain id and contract."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount


@dataclass(frozen=True)
class Domain:
    """An EIP-712 domain: name, version, chain id and verifying contract."""

    name: str
    version: str
    chain_id: int
    verifying_contract: str

    def as_dict(self) -> dict[str, Any]:
        """The domain in the form eth-account expects."""
        return {
            "name": self.name,
            "version": self.version,
            "chainId": self.chain_id,
            "verifyingContract": self.verifying_contract,
        }


@dataclass(frozen=True)
class Signature:
    """A 65-byte ECDSA signature, in both the (v, r, s) and the packed-bytes forms."""

    v: int
    r: bytes
    s: bytes

    @property
    def packed(self) -> bytes:
        """r ‖ s ‖ v, the form of ``bytes signature`` parameters."""
        return self.r + self.s + bytes([self.v])


def sign_typed(
    signer: LocalAccount, domain: Domain, primary_type: str, fields: list[tuple[str, str]], message: dict[str, Any]
) -> Signature:
    """Sign ``message`` of ``primary_type`` (fields as (name, type) pairs) under ``domain``."""
    typed = encode_typed_data(
        domain_data=domain.as_dict(),
        message_types={primary_type: [{"name": n, "type": t} for n, t in fields]},
        message_data=message,
    )
    signed = Account.sign_message(typed, signer.key)
    return Signature(v=signed.v, r=signed.r.to_bytes(32, "big"), s=signed.s.to_bytes(32, "big"))


def random_nonce() -> bytes:
    """A fresh 32-byte EIP-3009 nonce."""
    return os.urandom(32)


# ---------------------------------------------------------------------- EIP-2612 permit

PERMIT_FIELDS = [
    ("owner", "address"),
    ("spender", "address"),
    ("value", "uint256"),
    ("nonce", "uint256"),
    ("deadline", "uint256"),
]


def sign_permit(signer: LocalAccount, domain: Domain, spender: str, value: int, nonce: int, deadline: int) -> Signature:
    """EIP-2612 permit letting ``spender`` pull ``value`` of ``signer``'s tokens until ``deadline``."""
    message = {"owner": signer.address, "spender": spender, "value": value, "nonce": nonce, "deadline": deadline}
    return sign_typed(signer, domain, "Permit", PERMIT_FIELDS, message)


# ---------------------------------------------------------------------- EIP-3009

AUTHORIZATION_FIELDS = [
    ("from", "address"),
    ("to", "address"),
    ("value", "uint256"),
    ("validAfter", "uint256"),
    ("validBefore", "uint256"),
    ("nonce", "bytes32"),
]
CANCEL_FIELDS = [("authorizer", "address"), ("nonce", "bytes32")]


@dataclass(frozen=True)
class TransferAuthorization:
    """The fields of an EIP-3009 transfer or receive authorization, with its signature."""

    sender: str
    to: str
    value: int
    valid_after: int
    valid_before: int
    nonce: bytes
    signature: Signature

    def call_args(self) -> tuple[Any, ...]:
        """Arguments for the ``(..., bytes signature)`` overload of the token's function."""
        return (
            self.sender,
            self.to,
            self.value,
            self.valid_after,
            self.valid_before,
            self.nonce,
            self.signature.packed,
        )

    def call_args_vrs(self) -> tuple[Any, ...]:
        """Arguments for the ``(..., uint8 v, bytes32 r, bytes32 s)`` overload."""
        sig = self.signature
        return (self.sender, self.to, self.value, self.valid_after, self.valid_before, self.nonce, sig.v, sig.r, sig.s)


def sign_authorization(
    signer: LocalAccount,
    domain: Domain,
    to: str,
    value: int,
    *,
    valid_after: int = 0,
    valid_before: int,
    nonce: bytes | None = None,
    primary_type: str = "TransferWithAuthorization",
) -> TransferAuthorization:
    """Sign an EIP-3009 ``TransferWithAuthorization`` (or ``ReceiveWithAuthorization``) from ``signer``."""
    if primary_type not in ("TransferWithAuthorization", "ReceiveWithAuthorization"):
        raise ValueError(f"not an EIP-3009 authorization type: {primary_type}")
    nonce = nonce if nonce is not None else random_nonce()
    message = {
        "from": signer.address,
        "to": to,
        "value": value,
        "validAfter": valid_after,
        "validBefore": valid_before,
        "nonce": nonce,
    }
    signature = sign_typed(signer, domain, primary_type, AUTHORIZATION_FIELDS, message)
    return TransferAuthorization(signer.address, to, value, valid_after, valid_before, nonce, signature)


def sign_cancel_authorization(signer: LocalAccount, domain: Domain, nonce: bytes) -> Signature:
    """Sign an EIP-3009 ``CancelAuthorization`` of ``nonce``."""
    return sign_typed(
        signer, domain, "CancelAuthorization", CANCEL_FIELDS, {"authorizer": signer.address, "nonce": nonce}
    )


# ---------------------------------------------------------------------- agentmarket's own messages

#: ``Voucher(uint256 channelId,uint128 maxClaimableAmount)``: a ceiling the channel's signer allows the receiver
#: to claim in total (field names and widths as in x402's batch-settlement ``Voucher``).
VOUCHER_FIELDS = [("channelId", "uint256"), ("maxClaimableAmount", "uint128")]
AGENT_WALLET_FIELDS = [("agentId", "uint256"), ("newWallet", "address"), ("owner", "address"), ("deadline", "uint256")]


def sign_voucher(signer: LocalAccount, domain: Domain, channel_id: int, max_claimable_amount: int) -> Signature:
    """Sign a payment-channel ``Voucher(channelId, maxClaimableAmount)``: the receiver may claim up to
    ``max_claimable_amount`` base units in total (a uint128) on channel ``channel_id``."""
    message = {"channelId": channel_id, "maxClaimableAmount": max_claimable_amount}
    return sign_typed(signer, domain, "Voucher", VOUCHER_FIELDS, message)


def sign_agent_wallet(wallet: LocalAccount, domain: Domain, agent_id: int, owner: str, deadline: int) -> Signature:
    """Sign ERC-8004's ``AgentWalletSet``: ``wallet`` agrees to act for ``agent_id`` owned by ``owner``."""
    message = {"agentId": agent_id, "newWallet": wallet.address, "owner": owner, "deadline": deadline}
    return sign_typed(wallet, domain, "AgentWalletSet", AGENT_WALLET_FIELDS, message)


def recover_typed(
    domain: Domain, primary_type: str, fields: list[tuple[str, str]], message: dict[str, Any], signature: bytes
) -> str:
    """The address that signed ``message`` (for off-chain verification, e.g. of vouchers)."""
    typed = encode_typed_data(
        domain_data=domain.as_dict(),
        message_types={primary_type: [{"name": n, "type": t} for n, t in fields]},
        message_data=message,
    )
    return Account.recover_message(typed, signature=signature)
