"""The SDK end to end against the API (in-process) and the chain, over both backends."""

from __future__ import annotations

import hashlib

import pytest
from fastapi.testclient import TestClient
from nacl.public import PrivateKey

from marketplace.api import Settings, create_app
from marketplace.chain.records import AssetKind
from marketplace.chain.units import to_units
from marketplace.client import ApiClientError, MarketplaceClient
from marketplace.client.sdk import MarketplaceReader
from marketplace.errors import AgentmarketError

DATA = b"sepal_length,sepal_width,label\n" + b"5.1,3.5,0\n" * 5_000


@pytest.fixture
def server(chain, deployment, tmp_path):
    settings = Settings(manifest=deployment.save(tmp_path / "deployment.json"), data_dir=tmp_path / "server",
                        siwe_domain="testserver")  # fmt: skip
    with TestClient(create_app(settings, chain=chain)) as test_client:
        yield test_client


def client_for(server, chain, account, **options) -> MarketplaceClient:
    return MarketplaceClient.connect("http://testserver", account, chain, http=server, **options)


def test_provider_publishes_buyer_downloads_sealed_and_royalties_are_withdrawn(
    server, chain, market, admin, alice, bob, carol, tmp_path
):
    provider = client_for(server, chain, bob)
    data_id = provider.publish(DATA, price=to_units(2), uri="ipfs://iris")
    assert provider.asset(data_id).content_hash == "0x" + hashlib.sha256(DATA).hexdigest()

    agent_key = PrivateKey.generate()
    market.agents.register(alice, "", {"encryptionKey": bytes(agent_key.public_key)})
    buyer = client_for(server, chain, alice, encryption_key=bytes(agent_key))
    with pytest.raises(ApiClientError) as unpaid:
        buyer.download(data_id)
    assert (unpaid.value.status, unpaid.value.code) == (402, "license_required")
    buyer.buy(data_id)
    assert buyer.download(data_id) == DATA
    target = tmp_path / "iris.csv"
    buyer.download(data_id, target)
    assert target.read_bytes() == DATA

    market.token.mint(admin, carol.address, to_units(10))
    builder = client_for(server, chain, carol)
    model_file = tmp_path / "model.bin"
    model_file.write_bytes(b"\x00weights" * 1000)
    model_id = builder.publish(model_file, price=to_units(4), kind=AssetKind.MODEL,
                               payees=[(carol.address, 7_000)], parents=[(data_id, 3_000)])  # fmt: skip
    assert builder.asset(model_id).parents == [data_id]
    buyer.buy(model_id)
    market.vault(model_id).release(alice, market.token.address, market.marketplace.vault_of(data_id))

    before = market.token.balance_of(bob.address)
    released = provider.withdraw()
    expected = 2_000_000 * 99 // 100 + (4_000_000 * 3_000 * 99 // 1_000_000) * 99 // 100
    assert sum(released.values()) == expected == market.token.balance_of(bob.address) - before
    assert provider.earnings().total_claimable == 0


def test_sealed_content_needs_the_key_and_errors_are_typed(server, chain, market, alice, bob):
    provider = client_for(server, chain, bob)
    data_id = provider.publish(DATA, price=1)
    market.agents.register(alice, "", {"encryptionKey": bytes(PrivateKey.generate().public_key)})
    keyless = client_for(server, chain, alice)
    keyless.buy(data_id)
    with pytest.raises(Exception, match="encryption_key"):
        keyless.download(data_id)
    with pytest.raises(ApiClientError) as missing:
        keyless.asset(999)
    assert (missing.value.status, missing.value.code) == (404, "asset_not_found")


def test_the_reader_needs_no_key_and_the_client_reads_through_it(server, chain, bob):
    provider = client_for(server, chain, bob)
    data_id = provider.publish(DATA, price=to_units(2), uri="ipfs://iris")
    assert isinstance(provider, MarketplaceReader)  # one implementation of the reads

    reader = MarketplaceReader("http://testserver", http=server)
    assert reader.asset(data_id) == provider.asset(data_id)
    assert [a.asset_id for a in reader.assets(kind="dataset").items] == [data_id]
    assert reader.earnings(bob.address) == provider.earnings()
    assert reader.stats() == provider.stats()
    with pytest.raises(ApiClientError) as missing:
        reader.agent(999)
    assert (missing.value.status, missing.value.code) == (404, "agent_not_found")

    with MarketplaceReader("http://127.0.0.1:9", timeout=2) as nowhere, pytest.raises(AgentmarketError, match="reach"):
        nowhere.stats()
