"""Asset content, stored per (chain, asset, version) by its owner's upload, encrypted at rest, streamed.

The right to serve bytes comes from an **upload record**, never from a hash alone: the asset id,
the version, the sha256 the asset had on chain, the uploader (the asset's on-chain owner at upload
time), the plaintext size and the *scope* — the chain identity (CAIP-2 chain id, genesis block
hash, Marketplace address), because asset ids restart at 1 on every new chain or deployment. Two
assets that name the same content hash share nothing: each is served only what its own owner
uploaded for that very version.

Layout under ``root``::

    secret.key                              the at-rest key (NaCl SecretBox, 32 bytes, mode 0600)
    <scope key>/CHAIN                       the scope in clear, for operators
    <scope key>/<asset id>/v<version>.bin   one upload: MAGIC, record frame, content frames

``<scope key>`` is the first 32 hex digits of sha256(scope). A file is MAGIC, then the record as
one fixed-size frame, then the content as frames: a 4-byte big-endian length and a SecretBox of one
plaintext chunk of up to :data:`CHUNK_SIZE` bytes (nonce and MAC included). The record is inside
the file, encrypted and authenticated with the same key, so a file copied to another asset's,
version's or chain's place is refused, not served. Neither upload nor download ever holds a whole
file in memory; an upload always streams and hashes every byte (nothing is skipped because some
bytes "already exist"), and a download first checks every frame's MAC so that a damaged file is a
clear error before any byte (or any payment) is taken (once per file: see :meth:`ContentStore.find`).

Files of the format before upload records (``<sha256>.bin`` directly under ``root``) are never
served: their owners upload the content again.

The same framing carries content sealed to a buyer's X25519 key (:func:`seal_frames`), which the
buyer opens frame by frame (:func:`open_sealed_frames`).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import secrets
import shutil
import struct
import time
from collections.abc import AsyncIterable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

from nacl.exceptions import CryptoError
from nacl.public import PrivateKey, PublicKey, SealedBox
from nacl.secret import SecretBox

from marketplace.chain.identity import ChainIdentity
from marketplace.errors import AgentmarketError
from marketplace.keyfile import load_or_create_secret

if TYPE_CHECKING:
    from marketplace.chain import Chain

CHUNK_SIZE = 64 * 1024
_LENGTH = struct.Struct(">I")
#: First bytes of every stored upload (format 2: an upload record, then the content).
MAGIC = b"AMCONT2\n"
#: Format name inside every upload record.
RECORD_FORMAT = "agentmarket-content/2"
#: The record's plaintext is padded to this many bytes, so its frame has a fixed length.
_RECORD_SIZE = 1024
_BOX_OVERHEAD = SecretBox.NONCE_SIZE + SecretBox.MACBYTES
_RECORD_FRAME = _LENGTH.size + _BOX_OVERHEAD + _RECORD_SIZE
#: Bytes a sealed frame adds to its plaintext chunk: the ephemeral X25519 public key and the MAC.
SEALED_OVERHEAD = PublicKey.SIZE + SecretBox.MACBYTES
#: Longest payload of a frame sealed to a buyer (bytes): one :data:`CHUNK_SIZE` chunk and the SealedBox overhead.
MAX_SEALED_FRAME = CHUNK_SIZE + SEALED_OVERHEAD
#: A file whose ctime is older than this (ns) when it is checked whole cannot change unseen later.
_SETTLED_NS = 2_000_000_000

log = logging.getLogger("agentmarket.content")


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


class ContentNotUploaded(ContentError):
    """No upload by the asset's owner is on record for this (chain, asset, version, sha256)."""

    def __init__(self, asset_id: int, version: int) -> None:
        super().__init__(
            f"asset {asset_id} version {version} has no content uploaded by its owner on this server; "
            f"the owner uploads it with PUT /v1/assets/{asset_id}/content (content stored before upload "
            "records existed, or for another chain or version, must be uploaded again)"
        )
        self.asset_id, self.version = asset_id, version


