"""Content reaches only those who paid for *that* content (issue 12 §1) — attacks over real HTTP.

Every path by which an asset could come to point at bytes its owner did not upload is tried
against a live server (uvicorn on 127.0.0.1) over both backends: the same content hash at
publish, a new version naming another asset's hash (or its own old one), a version published
mid-upload, a snapshot-reverted chain re-using an asset id, a restarted chain (new genesis, same
addresses and ids), uploads of the wrong bytes for a hash whose bytes "already exist",
concurrent uploads of the same bytes, x402 downloads of an asset never uploaded, re-uploads,
damaged, moved and deleted files, and files of the store's format before upload records. Each
asserts the status, the JSON error and that no byte of the other asset's plaintext came back.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from fastapi import FastAPI
from nacl.public import PrivateKey
from nacl.secret import SecretBox
from x402 import x402Client
from x402.http.clients.httpx import x402HttpxClient
from x402.mechanisms.evm.exact import register_exact_evm_client
from x402.mechanisms.evm.signers import EthAccountSigner

from marketplace.api import Settings, create_app
from marketplace.chain import connect
from marketplace.chain.deployment import deploy_all
from marketplace.chain.records import AssetKind
from marketplace.chain.units import to_units
from marketplace.content import (
    CHUNK_SIZE,
    ContentNotUploaded,
    ContentStore,
    ContentUnreadable,
    frame,
)
from tests.helpers.chain import BACKENDS, next_second
from tests.helpers.servers import serving

SECRET = os.urandom(150_000)  # the victim's plaintext: three 64 KiB frames
SECRET_HASH = hashlib.sha256(SECRET).digest()
OTHER = os.urandom(70_000)  # the attacker's own content
OTHER_HASH = hashlib.sha256(OTHER).digest()
PRICE = to_units(1)
NETWORK = "eip155:31337"


# ---------------------------------------------------------------------- helpers


def settings_for(home: Path, deployment) -> Settings:
    return Settings(manifest=deployment.save(home / "deployment.json"), data_dir=home / "server",
                    siwe_domain="testserver", settle_interval=3600, max_upload_bytes=1_000_000)  # fmt: skip


@dataclass
class Server:
    """A live API over the session chain, one per module and backend."""

    url: str
    http: httpx.Client
    app: FastAPI

    def path_of(self, asset_id: int, version: int = 1) -> Path:
        """Where the store keeps the upload of ``asset_id`` at ``version``."""
        return self.app.state.services.content.path_of(asset_id, version)


@pytest.fixture(scope="module")
def server(session_chain, deployment, tmp_path_factory) -> Iterator[Server]:
    app = create_app(settings_for(tmp_path_factory.mktemp("content"), deployment), chain=session_chain)
    with serving(app) as url, httpx.Client(base_url=url, timeout=60) as http:
        yield Server(url, http, app)


@pytest.fixture
def http(server, chain) -> httpx.Client:
    """The live server's client; the chain is reverted after each test (the store is not)."""
    return server.http


def login(http: httpx.Client, account) -> dict[str, str]:
    issued = http.post("/v1/auth/nonce", json={"address": account.address}).json()
    signature = Account.sign_message(encode_defunct(text=issued["message"]), account.key).signature
    verified = http.post("/v1/auth/verify", json={"message": issued["message"], "signature": "0x" + signature.hex()})
    assert verified.status_code == 200, verified.text
    return {"Authorization": f"Bearer {verified.json()['token']}"}


def publish(market, owner, content_hash: bytes, price: int = PRICE) -> int:
    return market.marketplace.publish(
        owner, kind=AssetKind.DATASET, content_hash=content_hash, uri="ipfs://x", price=price,
        token=market.token.address, payees=[(owner.address, 10_000)],
    )  # fmt: skip


def buy(market, buyer, asset_id: int) -> None:
    market.token.mint(market.chain.accounts[0], buyer.address, PRICE)
    market.token.approve(buyer, market.marketplace.address, PRICE)
    market.marketplace.buy(buyer, asset_id, PRICE)


def upload(http: httpx.Client, asset_id: int, content, auth: dict[str, str]) -> httpx.Response:
    return http.put(f"/v1/assets/{asset_id}/content", content=content, headers=auth)


def download(http: httpx.Client, asset_id: int, auth: dict[str, str], **params) -> httpx.Response:
    return http.get(f"/v1/assets/{asset_id}/content", headers=auth, params=params)


