"""GET /v1/stats from the read model (red team follow-up: two chain reads per asset on every anonymous request).

On both backends: every way tokens reach a vault (a license, an EIP-3009 transfer as x402 settles, a channel
claim, a royalty released from a child vault, a plain transfer) is counted as the vault's revenue exactly as
the chain's ``balance + totalReleased`` has it, a transfer of another token into a vault is not, and an
answer makes no ``eth_call`` at all, however many assets there are; figures are reused while no block was
indexed, and at most ``STATS_MAX_AGE`` seconds once blocks are.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from marketplace.api import Settings, create_app
from marketplace.api.routes.stats import STATS_MAX_AGE
from marketplace.chain.contracts import TestUSD
from marketplace.chain.records import AssetKind
from marketplace.chain.units import to_units
from tests.helpers.chain import publish

EXTRA_ASSETS = 12


@pytest.fixture
def rpc_calls(chain) -> Iterator[Counter]:
    """Counts the JSON-RPC requests the chain's provider sends (each still goes to the real chain)."""
    provider = chain.w3.provider
    counted: Counter = Counter()
    real = provider.make_request

    def make_request(method, params):
        counted[str(method)] += 1
        return real(method, params)

    provider.make_request = make_request
    try:
        yield counted
    finally:
        del provider.make_request


def test_revenue_is_every_transfer_of_the_assets_token_into_its_vault_and_costs_no_chain_read(
    chain, deployment, market, admin, alice, bob, carol, relayer, tmp_path, rpc_calls
):
    token = market.token
    data = publish(market, bob, "ipfs://data", to_units(1))
    model = publish(market, carol, "ipfs://model", to_units("0.5"), kind=AssetKind.MODEL,
                    payees=[(carol.address, 8_000)], parents=[(data, 2_000)])  # fmt: skip
    other_token = TestUSD(chain, chain.deploy("TestUSD", admin.address, sender=admin).address)
    foreign = publish(market, bob, "ipfs://priced-elsewhere", to_units(1))  # priced in TestUSD ...
    extra = [publish(market, bob, f"ipfs://extra-{i}", to_units(1)) for i in range(EXTRA_ASSETS)]

    token.approve(alice, market.marketplace.address, to_units(10))
    market.marketplace.buy(alice, data, to_units(1))  # a license
    market.marketplace.buy(alice, model, to_units("0.5"))
    model_vault = market.marketplace.vault_of(model)
    paid = token.sign_transfer(alice, model_vault, to_units("0.5"), valid_before=chain.timestamp() + 600)
    token.transfer_with_authorization(paid, relayer)  # what an x402 settlement does
    token.approve(alice, market.channels.address, to_units(2))
    channel = market.channels.open(alice, model, token.address, to_units(2), chain.timestamp() + 3600,
                                   receiver_authorizer=relayer.address)  # fmt: skip
    market.channels.claim(relayer, channel, to_units("1.5"), to_units("1.5"),
                          market.channels.sign_voucher(alice, channel, to_units("1.5")))  # fmt: skip
    market.vault(model).release(relayer, token.address, market.marketplace.vault_of(data))  # royalty up
    market.vault(model).release(relayer, token.address, carol.address)  # out of the vault: still received
    token.transfer(alice, market.marketplace.vault_of(extra[0]), 7)  # a gift
    other_token.mint(admin, market.marketplace.vault_of(foreign), to_units(5))  # ... so this is not revenue

    settings = Settings(manifest=deployment.save(tmp_path / "deployment.json"), data_dir=tmp_path / "server")
    with TestClient(create_app(settings, chain=chain)) as client:
        assert client.get("/v1/assets").status_code == 200  # the read model caught up (reading payees on chain)
        rpc_calls.clear()
        stats = client.get("/v1/stats").json()
        assert rpc_calls["eth_call"] == 0, dict(rpc_calls)  # (before: two per asset)

        ids = [data, model, foreign, *extra]
        on_chain = {a: market.vault(a).total_received(token.address) for a in ids}
        assert on_chain[model] == to_units("2.5") and on_chain[data] > to_units(1) and on_chain[extra[0]] == 7
        assert stats["assets"] == len(ids)
        assert stats["revenue_received"] == str(sum(on_chain.values()))
        listed = {row["asset_id"]: int(row["revenue_received"]) for row in stats["top_assets"]}
        assert len(listed) == 10 and all(listed[a] == on_chain[a] for a in listed)
        assert [row["asset_id"] for row in stats["top_assets"][:3]] == [model, data, extra[0]]
        assert stats["channel_volume"] == str(to_units("1.5")) and stats["licenses_sold"] == 2

        rpc_calls.clear()
        assert client.get("/v1/stats").json() == stats  # no block since: the same figures
        market.marketplace.buy(alice, extra[1], to_units(1))  # a new block ...
        time.sleep(STATS_MAX_AGE)
        later = client.get("/v1/stats").json()  # ... counted once the figures are STATS_MAX_AGE old
        assert int(later["revenue_received"]) == sum(on_chain.values()) + to_units(1)
        assert later["licenses_sold"] == 3 and rpc_calls["eth_call"] == 0

    # A read model written by a version without the vault_revenue table is rebuilt, not read with zeros.
    engine = create_engine(settings.resolved_database_url())
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE vault_revenue"))
    engine.dispose()
    with TestClient(create_app(settings, chain=chain)) as client:
        assert client.get("/v1/stats").json()["revenue_received"] == later["revenue_received"]
