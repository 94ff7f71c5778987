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

import json
import os
import time
from collections.abc import Iterator

import pytest
from eth_account import Account

from marketplace.chain import connect
from marketplace.chain.deployment import deploy_all
from marketplace.chain.records import AssetKind
from marketplace.client import MarketplaceClient
from marketplace.errors import AgentmarketError
from marketplace.siwe import SiweMessage, format_time
from marketplace.wallet_file import encryption_keypair
from tests.redteam.helpers import Reply, fund, hostile_server

pytestmark = pytest.mark.anvil

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def env() -> Iterator:
    chain = connect("anvil")
    try:
        deployment = deploy_all(chain, chain.accounts[0])
        market = deployment.market(chain)
        owner = fund(chain, market, 0)
        asset_id = market.marketplace.publish(owner, kind=AssetKind.DATASET, content_hash=os.urandom(32), uri="d",
                                              price=1, token=market.token.address,
                                              payees=[(owner.address, 10_000)])  # fmt: skip
        yield chain, deployment, asset_id
    finally:
        chain.close()


def login_message(host: str, address: str, chain_id: int) -> str:
    """The EIP-4361 message an honest server at ``host`` (its 127.0.0.1:port) asks ``address`` to sign."""
    now = int(time.time())
    return SiweMessage(domain=host, address=address, uri=f"http://{host}", chain_id=chain_id, nonce="n0nce1234",
                       issued_at=format_time(now), expiration_time=format_time(now + 300),
                       statement="Sign in to agentmarket.").to_text()  # fmt: skip


def sealed_gateway(deployment, asset_id: int, content) -> callable:
    def route(method: str, path: str, headers: dict[str, str], body: bytes) -> Reply | None:
        if path == "/v1/deployment":
            return Reply(200, deployment.to_json())
        if path == "/v1/auth/nonce":  # a login the SDK signs: for this very server, account and chain, short-lived
            message = login_message(headers["host"], json.loads(body)["address"], deployment.chain_id)
            return Reply(200, {"nonce": "n0nce1234", "message": message, "expires_at": int(time.time()) + 300})
        if path == "/v1/auth/verify":
            address = json.loads(body)["message"].splitlines()[1]  # the login the SDK signed (EIP-4361 line 2)
            return Reply(200, {"token": "t", "address": address, "expires_at": int(time.time()) + 900})
        if path.startswith(f"/v1/assets/{asset_id}/content"):
            return Reply(200, content(), {"X-Content-Encryption": "x25519-sealedbox-frames",
                                          "Content-Type": "application/vnd.agentmarket.sealed-frames"})  # fmt: skip
        return None

    return route


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