def assert_no_plaintext(body: bytes, plaintext: bytes = SECRET) -> None:
    """Not one 16-byte window of ``plaintext`` is in ``body`` (so at most 15 bytes of it, by chance)."""
    leaked = [i for i in range(0, len(plaintext) - 15, 16) if plaintext[i : i + 16] in body]
    assert not leaked, f"{len(leaked)} windows of the plaintext leaked"


def refused(response: httpx.Response, status: int, code: str, plaintext: bytes = SECRET) -> str:
    """The response is the JSON error ``code`` with ``status`` and holds nothing of ``plaintext``; its detail."""
    assert response.status_code == status, f"{response.status_code}: {response.content[:200]!r}"
    body = response.json()
    assert set(body) == {"error", "detail"} and body["error"] == code, body
    assert "payment-required" not in response.headers and "payment-response" not in response.headers
    assert_no_plaintext(response.content, plaintext)
    return body["detail"]


def x402_get(server: Server, market, payer, asset_id: int) -> httpx.Response:
    """GET the asset's x402 route with the x402 package's own client (which pays whatever a 402 asks)."""
    client = x402Client()
    register_exact_evm_client(client, EthAccountSigner(payer), networks=NETWORK)
    client.set_spend_controls({"allowed_assets": [{"network": NETWORK, "asset": market.token.address}]})

    async def fetch() -> httpx.Response:
        async with x402HttpxClient(client, timeout=30) as http:
            return await http.get(f"{server.url}/v1/assets/{asset_id}/x402")

    return asyncio.run(fetch())


@pytest.fixture
def victim(market, bob, http) -> int:
    """Bob's dataset SECRET, uploaded by bob."""
    asset_id = publish(market, bob, SECRET_HASH)
    assert upload(http, asset_id, SECRET, login(http, bob)).status_code == 201
    return asset_id


# ---------------------------------------------------------------------- the same hash at publish


def test_publishing_another_assets_hash_gets_none_of_its_bytes(server, http, market, victim, alice, carol):
    public_hash = http.get(f"/v1/assets/{victim}").json()["content_hash"]
    assert public_hash == "0x" + SECRET_HASH.hex()
    copycat = publish(market, carol, bytes.fromhex(public_hash[2:]), price=1)
    carol_auth = login(http, carol)

    detail = refused(download(http, copycat, carol_auth), 404, "content_not_uploaded")
    assert f"asset {copycat} version 1" in detail and f"PUT /v1/assets/{copycat}/content" in detail
    agent = market.agents.register(carol, "", {"encryptionKey": bytes(PrivateKey.generate().public_key)})
    refused(download(http, copycat, carol_auth, agent_id=agent), 404, "content_not_uploaded")  # sealed to carol
    refused(download(http, victim, carol_auth), 402, "license_required")

    buy(market, alice, copycat)  # a buyer of the copy gets nothing either...
    refused(download(http, copycat, login(http, alice)), 404, "content_not_uploaded")
    vault = market.marketplace.vault_of(copycat)
    before = (market.token.balance_of(vault), market.token.balance_of(alice.address))
    refused(x402_get(server, market, alice, copycat), 404, "content_not_uploaded")  # ...nor over x402 for 1 unit
    assert (market.token.balance_of(vault), market.token.balance_of(alice.address)) == before

    # The victim's own buyer still gets the victim's bytes.
    buy(market, alice, victim)
    paid = download(http, victim, login(http, alice))
    assert paid.status_code == 200 and paid.content == SECRET


def test_uploads_always_hash_every_byte(server, http, market, victim, bob, carol):
    """Bytes for the hash "already exist" on the server: nothing short of the full plaintext counts."""
    copycat = publish(market, carol, SECRET_HASH)
    carol_auth = login(http, carol)
    expected = "0x" + SECRET_HASH.hex()
    for attempt in (b"", SECRET[:-1], SECRET[:-1] + b"\x00", OTHER, SECRET[:CHUNK_SIZE]):
        detail = refused(upload(http, copycat, attempt, carol_auth), 422, "content_hash_mismatch")
        assert expected in detail
    refused(download(http, copycat, carol_auth), 404, "content_not_uploaded")
    assert not server.path_of(copycat).exists()
    assert not list(server.path_of(copycat).parent.glob("*.part")), "a failed upload left a file behind"

    # The owner's wrong bytes do not replace (or shortcut) the good upload either.
    bob_auth = login(http, bob)
    refused(upload(http, victim, SECRET[:-1], bob_auth), 422, "content_hash_mismatch")
    assert download(http, victim, bob_auth).content == SECRET


# ---------------------------------------------------------------------- versions