class ContentUnreadable(ContentError):
    """A stored upload exists but is damaged: truncated, altered, or not this asset's and version's."""

    def __init__(self, asset_id: int, version: int, reason: str) -> None:
        super().__init__(
            f"the stored content of asset {asset_id} version {version} is damaged on this server ({reason}); "
            f"its owner must upload it again with PUT /v1/assets/{asset_id}/content"
        )
        self.asset_id, self.version, self.reason = asset_id, version, reason


@dataclass(frozen=True)
class UploadRecord:
    """One upload: what grants the right to serve content, for exactly one (scope, asset, version).

    ``sha256`` is ``0x`` + 64 hex digits of the plaintext; ``uploader`` the checksummed address of
    the asset's on-chain owner when it uploaded; ``size`` plaintext bytes; ``uploaded_at`` unix
    seconds; ``scope`` the chain identity (see :func:`chain_scope`).
    """

    scope: str
    asset_id: int
    version: int
    sha256: str
    uploader: str
    size: int
    uploaded_at: int


@dataclass(frozen=True)
class StoredContent:
    """An upload found intact for the asset version asked for; stream it with :meth:`iter_plaintext`."""

    record: UploadRecord
    path: Path
    store: ContentStore

    @property
    def sha256(self) -> str:
        """``0x`` + the plaintext's sha256 in hex."""
        return self.record.sha256

    @property
    def size(self) -> int:
        """Plaintext size in bytes."""
        return self.record.size

    def iter_plaintext(self) -> Iterator[bytes]:
        """The content, decrypted chunk by chunk (raises :class:`ContentUnreadable` if it changed since)."""
        return self.store._iter_plaintext(self.record, self.path)


def chain_scope(chain: Chain, marketplace_address: str) -> str:
    """The chain identity stored content is bound to: ``eip155:<chain id>/genesis:0x<hash>/marketplace:<addr>``.

    Asset ids restart at 1 on a new chain (an ``agentmarket node`` restart) and on a redeployment,
    so the chain id alone (CAIP-2) does not tell two chains apart; the genesis block hash and the
    Marketplace contract's address do.
    """
    return f"{ChainIdentity.of(chain)}/marketplace:{marketplace_address}"


def stored_scopes(root: Path) -> dict[str, Path]:
    """The chain scopes a content store under ``root`` holds uploads for, with their directories."""
    scopes: dict[str, Path] = {}
    if root.is_dir():
        for label in sorted(root.glob("*/CHAIN")):
            with contextlib.suppress(OSError, UnicodeDecodeError):
                scopes[label.read_text().strip()] = label.parent
    return scopes


def archive_scopes(root: Path, keep: str, destination: Path) -> list[str]:
    """Move the uploads of every chain scope under ``root`` except ``keep`` into ``destination``; returns those scopes.

    Nothing is deleted, and nothing of ``keep`` moves. ``destination`` gets the scope directories as
    they were and a copy of the at-rest key (``secret.key``), so a store opened on it
    (``ContentStore(destination, scope)``) reads them. Uploads of another chain are never served
    anyway (each file's record names its scope); this takes them out of the way.
    """
    moving = {scope: path for scope, path in stored_scopes(root).items() if scope != keep}
    if not moving:
        return []
    destination.mkdir(parents=True, exist_ok=True)
    key = root / "secret.key"
    if key.exists() and not (destination / key.name).exists():
        shutil.copy2(key, destination / key.name)
    for path in moving.values():
        path.replace(destination / path.name)
    return sorted(moving)


def frame(payload: bytes) -> bytes:
    """One length-prefixed frame."""
    return _LENGTH.pack(len(payload)) + payload


def read_frames(stream: Iterable[bytes], *, max_length: int | None = None) -> Iterator[bytes]:
    """Split a byte stream (arbitrary chunking) back into frame payloads.

    With ``max_length`` (bytes), a frame announcing a longer payload is refused (:class:`ContentError`) as
    soon as its 4-byte length arrives, before any of it is buffered: the buffer never holds more than one
    frame of at most ``max_length`` bytes plus one piece of the stream. A stream ending inside a frame is a
    :class:`ContentError` too.
    """
    buffer = bytearray()
    offset = 0  # bytes of the stream before ``buffer``, for the error messages
    for piece in stream:
        buffer += piece
        while len(buffer) >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(buffer)
            if max_length is not None and length > max_length:
                raise ContentError(
                    f"a frame at byte {offset} of the stream announces {length} bytes, more than the protocol's "
                    f"maximum of {max_length}; refusing to read it"
                )
            if len(buffer) < _LENGTH.size + length:
                break
            yield bytes(buffer[_LENGTH.size : _LENGTH.size + length])
            del buffer[: _LENGTH.size + length]
            offset += _LENGTH.size + length
    if buffer:
        raise ContentError(f"the frame stream ends inside a frame at byte {offset} (truncated)")


