"""Payment-channel vouchers on the wire: the ``X-Payment-Channel`` header, EIP-712 digests, signing, recovery.

A voucher is an EIP-712 ``Voucher(uint256 channelId,uint128 maxClaimableAmount)`` signed by the
channel's signer: a **ceiling** on what the channel's receiver may claim in total, the shape of x402's
``batch-settlement`` scheme (the payer signs a ceiling, the receiver claims what it served). It
travels in the ``X-Payment-Channel`` request header as base64 of the JSON object
``{"channelId": 7, "maxClaimableAmount": "1500000", "signature": "0x…130 hex digits…"}``
(amounts are base units; numbers or decimal strings are accepted, strings are sent).

Signatures follow ``PaymentChannels``' rule exactly, which is OpenZeppelin's ``ECDSA.tryRecover`` on
65 bytes: ``r ‖ s ‖ v`` with ``v`` 27 or 28, ``s`` in the lower half of the curve order (EIP-2), no
64-byte compact form (EIP-2098), and never ERC-1271: a signer is a key, whatever code its address has.

This module does no I/O and imports nothing from the server (``marketplace.payments``), so clients use it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from coincurve import PrivateKey, PublicKey
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount

from marketplace.chain.eip712 import VOUCHER_FIELDS, Domain
from marketplace.errors import AgentmarketError

try:  # the C Keccak of safe-pysha3 holds the GIL for a short hash; pycryptodome's releases it several times
    from sha3 import keccak_256

    def keccak(data: bytes) -> bytes:
        """Keccak-256 of ``data``."""
        return keccak_256(data).digest()

except ImportError:  # pragma: no cover - depends on the environment
    from eth_hash.auto import keccak

__all__ = [
    "EIP712_DOMAIN_FIELDS", "HEADER", "MAX_HEADER_LENGTH", "UINT128_MAX", "MalformedVoucher", "Voucher",
    "VoucherHasher", "voucher_types",
]  # fmt: skip

#: The request header carrying a voucher.
HEADER = "X-Payment-Channel"
#: Longest header value accepted (a voucher is about 250 characters).
MAX_HEADER_LENGTH = 2048
#: Largest ceiling a voucher can carry (the contract's ``uint128``).
UINT128_MAX = 2**128 - 1

_UINT256_MAX = 2**256 - 1
_SECP256K1_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141
_SECP256K1_HALF_N = _SECP256K1_N // 2
_MAX_JSON_DEPTH = 1  # a voucher is one flat JSON object
#: The EIP-712 domain type, as wallets expect it in ``types``.
EIP712_DOMAIN_FIELDS = [
    {"name": "name", "type": "string"},
    {"name": "version", "type": "string"},
    {"name": "chainId", "type": "uint256"},
    {"name": "verifyingContract", "type": "address"},
]


def voucher_types() -> dict[str, list[dict[str, str]]]:
    """EIP-712 ``types`` of a voucher (with ``EIP712Domain``), for ``eth_signTypedData_v4`` wallets."""
    return {"EIP712Domain": EIP712_DOMAIN_FIELDS, "Voucher": [{"name": n, "type": t} for n, t in VOUCHER_FIELDS]}


class MalformedVoucher(AgentmarketError):
    """An ``X-Payment-Channel`` value that is not base64 JSON ``{channelId, maxClaimableAmount, signature}``."""


# ---------------------------------------------------------------------- the voucher on the wire


@dataclass(frozen=True)
class Voucher:
    """What an ``X-Payment-Channel`` header carries: a signed ceiling for one channel (base units)."""

    channel_id: int
    max_claimable_amount: int
    signature: bytes

    def to_header(self) -> str:
        """The header value: base64 of JSON ``{channelId, maxClaimableAmount, signature}``."""
        body = {
            "channelId": self.channel_id,
            "maxClaimableAmount": str(self.max_claimable_amount),
            "signature": "0x" + self.signature.hex(),
        }
        return base64.b64encode(json.dumps(body, separators=(",", ":")).encode()).decode()

    @classmethod
    def from_header(cls, value: str) -> Voucher:
        """Parse a header value (standard or URL-safe base64, padding optional).

        Raises :class:`MalformedVoucher` naming the field at fault: an empty or over-long value, bad
        base64, JSON that is not one flat object, ``channelId`` not in 1..2**256-1,
        ``maxClaimableAmount`` not in 0..2**128-1, a signature that is not 65 bytes, or the old
        ``cumulativeAmount`` field.
        """
        if not isinstance(value, str) or not value.strip():
            raise MalformedVoucher(f"the {HEADER} header is empty")
        value = value.strip()
        if len(value) > MAX_HEADER_LENGTH:
            raise MalformedVoucher(f"the {HEADER} header is longer than {MAX_HEADER_LENGTH} characters")
        text = value.replace("-", "+").replace("_", "/")
        try:
            raw = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            raise MalformedVoucher(f"the {HEADER} header is not base64-encoded JSON") from None
        if _json_depth(raw) > _MAX_JSON_DEPTH:
            raise MalformedVoucher(f"the {HEADER} header must hold one flat JSON object (nothing nested)")
        try:
            body = json.loads(raw)
        except ValueError:
            raise MalformedVoucher(f"the {HEADER} header is not base64-encoded JSON") from None
        if not isinstance(body, dict):
            raise MalformedVoucher(f"the {HEADER} header must hold a JSON object")
        if "cumulativeAmount" in body and "maxClaimableAmount" not in body:
            raise MalformedVoucher(
                "cumulativeAmount is the old voucher format: sign Voucher(channelId, maxClaimableAmount), a ceiling "
                "the receiver may claim up to, and send it as maxClaimableAmount"
            )
        return cls(
            channel_id=_uint(body, "channelId", 1, _UINT256_MAX, "2**256-1"),
            max_claimable_amount=_uint(body, "maxClaimableAmount", 0, UINT128_MAX, "2**128-1"),
            signature=_signature(body),
        )


def _json_depth(raw: bytes) -> int:
    """How deeply ``raw``'s JSON arrays and objects nest (outside strings), without parsing it."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            deepest = max(deepest, depth)
        elif byte in (0x5D, 0x7D):  # ] }
            depth -= 1
    return deepest