def test_a_new_version_is_served_only_once_its_owner_uploads_it(server, http, market, victim, alice, bob, carol):
    own = publish(market, carol, OTHER_HASH)
    carol_auth = login(http, carol)
    uploaded = upload(http, own, OTHER, carol_auth).json()
    assert uploaded == {"asset_id": own, "version": 1, "sha256": "0x" + OTHER_HASH.hex(), "size": len(OTHER)}
    buy(market, alice, own)
    alice_auth = login(http, alice)
    assert download(http, own, alice_auth).content == OTHER

    # Version 2 names the victim's hash: neither carol's v1 upload nor bob's upload is served as it.
    market.marketplace.publish_version(carol, own, SECRET_HASH, "ipfs://v2")
    for who in (alice_auth, carol_auth):
        detail = refused(download(http, own, who), 404, "content_not_uploaded")
        assert "version 2" in detail
        assert_no_plaintext(download(http, own, who).content, OTHER)
    refused(x402_get(server, market, alice, own), 409, "asset_delisted")  # a new version is unlisted...
    market.marketplace.set_listed(carol, own, True)  # ...and even listed by hand before any upload, serves nothing
    refused(x402_get(server, market, alice, own), 404, "content_not_uploaded")
    refused(upload(http, own, OTHER, carol_auth), 422, "content_hash_mismatch")

    # Version 3 goes back to carol's own hash: version 1's upload is still not served as version 3.
    market.marketplace.publish_version(carol, own, OTHER_HASH, "ipfs://v3")
    refused(download(http, own, alice_auth), 404, "content_not_uploaded", plaintext=OTHER)
    assert upload(http, own, OTHER, carol_auth).json()["version"] == 3
    assert download(http, own, alice_auth).content == OTHER
    assert not server.path_of(own, 1).exists()  # older versions are dropped once a newer one is uploaded

    # The victim's owner publishes a version 2 too: its v1 upload is not served as v2 until bob uploads.
    new_secret = os.urandom(1_000)
    market.marketplace.publish_version(bob, victim, hashlib.sha256(new_secret).digest(), "ipfs://v2")
    bob_auth = login(http, bob)
    refused(download(http, victim, bob_auth), 404, "content_not_uploaded")
    assert upload(http, victim, new_secret, bob_auth).status_code == 201
    assert download(http, victim, bob_auth).content == new_secret


def test_a_version_published_while_uploading_is_refused(server, http, market, bob, alice):
    asset_id = publish(market, bob, SECRET_HASH)
    bob_auth = login(http, bob)
    new_hash = hashlib.sha256(b"version two").digest()

    def body() -> Iterator[bytes]:
        yield SECRET[:CHUNK_SIZE]
        deadline = time.monotonic() + 30
        while not list(server.path_of(asset_id).parent.glob("*.part")):  # the server is streaming to disk
            assert time.monotonic() < deadline, "the upload never started"
            time.sleep(0.01)
        market.marketplace.publish_version(bob, asset_id, new_hash, "ipfs://v2")  # mid-stream
        yield SECRET[CHUNK_SIZE:]

    detail = refused(upload(http, asset_id, body(), bob_auth), 409, "asset_version_changed")
    assert "from version 1 to 2" in detail
    assert not market.marketplace.asset(asset_id).listed  # version 2 is not for sale until bob lists it
    market.marketplace.set_listed(bob, asset_id, True)  # listed by hand, without its upload
    buy(market, alice, asset_id)
    refused(download(http, asset_id, login(http, alice)), 404, "content_not_uploaded")  # v1's bytes are not v2's


# ---------------------------------------------------------------------- chains


def test_an_asset_id_reused_after_a_revert_gets_nothing(server, http, chain, market, bob, carol):
    """A reorg (here: a snapshot revert) hands the same asset id to someone else with the same hash."""
    before = chain.snapshot()
    asset_id = publish(market, bob, SECRET_HASH)
    assert upload(http, asset_id, SECRET, login(http, bob)).status_code == 201
    chain.revert(before)

    assert publish(market, carol, SECRET_HASH) == asset_id  # same id, same hash, another owner
    refused(download(http, asset_id, login(http, carol)), 404, "content_not_uploaded")
    assert server.path_of(asset_id).exists()  # bob's upload is on disk, and stays his


