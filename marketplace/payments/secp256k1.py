"""Recover a secp256k1 signer's public key without letting go of the GIL (the gateway's hot path).

coincurve calls libsecp256k1 through cffi, which releases the GIL around every C call: three per
recovery. In a busy gateway each release hands the GIL to the event loop, and getting it back waits
for the loop's next pause; measured with ``scripts/bench_gateway.py``, those hand-offs cost the
channel-paid path about 15% of its throughput, five times the 80 us of the recovery itself. This
module calls the same library (the copy coincurve ships) through ``ctypes.PyDLL``, which keeps the
GIL for the few microseconds each call takes. When that copy cannot be loaded, coincurve is used.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable

from coincurve import PublicKey

_CONTEXT_VERIFY = (1 << 0) | (1 << 8)  # SECP256K1_CONTEXT_VERIFY (accepted, and ignored, by newer versions)
_EC_UNCOMPRESSED = 1 << 1  # SECP256K1_EC_UNCOMPRESSED


def _coincurve_recover(signature: bytes, recovery_id: int, digest: bytes) -> bytes | None:
    try:
        return PublicKey.from_signature_and_message(signature + bytes([recovery_id]), digest, hasher=None).format(
            compressed=False
        )
    except ValueError:  # no point on the curve recovers from this signature
        return None


def _load_gil_holding_recover() -> Callable[[bytes, int, bytes], bytes | None] | None:
    try:
        from coincurve import _libsecp256k1

        lib = ctypes.PyDLL(_libsecp256k1.__file__)
        create = lib.secp256k1_context_create
        parse = lib.secp256k1_ecdsa_recoverable_signature_parse_compact
        recover = lib.secp256k1_ecdsa_recover
        serialize = lib.secp256k1_ec_pubkey_serialize
    except (ImportError, OSError, AttributeError):  # pragma: no cover - depends on the coincurve build
        return None
    create.restype, create.argtypes = ctypes.c_void_p, [ctypes.c_uint]
    parse.restype = recover.restype = serialize.restype = ctypes.c_int
    parse.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
    recover.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p]
    serialize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_size_t), ctypes.c_char_p,
                          ctypes.c_uint]  # fmt: skip
    context = create(_CONTEXT_VERIFY)  # lives as long as the process
    if not context:  # pragma: no cover
        return None

    def recover_public_key(signature: bytes, recovery_id: int, digest: bytes) -> bytes | None:
        parsed, point, out = (
            ctypes.create_string_buffer(65),
            ctypes.create_string_buffer(64),
            ctypes.create_string_buffer(65),
        )
        if not parse(context, parsed, signature, recovery_id) or not recover(context, point, parsed, digest):
            return None
        size = ctypes.c_size_t(65)
        serialize(context, out, ctypes.byref(size), point, _EC_UNCOMPRESSED)
        return out.raw

    return recover_public_key


#: ``recover_public_key(signature (r || s, 64 bytes), recovery_id (0-3), digest (32 bytes))``: the
#: signer's uncompressed public key (65 bytes, 0x04 || x || y), or None when nothing recovers.
recover_public_key: Callable[[bytes, int, bytes], bytes | None] = _load_gil_holding_recover() or _coincurve_recover