def seal_frames(plaintext: Iterable[bytes], recipient: bytes) -> Iterator[bytes]:
    """Seal each plaintext chunk (at most :data:`CHUNK_SIZE` bytes) to ``recipient``'s X25519 public key, as frames."""
    box = SealedBox(PublicKey(recipient))
    for chunk in plaintext:
        yield frame(box.encrypt(chunk))


def open_sealed_frames(stream: Iterable[bytes], private_key: bytes) -> Iterator[bytes]:
    """Open frames sealed to ``private_key``'s public key, yielding plaintext chunks.

    A frame longer than :data:`MAX_SEALED_FRAME` is refused before it is buffered, and one that does not
    open with this key (not a SealedBox, another recipient, damaged) stops the stream: both raise
    :class:`ContentError` naming the frame, as does a stream that ends inside a frame.
    """
    box = SealedBox(PrivateKey(private_key))
    for index, payload in enumerate(read_frames(stream, max_length=MAX_SEALED_FRAME)):
        try:
            yield box.decrypt(payload)
        except CryptoError:
            raise ContentError(
                f"sealed frame {index} ({len(payload)} bytes) does not open with this key: not sealed to it, or "
                "damaged on the way"
            ) from None


def _digest(sha256_hex: str) -> str:
    digest = sha256_hex.removeprefix("0x").lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ContentError(f"not a sha256 hex digest: {sha256_hex!r}")
    return digest