def _fresh_market(backend: str):
    chain = connect(backend)
    deployment = deploy_all(chain, chain.accounts[0])
    return chain, deployment, deployment.market(chain)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_restarted_chain_never_gets_the_old_chains_content(backend, tmp_path):
    """`agentmarket node` restarted: same addresses, same asset id, same owner and hash — new genesis."""
    home = tmp_path / "home"
    home.mkdir()
    first, first_deployment, market = _fresh_market(backend)
    try:
        bob, alice = first.accounts[2], first.accounts[1]
        asset_id = publish(market, bob, SECRET_HASH)
        app = create_app(settings_for(home, first_deployment), chain=first)
        with serving(app) as url, httpx.Client(base_url=url, timeout=60) as http:
            assert upload(http, asset_id, SECRET, login(http, bob)).status_code == 201
            assert download(http, asset_id, login(http, bob)).content == SECRET
        first_genesis = first.w3.eth.get_block(0)["hash"]
    finally:
        first.close()

    next_second()
    second, deployment, market = _fresh_market(backend)
    try:
        assert second.w3.eth.get_block(0)["hash"] != first_genesis
        assert deployment.address("Marketplace") == first_deployment.address("Marketplace")
        assert publish(market, bob, SECRET_HASH) == asset_id
        buy(market, alice, asset_id)
        app = create_app(settings_for(home, deployment), chain=second)
        with serving(app) as url, httpx.Client(base_url=url, timeout=60) as http:
            bob_auth, alice_auth = login(http, bob), login(http, alice)
            for who in (bob_auth, alice_auth):
                refused(download(http, asset_id, who), 404, "content_not_uploaded")
            refused(http.get(f"/v1/assets/{asset_id}/x402"), 404, "content_not_uploaded")
            # The owner uploads it on this chain, and only then is it served here.
            assert upload(http, asset_id, SECRET, bob_auth).status_code == 201
            assert download(http, asset_id, alice_auth).content == SECRET
        # The server archived the first chain's uploads (and ledger, and read model) as it started on the second.
        (archive,) = (home / "server" / "archive").iterdir()
        kept = {label.parent.name for label in (home / "server" / "content").glob("*/CHAIN")}
        moved = {label.parent.name for label in (archive / "content").glob("*/CHAIN")}
        assert len(kept) == len(moved) == 1 and kept != moved  # one scope per chain, the old one archived
        assert (archive / "channels.sqlite3").exists()
    finally:
        second.close()


# ---------------------------------------------------------------------- the store


def test_concurrent_uploads_of_the_same_bytes_stay_apart(server, http, market, bob, carol, alice):
    first, second = publish(market, bob, SECRET_HASH), publish(market, carol, SECRET_HASH)
    bob_auth, carol_auth = login(http, bob), login(http, carol)
    garbage = os.urandom(len(SECRET))
    jobs = [(first, SECRET, bob_auth), (second, garbage, carol_auth)] * 3 + [(second, SECRET, carol_auth)]
    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(lambda job: upload(http, *job).status_code, jobs))
    assert answers == [201, 422] * 3 + [201]
    for asset_id, owner_auth in ((first, bob_auth), (second, carol_auth)):
        assert download(http, asset_id, owner_auth).content == SECRET
        assert not list(server.path_of(asset_id).parent.glob("*.part"))  # no upload left a partial file

    # Each asset's right to serve is its own: carol's upload gone, bob's still served, and not to carol.
    server.path_of(second).unlink()
    refused(download(http, second, carol_auth), 404, "content_not_uploaded")
    buy(market, alice, second)
    refused(download(http, second, login(http, alice)), 404, "content_not_uploaded")
    assert download(http, first, bob_auth).content == SECRET


def test_reuploading_the_same_version_is_idempotent(server, http, victim, bob):
    bob_auth = login(http, bob)
    answers = [upload(http, victim, SECRET, bob_auth) for _ in range(2)]
    assert [a.status_code for a in answers] == [201, 201] and answers[0].json() == answers[1].json()
    assert not list(server.path_of(victim).parent.glob("*.part"))

    # A download in flight while the owner re-uploads still gets exactly the content.
    with http.stream("GET", f"/v1/assets/{victim}/content", headers=bob_auth) as response:
        chunks = response.iter_bytes()
        received = next(chunks)
        assert upload(http, victim, SECRET, bob_auth).status_code == 201
        received += b"".join(chunks)
    assert received == SECRET


