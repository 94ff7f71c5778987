"""Wallet login (SIWE), content upload and licensed, sealed download — over both backends."""

from __future__ import annotations

import hashlib
import os

import pytest
from eth_account import Account
from eth_account.messages import encode_defunct
from fastapi.testclient import TestClient
from nacl.public import PrivateKey

from marketplace.api import Settings, create_app
from marketplace.chain.records import AssetKind
from marketplace.chain.units import to_units
from marketplace.content import open_sealed_frames
from marketplace.siwe import SiweError, SiweMessage, TokenIssuer, format_time

CONTENT = os.urandom(200_000)  # several 64 KiB frames
CONTENT_HASH = hashlib.sha256(CONTENT).digest()


def sign(account, text: str) -> str:
    return "0x" + Account.sign_message(encode_defunct(text=text), account.key).signature.hex()


def login(client: TestClient, account) -> str:
    issued = client.post("/v1/auth/nonce", json={"address": account.address}).json()
    verified = client.post("/v1/auth/verify", json={"message": issued["message"],
                                                    "signature": sign(account, issued["message"])})  # fmt: skip
    assert verified.status_code == 200, verified.text
    return verified.json()["token"]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def dataset(market, bob):
    """A dataset bob sells, whose on-chain content hash is CONTENT's."""
    return market.marketplace.publish(
        bob, kind=AssetKind.DATASET, content_hash=CONTENT_HASH, uri="ipfs://d", price=to_units(1),
        token=market.token.address, payees=[(bob.address, 10_000)],
    )  # fmt: skip


@pytest.fixture
def client(chain, deployment, tmp_path):
    settings = Settings(manifest=deployment.save(tmp_path / "deployment.json"), data_dir=tmp_path / "server",
                        siwe_domain="testserver", max_upload_bytes=1_000_000)  # fmt: skip
    with TestClient(create_app(settings, chain=chain)) as test_client:
        yield test_client


# ---------------------------------------------------------------------- SIWE


def test_siwe_message_round_trips():
    message = SiweMessage(domain="example.org", address="0xf39Fd6e51aad88F6F4ce6aB8827279cffFb92266",
                          uri="https://example.org", chain_id=31337, nonce="abcdefgh12", issued_at=format_time(0),
                          statement="hi", expiration_time=format_time(60))  # fmt: skip
    assert SiweMessage.parse(message.to_text()) == message
    without_statement = SiweMessage(**{**message.__dict__, "statement": None})
    assert SiweMessage.parse(without_statement.to_text()) == without_statement
    for broken in ("hello", message.to_text().replace("Nonce: abcdefgh12", "Nonce: a"),
                   message.to_text().replace("0xf39F", "0xF39F")):  # fmt: skip
        with pytest.raises(SiweError):
            SiweMessage.parse(broken)


def test_tokens_expire_and_cannot_be_forged():
    issuer = TokenIssuer(b"k" * 32, ttl=60)
    token, expires = issuer.issue("0xabc", now=1_000)
    assert issuer.verify(token, now=1_059) == "0xabc"
    with pytest.raises(SiweError, match="expired"):
        issuer.verify(token, now=expires)
    with pytest.raises(SiweError, match="not valid"):
        issuer.verify(token.replace("0xabc", "0xabd"), now=1_000)
    with pytest.raises(SiweError, match="not valid"):
        TokenIssuer(b"x" * 32, ttl=60).verify(token, now=1_000)


def test_login_happy_path_and_replay(client, alice):
    issued = client.post("/v1/auth/nonce", json={"address": alice.address}).json()
    body = {"message": issued["message"], "signature": sign(alice, issued["message"])}
    first = client.post("/v1/auth/verify", json=body)
    assert first.status_code == 200 and first.json()["address"] == alice.address
    replay = client.post("/v1/auth/verify", json=body)
    assert (replay.status_code, replay.json()["error"]) == (401, "invalid_login")


@pytest.mark.parametrize("tamper", ["signer", "domain", "chain", "unknown-nonce", "expired"])
def test_bad_logins_get_401(client, alice, bob, tamper):
    issued = client.post("/v1/auth/nonce", json={"address": alice.address}).json()
    text, signer = issued["message"], alice
    if tamper == "signer":
        signer = bob
    elif tamper == "domain":
        text = text.replace("testserver wants", "evil.example wants")
    elif tamper == "chain":
        text = text.replace("Chain ID: 31337", "Chain ID: 1")
    elif tamper == "unknown-nonce":
        text = text.replace(f"Nonce: {issued['nonce']}", "Nonce: zzzzzzzzzzzz")
    elif tamper == "expired":
        message = SiweMessage.parse(text)
        text = SiweMessage(**{**message.__dict__, "expiration_time": format_time(0)}).to_text()
    response = client.post("/v1/auth/verify", json={"message": text, "signature": sign(signer, text)})
    assert (response.status_code, response.json()["error"]) == (401, "invalid_login")
    assert response.json()["detail"]