def _stored_size(size: int) -> int:
    """Bytes on disk of an upload of ``size`` plaintext bytes (an empty upload is one empty frame)."""
    frames = max(1, -(-size // CHUNK_SIZE))
    return len(MAGIC) + _RECORD_FRAME + frames * (_LENGTH.size + _BOX_OVERHEAD) + size


class ContentStore:
    """Uploads of one chain's assets, encrypted under ``root``; the key lives in ``root/secret.key``.

    ``scope`` is the chain identity (:func:`chain_scope`); a store never reads another scope's files.
    """

    def __init__(self, root: Path, scope: str) -> None:
        if not scope:
            raise ContentError("a content store needs its chain scope (see chain_scope)")
        self.root = root
        self.scope = scope
        self.root.mkdir(parents=True, exist_ok=True)
        self._box = SecretBox(load_or_create_secret(root / "secret.key", SecretBox.KEY_SIZE))
        self.scope_dir = root / hashlib.sha256(scope.encode()).hexdigest()[:32]
        #: path -> (inode, size, mtime, ctime) of an upload file checked whole, MAC by MAC.
        self._verified: dict[Path, tuple[int, int, int, int]] = {}
        self.scope_dir.mkdir(exist_ok=True)
        label = self.scope_dir / "CHAIN"
        if not label.exists():
            label.write_text(scope + "\n")

    @classmethod
    def for_chain(cls, root: Path, chain: Chain, marketplace_address: str) -> ContentStore:
        """The store of the deployment whose Marketplace is at ``marketplace_address`` on ``chain``."""
        return cls(root, chain_scope(chain, marketplace_address))

    def path_of(self, asset_id: int, version: int) -> Path:
        """Where the upload for ``asset_id`` at ``version`` is (or would be) stored."""
        if asset_id < 1 or not 1 <= version < 2**16:
            raise ContentError(f"no asset {asset_id} version {version}: ids start at 1, versions are uint16 from 1")
        return self.scope_dir / str(asset_id) / f"v{version}.bin"

    async def put(
        self,
        chunks: AsyncIterable[bytes],
        *,
        asset_id: int,
        version: int,
        sha256: str,
        uploader: str,
        max_bytes: int,
    ) -> StoredContent:
        """Stream ``chunks`` to disk encrypted, as ``uploader``'s upload of ``asset_id`` at ``version``.

        Every byte is read and hashed; the upload is kept only if the plaintext's sha256 is
        ``sha256`` (the version's on-chain content hash) and it is at most ``max_bytes`` long. It
        then replaces any earlier upload of the same version atomically (re-uploading is
        idempotent) and drops the asset's older versions. The caller checks that ``uploader`` is
        the asset's on-chain owner. Raises :class:`ContentTooLarge`, :class:`ContentHashMismatch`;
        a failed upload leaves what was stored before untouched.
        """
        expected = _digest(sha256)
        target = self.path_of(asset_id, version)
        target.parent.mkdir(exist_ok=True)
        partial = target.with_name(f"{target.stem}.{secrets.token_hex(8)}.part")
        digest, size, pending = hashlib.sha256(), 0, bytearray()
        try:
            with partial.open("wb") as out:
                out.write(MAGIC)
                out.write(self._record_frame(None))  # placeholder of the same length, rewritten below
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
                if actual != expected:
                    raise ContentHashMismatch("0x" + expected, "0x" + actual)
                record = UploadRecord(
                    scope=self.scope, asset_id=asset_id, version=version, sha256="0x" + actual,
                    uploader=uploader, size=size, uploaded_at=int(time.time()),
                )  # fmt: skip
                out.seek(len(MAGIC))
                out.write(self._record_frame(record))
                out.flush()
                await asyncio.to_thread(os.fsync, out.fileno())  # durable before it replaces anything
            partial.replace(target)
        finally:
            partial.unlink(missing_ok=True)
        self._drop_versions_before(asset_id, version)
        return StoredContent(record, target, self)

    def find(self, asset_id: int, version: int, sha256: str, owner: str) -> StoredContent:
        """The intact upload of ``asset_id`` at ``version`` by ``owner`` of content ``sha256``.

        ``version``, ``sha256`` (``0x`` + hex) and ``owner`` are what the chain says now. The file's
        record, size and (see below) every frame's MAC are checked before this returns, without
        holding the content in memory. Raises
        :class:`ContentNotUploaded` when no such upload is on record (none for this chain, asset or
        version, or one for another hash or uploader), :class:`ContentUnreadable` when the stored
        file is damaged.

        A file already checked whole is not decrypted again while its inode, size, mtime and ctime
        stay the same, so asking (e.g. an unpaid x402 request) costs a record read, not a pass over
        the content. A file changed less than 2 s before its check is checked again next time, as
        file times are coarser than writes. Downloads still check every frame's MAC as they stream.
        """
        expected = "0x" + _digest(sha256)
        path = self.path_of(asset_id, version)
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise ContentNotUploaded(asset_id, version) from None
        with handle:
            record = self._read_record(handle, asset_id, version)
            if record.sha256 != expected or record.uploader != owner:
                # The chain no longer has what was uploaded (a reorg, or a chain restarted in the same
                # second): not this version's content.
                raise ContentNotUploaded(asset_id, version)
            stat = os.fstat(handle.fileno())
            if stat.st_size != _stored_size(record.size):
                raise self._damaged(record, f"{stat.st_size} bytes on disk, {_stored_size(record.size)} expected")
            identity = (stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)
            if self._verified.get(path) != identity:
                started = time.time_ns()
                for _ in self._decrypt_content(handle, record):
                    pass
                if started - stat.st_ctime_ns > _SETTLED_NS:
                    self._verified[path] = identity
        return StoredContent(record, path, self)

    def has_upload(self, asset_id: int, version: int, sha256: str, owner: str) -> bool:
        """True if ``owner``'s upload of content ``sha256`` for ``asset_id`` at ``version`` is on record here.

        Cheap (one record read, no pass over the content), for listings: a file damaged past its record
        still counts until :meth:`find` (which every download runs) checks it whole.
        """
        try:
            with self.path_of(asset_id, version).open("rb") as handle:
                record = self._read_record(handle, asset_id, version)
        except (OSError, ContentError):
            return False
        return record.sha256 == "0x" + _digest(sha256) and record.uploader == owner

    # ------------------------------------------------------------------ internal

    def _record_frame(self, record: UploadRecord | None) -> bytes:
        text = b"" if record is None else json.dumps({"format": RECORD_FORMAT, **asdict(record)}).encode()
        if len(text) > _RECORD_SIZE:
            raise ContentError(f"upload record longer than {_RECORD_SIZE} bytes (scope {self.scope!r} too long?)")
        return frame(self._box.encrypt(text.ljust(_RECORD_SIZE)))

    def _read_record(self, handle: IO[bytes], asset_id: int, version: int) -> UploadRecord:
        """Parse and check the record at the start of ``handle`` (left positioned after it)."""

        def damaged(reason: str) -> ContentUnreadable:
            return self._unreadable(asset_id, version, reason)

        head = handle.read(len(MAGIC) + _RECORD_FRAME)
        if len(head) < len(MAGIC) + _RECORD_FRAME or not head.startswith(MAGIC):
            raise damaged("no upload record at the start of the file")
        (length,) = _LENGTH.unpack_from(head, len(MAGIC))
        if length != _BOX_OVERHEAD + _RECORD_SIZE:
            raise damaged("the upload record has the wrong length")
        try:
            fields = json.loads(self._box.decrypt(head[len(MAGIC) + _LENGTH.size :]))
            if fields.pop("format") != RECORD_FORMAT:
                raise ValueError("unknown record format")
            record = UploadRecord(**fields)
        except (CryptoError, ValueError, TypeError, KeyError, AttributeError):
            raise damaged("the upload record does not decrypt or parse with this server's key") from None
        if (record.scope, record.asset_id, record.version) != (self.scope, asset_id, version):
            raise damaged(
                f"the file holds the upload of asset {record.asset_id} version {record.version} "
                f"on {record.scope}, not this one"
            )
        return record

    def _decrypt_content(self, handle: IO[bytes], record: UploadRecord) -> Iterator[bytes]:
        """Decrypt the content frames after the record; check their total against the record."""
        total, digest = 0, hashlib.sha256()
        while header := handle.read(_LENGTH.size):
            (length,) = _LENGTH.unpack(header.ljust(_LENGTH.size, b"\xff"))
            if not _BOX_OVERHEAD <= length <= _BOX_OVERHEAD + CHUNK_SIZE:
                raise self._damaged(record, f"the content frame at plaintext byte {total} has a bad length")
            payload = handle.read(length)
            try:
                chunk = self._box.decrypt(payload)
            except CryptoError:  # also a short (truncated) frame
                raise self._damaged(record, f"the content frame at plaintext byte {total} fails its MAC") from None
            total += len(chunk)
            digest.update(chunk)
            yield chunk
        if total != record.size or "0x" + digest.hexdigest() != record.sha256:
            raise self._damaged(record, "the decrypted content is not the recorded size and sha256")

    def _iter_plaintext(self, record: UploadRecord, path: Path) -> Iterator[bytes]:
        """Stream ``path`` (opened at the first chunk; a re-upload of the same content may have replaced it)."""
        try:
            handle = path.open("rb")
        except FileNotFoundError:
            raise self._damaged(record, "the file was removed") from None
        with handle:
            now = self._read_record(handle, record.asset_id, record.version)
            if (now.sha256, now.uploader) != (record.sha256, record.uploader):
                raise self._damaged(record, "the file was replaced by another upload since it was found")
            yield from self._decrypt_content(handle, record)

    def _damaged(self, record: UploadRecord, reason: str) -> ContentUnreadable:
        return self._unreadable(record.asset_id, record.version, reason)

    def _unreadable(self, asset_id: int, version: int, reason: str) -> ContentUnreadable:
        log.error("content of asset %s version %s in %s: %s", asset_id, version, self.scope_dir, reason)
        return ContentUnreadable(asset_id, version, reason)

    def _drop_versions_before(self, asset_id: int, version: int) -> None:
        """Delete the asset's uploads of older versions (never served again: the chain moved on)."""
        for old in self.path_of(asset_id, version).parent.glob("v*.bin"):
            number = old.stem.removeprefix("v")
            if number.isdigit() and int(number) < version:
                old.unlink(missing_ok=True)