def _flip_byte(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def test_damaged_moved_or_deleted_files_are_a_clear_404(server, http, market, victim, alice, carol):
    path = server.path_of(victim)
    good = path.read_bytes()
    buy(market, alice, victim)
    alice_auth = login(http, alice)

    damages = {
        "a flipped byte in the content": lambda: _flip_byte(path, len(good) - 100),
        "a flipped byte in the record": lambda: _flip_byte(path, 40),
        "truncated": lambda: path.write_bytes(good[:-1000]),
        "extended": lambda: path.write_bytes(good + frame(b"\x00" * 100)),
        "emptied": lambda: path.write_bytes(b""),
    }
    for name, damage in damages.items():
        damage()
        detail = refused(download(http, victim, alice_auth), 404, "content_unreadable")
        assert "upload it again" in detail, name
        balance = market.token.balance_of(alice.address)
        refused(x402_get(server, market, alice, victim), 404, "content_unreadable")  # refused before any payment
        assert market.token.balance_of(alice.address) == balance, name
        path.write_bytes(good)
        assert download(http, victim, alice_auth).content == SECRET, name

    # Another asset's upload copied into this asset's place is not served as this asset's.
    own = publish(market, carol, OTHER_HASH)
    carol_auth = login(http, carol)
    assert upload(http, own, OTHER, carol_auth).status_code == 201
    shutil.copyfile(path, server.path_of(own))
    refused(download(http, own, carol_auth), 404, "content_unreadable")
    server.path_of(own).unlink()  # and deleted: not uploaded
    refused(download(http, own, carol_auth), 404, "content_not_uploaded")

    path.unlink()
    refused(download(http, victim, alice_auth), 404, "content_not_uploaded")
    assert http.get("/healthz").status_code == 200


def test_files_of_the_store_before_upload_records_are_not_served(server, http, market, alice, bob):
    """The old store kept `<sha256>.bin` for any asset naming the hash; those files serve nothing now."""
    content_dir = server.path_of(1).parents[2]
    old_box = SecretBox((content_dir / "secret.key").read_bytes())
    legacy = content_dir / f"{SECRET_HASH.hex()}.bin"
    legacy.write_bytes(b"".join(frame(old_box.encrypt(SECRET[i : i + CHUNK_SIZE]))
                                for i in range(0, len(SECRET), CHUNK_SIZE)))  # fmt: skip
    try:
        asset_id = publish(market, bob, SECRET_HASH)
        buy(market, alice, asset_id)
        for who in (bob, alice):
            detail = refused(download(http, asset_id, login(http, who)), 404, "content_not_uploaded")
            assert "must be uploaded again" in detail
        refused(http.get(f"/v1/assets/{asset_id}/x402"), 404, "content_not_uploaded")
    finally:
        legacy.unlink()


def test_the_store_refuses_another_scopes_file(tmp_path):
    """A file copied between chains' scopes (same key, same asset and version) is refused, not served."""

    async def once(data: bytes):
        yield data

    here, there = ContentStore(tmp_path, "eip155:1/genesis:0xaa/marketplace:0x1"), ContentStore(tmp_path, "other")
    owner = "0x" + "ab" * 20
    stored = asyncio.run(here.put(once(SECRET), asset_id=1, version=1, sha256="0x" + SECRET_HASH.hex(),
                                  uploader=owner, max_bytes=len(SECRET)))  # fmt: skip
    assert b"".join(here.find(1, 1, stored.sha256, owner).iter_plaintext()) == SECRET
    there.path_of(1, 1).parent.mkdir()
    shutil.copyfile(stored.path, there.path_of(1, 1))
    with pytest.raises(ContentUnreadable, match="asset 1 version 1 on eip155:1/genesis:0xaa"):
        there.find(1, 1, stored.sha256, owner)
    with pytest.raises(ContentNotUploaded, match="no content uploaded by its owner"):
        here.find(1, 1, stored.sha256, "0x" + "cd" * 20)  # another uploader than the owner now


def test_a_file_checked_whole_is_checked_again_once_changed(tmp_path):
    """The check-once cache (cheap unpaid x402 asks) never hides damage done after the check."""

    async def once(data: bytes):
        yield data

    store, owner = ContentStore(tmp_path, "scope"), "0x" + "ab" * 20
    stored = asyncio.run(store.put(once(SECRET), asset_id=7, version=1, sha256="0x" + SECRET_HASH.hex(),
                                   uploader=owner, max_bytes=len(SECRET)))  # fmt: skip
    time.sleep(2.1)  # older than the settling time: this check is remembered
    assert b"".join(store.find(7, 1, stored.sha256, owner).iter_plaintext()) == SECRET
    _flip_byte(stored.path, len(stored.path.read_bytes()) // 2)  # in place: same inode and size
    with pytest.raises(ContentUnreadable, match="fails its MAC"):
        store.find(7, 1, stored.sha256, owner)