def _uint(body: dict[str, Any], name: str, minimum: int, maximum: int, maximum_text: str) -> int:
    value = body.get(name)
    if isinstance(value, str) and value.isascii() and value.isdecimal() and len(value) <= 78:
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or not minimum <= value <= maximum:
        raise MalformedVoucher(
            f"{name} must be an integer from {minimum} to {maximum_text} (a number or a decimal string)"
        )
    return value


def _signature(body: dict[str, Any]) -> bytes:
    value = body.get("signature")
    if isinstance(value, str) and len(value) <= 200:
        try:
            raw = bytes.fromhex(value.removeprefix("0x"))
        except ValueError:
            raw = b""
        if len(raw) == 65:
            return raw
        if len(raw) == 64:
            raise MalformedVoucher(
                "signature must be 65 bytes (r, s, v): compact 64-byte signatures (EIP-2098) are refused, "
                "as PaymentChannels refuses them"
            )
    raise MalformedVoucher("signature must be 0x followed by 130 hex digits (r, s, v)")


# ---------------------------------------------------------------------- signing and recovering vouchers

#: ``recover(signature (r ‖ s, 64 bytes), recovery id (0 or 1), digest)``: the uncompressed public key
#: (65 bytes), or None when nothing recovers.
RecoverPublicKey = Callable[[bytes, int, bytes], "bytes | None"]


def _coincurve_recover(signature: bytes, recovery_id: int, digest: bytes) -> bytes | None:
    try:
        return PublicKey.from_signature_and_message(signature + bytes([recovery_id]), digest, hasher=None).format(
            compressed=False
        )
    except ValueError:  # no point on the curve recovers from this signature
        return None


