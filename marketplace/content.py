"""Content-addressed storage of asset content, encrypted at rest, streamed in and out.

Files are stored under their sha256 as a sequence of frames: a 4-byte big-endian length, then a
NaCl SecretBox of one plaintext chunk (nonce and MAC included). Neither upload nor download ever
holds a whole file in memory. The same framing carries content sealed to a buyer's X25519 key
(:func:`seal_frames`), which the buyer opens frame by frame (:func:`open_sealed_frames`).
"""

from __future__ import annotations

import hashlib
import secrets
import struct
from collections.abc import AsyncIterable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.secret import SecretBox

from marketplace.errors import AgentmarketError
from marketplace.keyfile import load_or_create_secret

CHUNK_SIZE = 64 * 1024
_LENGTH = struct.Struct(">I")


class ContentError(AgentmarketError):
    """Content could not be stored or read."""


class ContentTooLarge(ContentError):
    """The upload is larger than the configured limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"content is larger than the limit of {limit} bytes")
        self.limit = limit


class ContentHashMismatch(ContentError):
    """The upload's sha256 is not the hash published on chain."""

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(f"content sha256 is {actual} but the asset's on-chain content hash is {expected}")
        self.expected, self.actual = expected, actual


@dataclass(frozen=True)
class StoredContent:
    """What was stored."""

    sha256: str
    size: int


def frame(payload: bytes) -> bytes:
    """One length-prefixed frame."""
    return _LENGTH.pack(len(payload)) + payload


def read_frames(stream: Iterable[bytes]) -> Iterator[bytes]:
    """Split a byte stream (arbitrary chunking) back into frame payloads."""
    buffer = bytearray()
    for piece in stream:
        buffer += piece
        while len(buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(buffer)
            if len(buffer) < _LENGTH.size + length:
                break
            yield bytes(buffer[_LENGTH.size : _LENGTH.size + length])
            del buffer[: _LENGTH.size + length]
    if buffer:
        raise ContentError("truncated frame stream")


def seal_frames(plaintext: Iterable[bytes], recipient: bytes) -> Iterator[bytes]:
    """Seal each plaintext chunk to ``recipient``'s X25519 public key, as frames."""
    box = SealedBox(PublicKey(recipient))
    for chunk in plaintext:
        yield frame(box.encrypt(chunk))


def open_sealed_frames(stream: Iterable[bytes], private_key: bytes) -> Iterator[bytes]:
    """Open frames sealed to ``private_key``'s public key, yielding plaintext chunks."""
    box = SealedBox(PrivateKey(private_key))
    for payload in read_frames(stream):
        yield box.decrypt(payload)


class ContentStore:
    """Encrypted, content-addressed files under ``root``; the key lives in ``root/secret.key``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._box = SecretBox(load_or_create_secret(root / "secret.key", SecretBox.KEY_SIZE))

    def path_of(self, sha256_hex: str) -> Path:
        """Where content with this hash is (or would be) stored."""
        digest = sha256_hex.removeprefix("0x").lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ContentError(f"not a sha256 hex digest: {sha256_hex!r}")
        return self.root / f"{digest}.bin"

    def has(self, sha256_hex: str) -> bool:
        """True if content with this hash is stored."""
        return self.path_of(sha256_hex).exists()

    async def put(self, chunks: AsyncIterable[bytes], expected_sha256: str, max_bytes: int) -> StoredContent:
        """Stream ``chunks`` to disk encrypted; keep them only if their sha256 is ``expected_sha256``."""
        target = self.path_of(expected_sha256)
        partial = target.with_suffix(f".{secrets.token_hex(4)}.part")
        digest, size, pending = hashlib.sha256(), 0, bytearray()
        try:
            with partial.open("wb") as out:
                async for piece in chunks:
                    size += len(piece)
                    if size > max_bytes:
                        raise ContentTooLarge(max_bytes)
                    digest.update(piece)
                    pending += piece
                    while len(pending) >= CHUNK_SIZE:
                        out.write(frame(self._box.encrypt(bytes(pending[:CHUNK_SIZE]))))
                        del pending[:CHUNK_SIZE]
                if pending or size == 0:
                    out.write(frame(self._box.encrypt(bytes(pending))))
            actual = digest.hexdigest()
            expected = expected_sha256.removeprefix("0x").lower()
            if actual != expected:
                raise ContentHashMismatch("0x" + expected, "0x" + actual)
            partial.replace(target)
            return StoredContent("0x" + actual, size)
        finally:
            partial.unlink(missing_ok=True)

    def iter_plaintext(self, sha256_hex: str) -> Iterator[bytes]:
        """The stored content, decrypted chunk by chunk."""
        path = self.path_of(sha256_hex)
        if not path.exists():
            raise ContentError(f"no content stored for {sha256_hex}")

        def chunks() -> Iterator[bytes]:
            with path.open("rb") as handle:
                while piece := handle.read(CHUNK_SIZE):
                    yield piece

        for payload in read_frames(chunks()):
            yield self._box.decrypt(payload)