# ---------------------------------------------------------------------- upload


def test_owner_uploads_and_others_cannot(client, alice, bob, dataset):
    put = f"/v1/assets/{dataset}/content"
    assert client.put(put, content=CONTENT).status_code == 401
    assert client.put(put, content=CONTENT, headers=bearer(login(client, alice))).json()["error"] == "not_asset_owner"
    owner = bearer(login(client, bob))
    wrong = client.put(put, content=CONTENT[:-1], headers=owner)
    assert (wrong.status_code, wrong.json()["error"]) == (422, "content_hash_mismatch")
    assert "0x" + CONTENT_HASH.hex() in wrong.json()["detail"]
    too_big = client.put(put, content=b"x" * 1_000_001, headers=owner)
    assert (too_big.status_code, too_big.json()["error"]) == (413, "content_too_large")
    stored = client.put(put, content=CONTENT, headers=owner)
    assert stored.status_code == 201 and stored.json() == {"asset_id": dataset, "version": 1,
                                                           "sha256": "0x" + CONTENT_HASH.hex(),
                                                           "size": len(CONTENT)}  # fmt: skip
    assert client.put("/v1/assets/999/content", content=CONTENT, headers=owner).status_code == 404


def test_content_is_encrypted_at_rest(client, bob, dataset, tmp_path):
    client.put(f"/v1/assets/{dataset}/content", content=CONTENT, headers=bearer(login(client, bob)))
    (stored,) = (tmp_path / "server" / "content").rglob("*.bin")
    assert CONTENT[:64] not in stored.read_bytes()


# ---------------------------------------------------------------------- download


def test_only_license_holders_download(client, market, alice, bob, carol, dataset):
    get = f"/v1/assets/{dataset}/content"
    alice_token = bearer(login(client, alice))
    bob_token = bearer(login(client, bob))
    not_yet = client.get(get, headers=bob_token)  # the owner may always download...
    assert (not_yet.status_code, not_yet.json()["error"]) == (404, "content_not_uploaded")  # ...once uploaded
    client.put(get, content=CONTENT, headers=bob_token)
    unpaid = client.get(get, headers=alice_token)
    assert (unpaid.status_code, unpaid.json()["error"]) == (402, "license_required")
    assert client.get(get).status_code == 401
    assert client.get(get, headers={"Authorization": "Bearer nonsense"}).status_code == 401

    market.token.approve(alice, market.marketplace.address, to_units(1))
    market.marketplace.buy(alice, dataset, to_units(1))
    paid = client.get(get, headers=alice_token)
    assert paid.status_code == 200 and paid.content == CONTENT
    assert paid.headers["x-content-sha256"] == "0x" + CONTENT_HASH.hex()
    assert client.get(get, headers=bearer(login(client, carol))).status_code == 402  # carol did not pay


def test_download_is_sealed_to_the_agents_key(client, market, alice, bob, carol, dataset):
    client.put(f"/v1/assets/{dataset}/content", content=CONTENT, headers=bearer(login(client, bob)))
    agent_key = PrivateKey.generate()
    agent = market.agents.register(alice, "", {"encryptionKey": bytes(agent_key.public_key)})
    market.token.approve(alice, market.marketplace.address, to_units(1))
    market.marketplace.buy(alice, dataset, to_units(1))
    token = bearer(login(client, alice))
    for params in ({}, {"agent_id": agent}):
        sealed = client.get(f"/v1/assets/{dataset}/content", params=params, headers=token)
        assert sealed.headers["x-content-encryption"] == "x25519-sealedbox-frames"
        assert CONTENT[:64] not in sealed.content
        opened = b"".join(open_sealed_frames([sealed.content], bytes(agent_key)))
        assert hashlib.sha256(opened).hexdigest() == sealed.headers["x-content-sha256"][2:]
        assert opened == CONTENT
    other_agent = market.agents.register(carol, "", {"encryptionKey": bytes(PrivateKey.generate().public_key)})
    foreign = client.get(f"/v1/assets/{dataset}/content", params={"agent_id": other_agent}, headers=token)
    assert (foreign.status_code, foreign.json()["error"]) == (403, "not_your_agent")
