"""Sealed downloads against a hostile stream (red-team finding 11, the kind).

A sealed download is frames (a 4-byte length, then a SealedBox of at most one 64 KiB chunk). Whatever a server
sends, the client holds at most one frame of the protocol's maximum, and every failure — a frame announcing
more, a frame that does not open with the buyer's key, a stream ending inside a frame, a file that cannot be
written — is an ``AgentmarketError`` of one line that leaves no file behind; the CLI says it in one line.
Frames of honest sizes, split anyhow by the network, still open.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterator

import pytest
from eth_account import Account
from nacl.public import PrivateKey

from marketplace.chain.records import AssetKind
from marketplace.client import MarketplaceClient
from marketplace.content import CHUNK_SIZE, MAX_SEALED_FRAME, ContentError, frame, open_sealed_frames, seal_frames
from marketplace.errors import AgentmarketError
from marketplace.wallet_file import encryption_keypair
from tests.helpers.chain import anvil_market, fund
from tests.helpers.cli import AGENTMARKET, assert_one_line_error
from tests.helpers.servers import hostile_server, sealed_gateway

KEY = PrivateKey.generate()


def pieces(data: bytes, size: int) -> Iterator[bytes]:
    """``data`` as the network might deliver it: ``size`` bytes at a time."""
    for start in range(0, len(data), size):
        yield data[start : start + size]


def test_frames_of_honest_sizes_open_however_they_are_split():
    chunks = [os.urandom(CHUNK_SIZE), b"tail", b""]
    sealed = b"".join(seal_frames(chunks, bytes(KEY.public_key)))
    assert max(len(f) for f in seal_frames([os.urandom(CHUNK_SIZE)], bytes(KEY.public_key))) == 4 + MAX_SEALED_FRAME
    for size in (1, 7, 4096, len(sealed)):
        assert list(open_sealed_frames(pieces(sealed, size), bytes(KEY))) == chunks


def test_a_frame_announcing_more_than_the_maximum_is_refused_before_it_is_read():
    def stream() -> Iterator[bytes]:
        yield (MAX_SEALED_FRAME + 1).to_bytes(4, "big")
        raise AssertionError("the client read on past a length above the protocol's maximum")

    with pytest.raises(ContentError) as refused:
        list(open_sealed_frames(stream(), bytes(KEY)))
    assert f"announces {MAX_SEALED_FRAME + 1} bytes, more than the protocol's maximum of {MAX_SEALED_FRAME}" in str(
        refused.value
    )


@pytest.mark.parametrize(
    ("stream", "named"),
    [
        (b"".join(seal_frames([b"rows"], bytes(PrivateKey.generate().public_key))), "does not open with this key"),
        (frame(os.urandom(100)), "does not open with this key"),
        (frame(b""), "does not open with this key"),
        (b"".join(seal_frames([b"rows"], bytes(KEY.public_key)))[:-1], "ends inside a frame"),
        (b"\x00\x00", "ends inside a frame"),
    ],
    ids=["another recipient", "garbage", "empty frame", "truncated frame", "truncated length"],
)
def test_every_bad_stream_is_a_one_line_content_error(stream, named):
    with pytest.raises(ContentError) as refused:
        list(open_sealed_frames(pieces(stream, 5), bytes(KEY)))
    assert named in str(refused.value) and "\n" not in str(refused.value)
    assert isinstance(refused.value, AgentmarketError)


@pytest.fixture(scope="module")
def env():
    with anvil_market() as (chain, deployment, market):
        owner = fund(chain, market, 0)
        good = b"x,y\n" + b"1,2\n" * 40_000  # three chunks
        asset_id = market.marketplace.publish(owner, kind=AssetKind.DATASET, content_hash=hashlib.sha256(good).digest(),
                                              uri="d", price=1, token=market.token.address,
                                              payees=[(owner.address, 10_000)])  # fmt: skip
        yield chain, deployment, asset_id, good


@pytest.mark.backend("anvil")
def test_a_download_that_goes_bad_midway_leaves_no_file(env, tmp_path):
    chain, deployment, asset_id, good = env
    buyer = Account.create()
    key = encryption_keypair(buyer)

    def honest() -> Iterator[bytes]:
        yield from seal_frames(pieces(good, CHUNK_SIZE), bytes(key.public_key))

    def good_then_garbage() -> Iterator[bytes]:
        yield next(seal_frames([good[:CHUNK_SIZE]], bytes(key.public_key)))
        yield frame(os.urandom(64))

    out = tmp_path / "d.csv"
    with hostile_server(sealed_gateway(deployment, asset_id, honest)) as url:
        client = MarketplaceClient.connect(url, buyer, chain, encryption_key=bytes(key))
        client.download(asset_id, out)
        assert out.read_bytes() == good
        out.unlink()
    with hostile_server(sealed_gateway(deployment, asset_id, good_then_garbage)) as url:
        client = MarketplaceClient.connect(url, buyer, chain, encryption_key=bytes(key))
        with pytest.raises(AgentmarketError) as failed:
            client.download(asset_id, out)
        assert "sealed frame 1 (64 bytes) does not open with this key" in str(failed.value)
        with pytest.raises(AgentmarketError) as unwritable:
            client.download(asset_id, tmp_path / "no" / "such" / "dir" / "d.csv")
        assert "cannot write the content of asset" in str(unwritable.value)
    assert list(tmp_path.iterdir()) == []  # neither the file nor a .part of it


@pytest.mark.backend("anvil")
def test_the_cli_says_in_one_line_that_a_frame_was_refused(env, tmp_path):
    chain, deployment, asset_id, _ = env
    buyer = Account.create()
    (tmp_path / "buyer.json").write_text(json.dumps(Account.encrypt(buyer.key, "pw", kdf="scrypt", iterations=1024)))

    def frame_bomb() -> Iterator[bytes]:
        yield (0xFFFFFFF0).to_bytes(4, "big") + b"\0" * 65_536

    with hostile_server(sealed_gateway(deployment, asset_id, frame_bomb)) as url:
        env_vars = {**os.environ, "AGENTMARKET_RPC": chain.rpc_url or "", "AGENTMARKET_SERVER": url,
                    "AGENTMARKET_PASSWORD": "pw", "AGENTMARKET_WALLET": str(tmp_path / "buyer.json")}  # fmt: skip
        result = subprocess.run([*AGENTMARKET, "download", str(asset_id), "--out", "d.csv"], cwd=tmp_path,
                                env=env_vars, capture_output=True, text=True, timeout=120)  # fmt: skip
    assert_one_line_error(result, f"announces {0xFFFFFFF0} bytes, more than the protocol's maximum")
    assert not (tmp_path / "d.csv").exists() and not (tmp_path / "d.csv.part").exists()
