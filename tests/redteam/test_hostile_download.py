"""Hostile server vs the SDK's sealed download (`MarketplaceClient.download`, what `agentmarket download` runs).

A sealed download is a stream of length-prefixed frames (4-byte big-endian length, then a SealedBox). The
server writes frames of at most 64 KiB of plaintext (+48 bytes), but the client believes any length a
server writes: a frame that claims 4 GB is buffered whole in memory before anything is checked, so a
hostile server makes the client read (and hold) as much as it cares to send. And a frame that is not a
SealedBox for the client's key escapes as `nacl.exceptions.CryptoError`, not as the SDK's
`AgentmarketError`: the CLI, which turns only `AgentmarketError` into a one-line `error: …`, prints a
traceback. Expected: frames longer than the protocol's maximum are refused at once; every failure of a
download is an `AgentmarketError` naming what was wrong.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from eth_account import Account

from marketplace.chain.records import AssetKind
from marketplace.client import MarketplaceClient
from marketplace.errors import AgentmarketError
from marketplace.wallet_file import encryption_keypair
from tests.helpers.chain import anvil_market, fund
from tests.helpers.servers import hostile_server, sealed_gateway

pytestmark = pytest.mark.backend("anvil")

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def env() -> Iterator:
    with anvil_market() as (chain, deployment, market):
        owner = fund(chain, market, 0)
        asset_id = market.marketplace.publish(owner, kind=AssetKind.DATASET, content_hash=os.urandom(32), uri="d",
                                              price=1, token=market.token.address,
                                              payees=[(owner.address, 10_000)])  # fmt: skip
        yield chain, deployment, asset_id


def test_a_frame_claiming_gigabytes_is_refused_before_it_is_buffered(env):
    chain, deployment, asset_id = env
    sent = [0]

    def frame_bomb() -> Iterator[bytes]:
        yield (0xFFFFFFF0).to_bytes(4, "big")  # "the next frame is 4 GB"
        chunk = b"\0" * MiB
        for _ in range(96):
            sent[0] += len(chunk)
            yield chunk

    buyer = Account.create()
    with hostile_server(sealed_gateway(deployment, asset_id, frame_bomb)) as url:
        client = MarketplaceClient.connect(url, buyer, chain, encryption_key=bytes(encryption_keypair(buyer)))
        with pytest.raises(AgentmarketError):
            client.download(asset_id)
    assert sent[0] <= 16 * MiB, (
        f"the client kept reading a frame that announced 4 GB: {sent[0] // MiB} MiB taken in (and buffered) "
        "before it gave up; a sealed frame is at most 64 KiB + 48 bytes"
    )


def test_a_frame_that_does_not_open_is_an_sdk_error(env):
    chain, deployment, asset_id = env

    def garbage() -> Iterator[bytes]:
        payload = os.urandom(100)
        yield len(payload).to_bytes(4, "big") + payload

    buyer = Account.create()
    with hostile_server(sealed_gateway(deployment, asset_id, garbage)) as url:
        client = MarketplaceClient.connect(url, buyer, chain, encryption_key=bytes(encryption_keypair(buyer)))
        try:
            client.download(asset_id)
            raised = None
        except Exception as exc:
            raised = exc
    assert isinstance(raised, AgentmarketError), f"a bad frame raised {type(raised).__module__}.{type(raised).__name__}"
