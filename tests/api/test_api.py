"""The read API and its indexer, over both backends: catalog, lineage, errors, rebuild, reorg."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, select, text
from sqlalchemy.orm import Session

from marketplace.api import Settings, create_app
from marketplace.chain.records import AssetKind, SubjectKind
from marketplace.chain.units import to_units
from marketplace.indexer import Indexer
from marketplace.indexer.models import Base
from tests.helpers.chain import publish


@pytest.fixture
def story(market, admin, alice, bob, carol):
    """Two datasets, a model built on both, a purchase, a rating and an agent."""
    iris = publish(market, alice, "ipfs://iris-shard", to_units(1))
    wine = publish(market, bob, "ipfs://wine-shard", to_units(3))
    model = publish(market, carol, "ipfs://iris-wine-knn", to_units(2), kind=AssetKind.MODEL,
                    payees=[(carol.address, 8_000)], parents=[(iris, 1_000), (wine, 1_000)])  # fmt: skip
    market.token.approve(alice, market.marketplace.address, to_units(10))
    market.marketplace.buy(alice, model, to_units(2))
    market.reputation.give_feedback(alice, subject_kind=SubjectKind.ASSET, subject_id=model, value=4,
                                    paid_asset_id=model)  # fmt: skip
    agent = market.agents.register(bob, "https://agents.example/bob.json", {"endpoint": b"http://127.0.0.1:9"})
    return {"iris": iris, "wine": wine, "model": model, "agent": agent}


@pytest.fixture
def client(chain, deployment, tmp_path, story, databases):
    manifest = deployment.save(tmp_path / "deployment.json")
    settings = Settings(manifest=manifest, data_dir=tmp_path / "server", database_url=databases.url("api"))
    with TestClient(create_app(settings, chain=chain)) as test_client:
        yield test_client


def test_healthz_reports_head_and_lag(client, chain):
    health = client.get("/healthz").json()
    assert health["chain_id"] == 31337
    assert health["head_block"] == chain.block_number()
    assert health["indexer_lag"] == 0


def test_catalog_filters_and_pages(client, alice, story):
    assert client.get("/v1/assets").json()["total"] == 3
    models = client.get("/v1/assets", params={"kind": "model"}).json()
    assert [a["asset_id"] for a in models["items"]] == [story["model"]]
    assert models["items"][0]["parents"] == [story["iris"], story["wine"]]
    mine = client.get("/v1/assets", params={"provider": alice.address.lower()}).json()
    assert [a["asset_id"] for a in mine["items"]] == [story["iris"]]
    cheap = client.get("/v1/assets", params={"max_price": to_units(2)}).json()
    assert {a["asset_id"] for a in cheap["items"]} == {story["iris"], story["model"]}
    found = client.get("/v1/assets", params={"q": "wine"}).json()
    assert {a["asset_id"] for a in found["items"]} == {story["wine"], story["model"]}
    page = client.get("/v1/assets", params={"limit": 1, "offset": 1}).json()
    assert (page["total"], [a["asset_id"] for a in page["items"]]) == (3, [story["wine"]])


def test_asset_detail_has_split_lineage_revenue_and_rating(client, market, admin, carol, story):
    detail = client.get(f"/v1/assets/{story['model']}").json()
    assert detail["licenses_sold"] == 1
    assert detail["revenue_received"] == str(to_units(2))
    assert detail["rating"] == {"count": 1, "average": 4.0}
    # ratings are value / 10**valueDecimals on the chain's [0, 100] scale: 4 and 65.5 average 34.75
    market.token.mint(admin, admin.address, to_units(2))
    market.token.approve(admin, market.marketplace.address, to_units(2))
    market.marketplace.buy(admin, story["model"], to_units(2))
    market.reputation.give_feedback(admin, subject_kind=SubjectKind.ASSET, subject_id=story["model"], value=655,
                                    value_decimals=1, paid_asset_id=story["model"])  # fmt: skip
    assert client.get(f"/v1/assets/{story['model']}").json()["rating"] == {"count": 2, "average": 34.75}
    shares = {p["account"]: (p["share_bps"], p["parent_asset_id"]) for p in detail["payees"]}
    assert shares[carol.address] == (8_000 * 0.99, None)
    assert shares[market.marketplace.vault_of(story["iris"])] == (1_000 * 0.99, story["iris"])
    assert sum(share for share, _ in shares.values()) == pytest.approx(10_000)
    assert client.get(f"/v1/assets/{story['iris']}").json()["children"] == [story["model"]]


def test_agent_view(client, bob, story):
    agent = client.get(f"/v1/agents/{story['agent']}").json()
    assert (agent["owner"], agent["wallet"], agent["uri"]) == (
        bob.address,
        bob.address,
        "https://agents.example/bob.json",
    )
    assert agent["metadata"] == {"endpoint": "0x" + b"http://127.0.0.1:9".hex()}


def test_client_mistakes_are_json_4xx(client):
    cases = [
        ("/v1/assets/999", 404, "asset_not_found"),
        ("/v1/agents/999", 404, "agent_not_found"),
        ("/v1/assets/0", 422, "invalid_request"),
        ("/v1/assets/abc", 422, "invalid_request"),
        ("/v1/assets?kind=song", 422, "invalid_request"),
        ("/v1/assets?limit=0", 422, "invalid_request"),
        ("/v1/assets?provider=0x12", 422, "invalid_request"),
        ("/v1/assets?min_price=5&max_price=1", 422, "invalid_request"),
        ("/v1/nothing-here", 404, "not_found"),
    ]
    for path, status, code in cases:
        response = client.get(path)
        assert (response.status_code, response.json()["error"]) == (status, code), path
        assert response.json()["detail"]


def _dump(engine) -> dict[str, list[tuple]]:
    with Session(engine) as session:
        return {
            table.name: sorted(tuple(row) for row in session.execute(select(table)))
            for table in Base.metadata.sorted_tables
            if table.name != "indexed_blocks"
        }


def test_rebuilding_from_scratch_gives_identical_rows(chain, deployment, databases, story):
    first = create_engine(databases.url("a"))
    Indexer(chain, deployment, first, batch_size=3).sync()
    second = create_engine(databases.url("b"))
    Indexer(chain, deployment, second, batch_size=1000).sync()
    assert _dump(first) == _dump(second)
    assert len(_dump(first)["assets"]) == 3

    indexer = Indexer(chain, deployment, first)  # a restart resumes instead of starting over
    assert indexer.sync().events == 0


def test_reorg_is_detected_and_the_read_model_follows_the_new_chain(chain, deployment, market, alice, databases, story):
    engine = create_engine(databases.url("r"))
    indexer = Indexer(chain, deployment, engine)
    snapshot = chain.snapshot()
    publish(market, alice, "ipfs://on-the-abandoned-fork", 1)
    indexer.sync()
    assert len(_dump(engine)["assets"]) == 4
    chain.revert(snapshot)  # the fork with asset 4 is gone...
    chain.mine()
    publish(market, alice, "ipfs://on-the-new-fork", 2)  # ...and another asset 4 takes its place
    report = indexer.sync()
    assert report.reorg
    uris = [row[-1] for row in _dump(engine)["assets"]]
    assert "ipfs://on-the-new-fork" in str(_dump(engine)["assets"]) and "abandoned" not in str(uris)
    fresh = create_engine(databases.url("fresh"))
    Indexer(chain, deployment, fresh).sync()
    assert _dump(engine) == _dump(fresh)


def test_a_read_model_an_older_version_wrote_is_rebuilt(chain, deployment, databases, story):
    engine = create_engine(databases.url("old"))
    with engine.begin() as connection:  # the agent_metadata and assets tables as an earlier version made them
        connection.execute(text("CREATE TABLE agent_metadata (agent_id BIGINT, key VARCHAR(128), value TEXT, "
                                "PRIMARY KEY (agent_id, key))"))  # fmt: skip
        connection.execute(text("CREATE TABLE assets (asset_id BIGINT PRIMARY KEY, uri TEXT)"))
        connection.execute(text("INSERT INTO assets VALUES (1, 'stale')"))
    Indexer(chain, deployment, engine).sync()
    fresh = create_engine(databases.url("new"))
    Indexer(chain, deployment, fresh).sync()
    assert _dump(engine) == _dump(fresh) and len(_dump(engine)["assets"]) == 3


def test_earnings_and_stats(client, market, admin, alice, bob, carol, relayer, story):
    token = market.token.address
    iris_vault = market.marketplace.vault_of(story["iris"])
    model_vault = market.vault(story["model"])
    model_vault.release(relayer, token, carol.address)
    model_vault.release(relayer, token, iris_vault)

    carol_view = client.get(f"/v1/accounts/{carol.address}/earnings").json()
    (model_earning,) = carol_view["vaults"]
    assert (model_earning["asset_id"], model_earning["share_bps"]) == (story["model"], 8_000 * 0.99)
    assert model_earning["released"] == str(2_000_000 * 8_000 * 99 // 1_000_000)
    assert model_earning["claimable"] == "0"

    alice_view = client.get(f"/v1/accounts/{alice.address.lower()}/earnings").json()
    iris = next(v for v in alice_view["vaults"] if v["asset_id"] == story["iris"])
    assert int(iris["claimable"]) == 2_000_000 * 1_000 * 99 // 1_000_000 * 99 // 100  # royalty, less the fee again
    treasury = client.get(f"/v1/accounts/{admin.address}/earnings").json()
    assert len(treasury["vaults"]) == 3  # the fee is a payee of every vault

    stats = client.get("/v1/stats").json()
    assert (stats["assets"], stats["agents"], stats["licenses_sold"]) == (3, 1, 1)
    assert stats["license_volume"] == str(to_units(2))
    assert stats["top_assets"][0]["asset_id"] == story["model"]
    assert stats["released_by_payee"][carol.address] == model_earning["released"]
    assert client.get("/v1/accounts/0x12/earnings").status_code == 422


def test_search_ignores_case_on_every_engine_and_takes_wildcards_literally(client, market, alice, story):
    found = client.get("/v1/assets", params={"q": "IRIS"}).json()
    assert {a["asset_id"] for a in found["items"]} == {story["iris"], story["model"]}
    assert client.get("/v1/assets", params={"q": "Wine-KNN"}).json()["total"] == 1
    accented = publish(market, alice, "ipfs://Éclair-Straße", 1)
    for q in ("éclair", "ÉCLAIR", "strasse", "STRASSE"):  # Unicode case folding, not ASCII only
        assert [a["asset_id"] for a in client.get("/v1/assets", params={"q": q}).json()["items"]] == [accented], q
    for q in ("%", "_", "iris%shard", "ipfs:__", "\\"):  # LIKE's wildcards and escape match only themselves
        assert client.get("/v1/assets", params={"q": q}).json()["total"] == 0, q
    percent = publish(market, alice, "ipfs://100%_pure\\data", 1)
    for q in ("%", "_", "100%_", "\\"):
        assert [a["asset_id"] for a in client.get("/v1/assets", params={"q": q}).json()["items"]] == [percent], q


UINT64_MAX = 2**64 - 1
#: A rating of 100 with 18 decimals: above a signed 64-bit column, within the registry's [0, 100] scale.
WIDE_RATING = 100 * 10**18


def _send_with_raw_bytes(chain, fn, sender, placeholder: bytes, raw: bytes):
    """Send ``fn`` with ``placeholder`` in its calldata replaced by ``raw`` (same length): e.g. a string argument
    that is not UTF-8, which web3 never encodes but any transaction may carry."""
    assert len(placeholder) == len(raw)
    tx = fn.build_transaction({"from": sender.address, "gas": 3_000_000,
                               "nonce": chain.w3.eth.get_transaction_count(sender.address, "pending")})  # fmt: skip
    assert tx["data"].count(placeholder.hex()) == 1
    tx["data"] = tx["data"].replace(placeholder.hex(), raw.hex())
    receipt = chain.send_raw(sender.sign_transaction(tx).raw_transaction)
    assert receipt["status"] == 1
    return receipt


def test_whatever_the_contracts_accept_the_read_model_stores_on_every_engine(
    client, chain, market, admin, alice, bob, carol, story
):
    """Anyone can put these values on chain; none may stop the indexer (and with it every read) on any engine:
    NUL characters (PostgreSQL text refuses them), strings that are not UTF-8, uint64 maxima (above a signed
    64-bit column), keys longer than a B-tree index entry, ratings wider than 64 bits."""
    forever = publish(market, alice, "ipfs://nul\x00inside", to_units(1), license_duration=UINT64_MAX)
    marketplace = market.marketplace.contract
    fn = marketplace.functions.publish(0, b"\x01" * 32, "ipfs://PLACEHOLDER", 5, market.token.address, 0,
                                       [alice.address], [10_000], [], [], True)  # fmt: skip
    _send_with_raw_bytes(chain, fn, alice, b"PLACEHOLDER", b"\xff\xfe\xc3(\x00bad\xed\xa0\x80")
    not_utf8 = forever + 1
    long_key = "k" * 5_000
    agent = market.agents.register(bob, "https://agents.example/\x00", {long_key: b"\x00" * 3, "nul\x00key": b"v"})
    market.agents.set_metadata(bob, agent, long_key, b"\x01")  # the same long key, updated
    market.token.approve(alice, market.channels.address, to_units(1))
    market.channels.open(alice, story["model"], market.token.address, to_units(1), UINT64_MAX,
                         receiver_authorizer=bob.address)  # fmt: skip
    market.token.mint(admin, carol.address, to_units(5))
    market.token.approve(carol, market.marketplace.address, to_units(5))
    market.marketplace.buy(carol, story["iris"], to_units(1))
    market.reputation.give_feedback(carol, subject_kind=SubjectKind.ASSET, subject_id=story["iris"],
                                    value=WIDE_RATING, value_decimals=18, paid_asset_id=story["iris"], tag1="\x00",
                                    tag2="é" * 3_000)  # fmt: skip

    catalog = client.get("/v1/assets", params={"limit": 200}).json()
    assert catalog["total"] == 5
    by_id = {a["asset_id"]: a for a in catalog["items"]}
    assert by_id[forever]["license_duration"] == UINT64_MAX
    assert by_id[forever]["uri"] == "ipfs://nul\ufffdinside"  # NUL cannot be stored everywhere: shown replaced
    assert by_id[not_utf8]["uri"].startswith("ipfs://\ufffd\ufffd") and "bad" in by_id[not_utf8]["uri"]
    assert client.get("/v1/assets", params={"q": "nul"}).json()["total"] == 1
    detail = client.get(f"/v1/assets/{story['iris']}").json()
    assert detail["rating"] == {"count": 1, "average": 100.0}
    assert client.get(f"/v1/assets/{not_utf8}").status_code == 200
    view = client.get(f"/v1/agents/{agent}").json()
    assert view["uri"] == "https://agents.example/\ufffd"
    assert view["metadata"] == {long_key: "0x01", "nul\ufffdkey": "0x" + b"v".hex()}
    assert client.get("/v1/stats").json()["assets"] == 5
    assert client.get("/healthz").json()["indexer_lag"] == 0