class VoucherHasher:
    """EIP-712 ``Voucher(channelId, maxClaimableAmount)`` digests under one domain: sign and recover per call.

    The domain separator is computed once (by eth-account, and the struct hash checked against
    eth-account's at construction), so a voucher costs two keccaks plus one libsecp256k1 call
    (coincurve). Signatures are the bytes eth-account makes (RFC 6979, low s, v 27 or 28).
    ``recover_public_key`` may replace coincurve's recovery (the server passes one that keeps the GIL).
    """

    def __init__(self, domain: Domain, *, recover_public_key: RecoverPublicKey | None = None) -> None:
        self.domain = domain
        types = {"Voucher": [{"name": n, "type": t} for n, t in VOUCHER_FIELDS]}
        type_string = "Voucher(" + ",".join(f"{t} {n}" for n, t in VOUCHER_FIELDS) + ")"
        self._typehash = keccak(type_string.encode())
        sample = encode_typed_data(domain_data=domain.as_dict(), message_types=types,
                                   message_data={"channelId": 1, "maxClaimableAmount": 2})  # fmt: skip
        if sample.body != self._struct_hash(1, 2):
            raise AssertionError("VOUCHER_FIELDS changed: the voucher struct hash no longer matches eth-account's")
        self._prefix = b"\x19\x01" + sample.header
        self._recover_public_key = recover_public_key or _coincurve_recover
        self._keys: dict[str, PrivateKey] = {}

    def _struct_hash(self, channel_id: int, max_claimable_amount: int) -> bytes:
        return keccak(self._typehash + channel_id.to_bytes(32, "big") + max_claimable_amount.to_bytes(32, "big"))

    def digest(self, channel_id: int, max_claimable_amount: int) -> bytes:
        """The 32-byte EIP-712 hash a voucher's signer signs (``PaymentChannels.voucherDigest``)."""
        if not 0 <= max_claimable_amount <= UINT128_MAX:
            raise ValueError(f"a voucher's ceiling is a uint128, not {max_claimable_amount}")
        return keccak(self._prefix + self._struct_hash(channel_id, max_claimable_amount))

    def sign(self, signer: LocalAccount, channel_id: int, max_claimable_amount: int) -> bytes:
        """A voucher for a ceiling of ``max_claimable_amount``: 65 bytes r ‖ s ‖ v (v = 27 or 28)."""
        key = self._keys.get(signer.address)
        if key is None:
            key = self._keys[signer.address] = PrivateKey(bytes(signer.key))
        signature = key.sign_recoverable(self.digest(channel_id, max_claimable_amount), hasher=None)  # r, s, id
        return signature[:64] + bytes([signature[64] + 27])

    def voucher(self, signer: LocalAccount, channel_id: int, max_claimable_amount: int) -> Voucher:
        """A signed :class:`Voucher` (call ``to_header()`` for the header value)."""
        return Voucher(channel_id, max_claimable_amount, self.sign(signer, channel_id, max_claimable_amount))

    def recover(self, voucher: Voucher) -> str | None:
        """The signer's address (lowercase hex), or None for a signature ``PaymentChannels`` would refuse.

        OpenZeppelin ``ECDSA.tryRecover``'s rule: exactly 65 bytes, v 27 or 28, s at most half the
        curve order, and a point that recovers (r in 1..n-1 on the curve).
        """
        sig = voucher.signature
        if len(sig) != 65 or not 0 <= voucher.max_claimable_amount <= UINT128_MAX:
            return None
        r, s, v = int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:64], "big"), sig[64]
        if v not in (27, 28) or not 0 < r < _SECP256K1_N or not 0 < s <= _SECP256K1_HALF_N:
            return None
        public_key = self._recover_public_key(sig[:64], v - 27, self.digest(voucher.channel_id,
                                                                            voucher.max_claimable_amount))  # fmt: skip
        if public_key is None:
            return None
        return "0x" + keccak(public_key[1:])[-20:].hex()
