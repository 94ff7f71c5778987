"""Publishing is all or nothing (issue 13 §3): nobody can buy an asset whose content is not uploaded.

On chain (both backends): an asset published unlisted, or one whose new version is pending, is refused
by every purchase path (`buy`, `buyWithPermit`, `buyWithAuthorization`) until its owner — and only its
owner — lists it. Through the SDK (embedded chain, a live server on 127.0.0.1): a refused upload (413),
a failed listing (the owner's wallet ran out of gas money mid-publish) and a version whose upload fails
each leave the asset unlisted, raise `PublishIncomplete` naming the asset and its state, keep it out
of the catalog and out of x402, and `upload` finishes the job; the agents' `publish_asset` tool refuses
with a typed error. The CLI's side is in test_cli_publish.py.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from collections.abc import Iterator

import httpx
import pytest
import uvicorn
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI

from agents import ActionRefused, AgentWallet, AuditLedger, Budget
from agents.tools import ToolContext, run_tool
from marketplace.api import Settings, create_app
from marketplace.chain import ContractRevert
from marketplace.chain.records import AssetKind
from marketplace.chain.units import to_units
from marketplace.client import ApiClientError, MarketplaceClient, PublishIncomplete
from marketplace.errors import AgentmarketError
from tests.helpers.chain import expect_revert
from tests.helpers.cli import free_port

CONTENT_HASH = hashlib.sha256(b"pending content").digest()
PRICE = to_units(2)
UPLOAD_LIMIT = 1_000  # bytes: the live server's AGENTMARKET_MAX_UPLOAD_BYTES while a test does not raise it


def publish(market, owner, *, listed: bool) -> int:
    return market.marketplace.publish(
        owner, kind=AssetKind.DATASET, content_hash=CONTENT_HASH, uri="ipfs://pending", price=PRICE,
        token=market.token.address, payees=[(owner.address, 10_000)], listed=listed,
    )  # fmt: skip


def fund_and_approve(market, buyer) -> None:
    market.token.mint(market.chain.accounts[0], buyer.address, to_units(100))
    market.token.approve(buyer, market.marketplace.address, to_units(100))


def every_purchase_is_refused(market, asset_id: int, buyer, relayer) -> None:
    """``buy``, ``buyWithPermit`` and a relayed ``buyWithAuthorization`` all revert AssetDelisted(assetId)."""
    deadline = market.chain.timestamp() + 600
    vault = market.marketplace.vault_of(asset_id)
    held = market.token.balance_of(vault)
    revert = expect_revert("AssetDelisted", market.marketplace.buy, buyer, asset_id, PRICE)
    assert revert.args_by_name == {"assetId": asset_id}
    expect_revert("AssetDelisted", market.marketplace.buy_with_permit, buyer, asset_id, PRICE, deadline)
    signed = market.marketplace.sign_purchase(buyer, asset_id, valid_before=deadline)
    expect_revert("AssetDelisted", market.marketplace.buy_with_authorization, signed, relayer)
    assert not market.marketplace.has_access(asset_id, buyer.address)
    assert market.token.balance_of(vault) == held  # nothing was paid


# ---------------------------------------------------------------------- the contract, both backends


def test_an_asset_published_unlisted_is_not_for_sale_until_its_owner_lists_it(market, alice, bob, carol, relayer):
    fn = market.marketplace.contract.functions.publish(
        int(AssetKind.DATASET), CONTENT_HASH, "ipfs://pending", PRICE, market.token.address, 0, [alice.address],
        [10_000], [], [], False,
    )  # fmt: skip
    (published,) = market.chain.events(market.marketplace.contract, market.chain.send(fn, alice), "AssetPublished")
    asset_id = published["assetId"]
    assert published["listed"] is False
    assert not market.marketplace.asset(asset_id).listed
    fund_and_approve(market, carol)
    every_purchase_is_refused(market, asset_id, carol, relayer)

    revert = expect_revert("NotAssetOwner", market.marketplace.set_listed, bob, asset_id, True)  # nobody else lists
    assert revert.args_by_name == {"assetId": asset_id, "caller": bob.address, "owner": alice.address}
    receipt = market.marketplace.set_listed(alice, asset_id, True)
    (changed,) = market.chain.events(market.marketplace.contract, receipt, "ListingChanged")
    assert changed == {"assetId": asset_id, "listed": True}
    market.marketplace.buy(carol, asset_id, PRICE)
    assert market.marketplace.has_access(asset_id, carol.address)
    assert market.token.balance_of(market.marketplace.vault_of(asset_id)) == PRICE

    listed = publish(market, alice, listed=True)  # a listed publish is for sale at once, as before
    market.marketplace.buy(carol, listed, PRICE)
    assert market.marketplace.asset(listed).listed


def test_a_new_version_is_not_for_sale_until_its_owner_lists_it_again(market, alice, bob, carol, relayer):
    asset_id = publish(market, alice, listed=True)
    fund_and_approve(market, bob)
    fund_and_approve(market, carol)
    market.marketplace.buy(bob, asset_id, PRICE)

    receipt = market.marketplace.publish_version(alice, asset_id, hashlib.sha256(b"v2").digest(), "ipfs://v2")
    (changed,) = market.chain.events(market.marketplace.contract, receipt, "ListingChanged")
    assert changed == {"assetId": asset_id, "listed": False}
    asset = market.marketplace.asset(asset_id)
    assert (asset.version, asset.listed) == (2, False)
    every_purchase_is_refused(market, asset_id, carol, relayer)
    assert market.marketplace.has_access(asset_id, bob.address)  # licenses bought before stay

    market.marketplace.set_listed(alice, asset_id, True)
    market.marketplace.buy(carol, asset_id, PRICE)
    assert market.token.balance_of(market.marketplace.vault_of(asset_id)) == 2 * PRICE

    # A version of an asset that was unlisted anyway changes no listing (and says nothing about it).
    market.marketplace.set_listed(alice, asset_id, False)
    receipt = market.marketplace.publish_version(alice, asset_id, hashlib.sha256(b"v3").digest(), "ipfs://v3")
    assert market.chain.events(market.marketplace.contract, receipt, "ListingChanged") == []
    assert not market.marketplace.asset(asset_id).listed


# ---------------------------------------------------------------------- the SDK against a live server


class Gateway:
    """A live API over the embedded session chain (uvicorn on 127.0.0.1), one per module; ``restart``
    starts it again on the same port and data directory with another upload limit, as an operator would."""

    def __init__(self, chain, settings: Settings) -> None:
        self.port = free_port()
        # The login domain is the one clients reach (127.0.0.1:port): the SDK signs no login for another.
        self.chain, self.settings = chain, settings.model_copy(update={"port": self.port, "siwe_domain": None})
        self.url, self.app = f"http://127.0.0.1:{self.port}", FastAPI()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self.app = create_app(self.settings, chain=self.chain)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self._server = server = uvicorn.Server(config)
        self._thread = thread = threading.Thread(target=server.run, name="uvicorn-publish-test", daemon=True)
        thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None and self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=30)
            assert not self._thread.is_alive(), "uvicorn did not stop"
            self._server = self._thread = None

    def restart(self, max_upload_bytes: int) -> None:
        """Stop, and start again with ``max_upload_bytes`` (AGENTMARKET_MAX_UPLOAD_BYTES) on the same data."""
        self.stop()
        self.settings = self.settings.model_copy(update={"max_upload_bytes": max_upload_bytes})
        self.start()


@pytest.fixture(scope="module")
def gateway(session_chain, deployment, tmp_path_factory) -> Iterator[Gateway]:
    home = tmp_path_factory.mktemp("publish")
    settings = Settings(manifest=deployment.save(home / "deployment.json"), data_dir=home / "server",
                        siwe_domain="testserver", settle_interval=3600, max_upload_bytes=UPLOAD_LIMIT)  # fmt: skip
    gateway = Gateway(session_chain, settings)
    gateway.start()
    try:
        yield gateway
    finally:
        gateway.stop()


@pytest.fixture
def live(gateway, chain) -> Iterator[Gateway]:
    """The live server with the UPLOAD_LIMIT, also after a test that raised it (the chain is reverted)."""
    try:
        yield gateway
    finally:
        if gateway.settings.max_upload_bytes != UPLOAD_LIMIT:
            gateway.restart(UPLOAD_LIMIT)


def fresh_account(chain) -> LocalAccount:
    """A new key (so no upload another test left in the store is its), with 1 ETH for gas."""
    account = Account.create()
    chain.send_eth(chain.accounts[0], account.address, 10**18)
    return account


def connect(live: Gateway, chain, account, **options) -> MarketplaceClient:
    http = httpx.Client(base_url=live.url, timeout=60, **options)
    return MarketplaceClient.connect(live.url, account, chain, http=http)


def catalog_entry(client: MarketplaceClient, asset_id: int) -> dict | None:
    """The asset as the catalog lists it with unlisted assets included (None if absent)."""
    items = client.assets(listed_only=False, limit=200).items
    return next((item for item in items if item.asset_id == asset_id), None)


@pytest.mark.backend("embedded")
def test_a_refused_upload_leaves_the_asset_unlisted_and_upload_finishes_the_publish(live, chain, market, tmp_path):
    owner, buyer = fresh_account(chain), fresh_account(chain)
    provider = connect(live, chain, owner)
    content = os.urandom(5_000)  # over the server's 1,000-byte limit
    path = tmp_path / "shard.bin"
    path.write_bytes(content)

    with pytest.raises(PublishIncomplete) as info:
        provider.publish(path, price=PRICE, uri="shard.bin")
    refused = info.value
    asset_id = refused.asset_id
    assert (refused.version, refused.uploaded) == (1, False)
    assert isinstance(refused.__cause__, ApiClientError) and refused.__cause__.status == 413
    assert str(refused).startswith(f"asset {asset_id} is on chain but unlisted: its content was not uploaded (HTTP 413")
    assert "content_too_large" in str(refused) and f"upload({asset_id}, content)" in str(refused)

    # On chain, not for sale; not in the catalog's default (buyable) view; marked in the full one.
    asset = market.marketplace.asset(asset_id)
    assert (asset.owner, asset.listed, asset.content_hash) == (owner.address, False, hashlib.sha256(content).digest())
    fund_and_approve(market, buyer)
    shopper = connect(live, chain, buyer)
    with pytest.raises(ContractRevert) as bought:
        shopper.buy(asset_id)
    assert bought.value.error == "AssetDelisted"
    x402 = httpx.get(f"{live.url}/v1/assets/{asset_id}/x402")
    assert (x402.status_code, x402.json()["error"]) == (409, "asset_delisted")
    assert asset_id not in [item.asset_id for item in shopper.assets().items]
    entry = catalog_entry(shopper, asset_id)
    assert entry is not None and (entry.listed, entry.content_uploaded) == (False, False)
    assert shopper.asset(asset_id).content_uploaded is False

    # The operator raises the limit; the owner's retry uploads, the server verifies, the owner lists.
    live.restart(1_000_000)
    with pytest.raises(AgentmarketError, match="right file"):
        provider.upload(asset_id, os.urandom(5_000))  # not the on-chain content: refused before sending
    with pytest.raises(AgentmarketError, match="only its owner"):
        shopper.upload(asset_id, path)
    assert not market.marketplace.asset(asset_id).listed
    stored = provider.upload(asset_id, path)
    assert stored.model_dump() == {"asset_id": asset_id, "version": 1, "size": len(content), "listed": True,
                                   "sha256": "0x" + hashlib.sha256(content).hexdigest()}  # fmt: skip
    assert market.marketplace.asset(asset_id).listed
    entry = catalog_entry(shopper, asset_id)
    assert entry is not None and (entry.listed, entry.content_uploaded) == (True, True)
    assert asset_id in [item.asset_id for item in shopper.assets().items]
    shopper.buy(asset_id)
    assert shopper.download(asset_id) == content


@pytest.mark.backend("embedded")
def test_a_failed_listing_is_reported_with_the_content_uploaded(live, chain, market):
    """The owner's wallet loses its gas money between the server's 201 and the listing transaction."""
    owner = fresh_account(chain)
    content = os.urandom(500)

    def drain_after_upload(response: httpx.Response) -> None:
        if response.request.method == "PUT" and response.status_code == 201:
            fee = 21_000 * (2 * chain.w3.eth.get_block("latest")["baseFeePerGas"] + 10**9)
            chain.send_eth(owner, chain.accounts[0].address, chain.balance(owner.address) - fee)

    provider = connect(live, chain, owner, event_hooks={"response": [drain_after_upload]})
    with pytest.raises(PublishIncomplete) as info:
        provider.publish(content, price=PRICE)
    incomplete = info.value
    assert (incomplete.version, incomplete.uploaded) == (1, True)
    assert f"asset {incomplete.asset_id} is on chain but unlisted: its content was uploaded but listing it failed" in (
        str(incomplete)
    )
    assert not market.marketplace.asset(incomplete.asset_id).listed
    entry = catalog_entry(provider, incomplete.asset_id)
    assert entry is not None and (entry.listed, entry.content_uploaded) == (False, True)

    chain.send_eth(chain.accounts[0], owner.address, 10**18)  # gas money again: the retry lists it
    assert connect(live, chain, owner).upload(incomplete.asset_id, content).listed is True
    assert market.marketplace.asset(incomplete.asset_id).listed


@pytest.mark.backend("embedded")
def test_a_new_version_whose_upload_fails_is_not_sold_and_its_old_bytes_are_not_served(live, chain, market):
    owner, early, late = fresh_account(chain), fresh_account(chain), fresh_account(chain)
    provider = connect(live, chain, owner)
    first, second = os.urandom(600), os.urandom(3_000)
    asset_id = provider.publish(first, price=PRICE)
    assert market.marketplace.asset(asset_id).listed
    fund_and_approve(market, early)
    fund_and_approve(market, late)
    early_buyer, late_buyer = connect(live, chain, early), connect(live, chain, late)
    early_buyer.buy(asset_id)
    assert early_buyer.download(asset_id) == first

    with pytest.raises(PublishIncomplete) as info:
        provider.publish_version(asset_id, second)  # 3,000 bytes: over the limit
    assert (info.value.asset_id, info.value.version, info.value.uploaded) == (asset_id, 2, False)
    assert str(info.value).startswith(f"asset {asset_id} version 2 is on chain but unlisted")
    assert not market.marketplace.asset(asset_id).listed
    with pytest.raises(ContractRevert, match="AssetDelisted"):
        late_buyer.buy(asset_id)
    with pytest.raises(ApiClientError) as missing:
        early_buyer.download(asset_id)  # a license holder gets no bytes of version 1 as version 2
    assert (missing.value.status, missing.value.code) == (404, "content_not_uploaded")

    live.restart(1_000_000)
    assert provider.upload(asset_id, second).model_dump() == {
        "asset_id": asset_id, "version": 2, "sha256": "0x" + hashlib.sha256(second).hexdigest(), "size": 3_000,
        "listed": True,
    }  # fmt: skip
    late_buyer.buy(asset_id)
    assert late_buyer.download(asset_id) == second == early_buyer.download(asset_id)

    # An owner who keeps an asset unlisted keeps it so through a new version, uploaded or not.
    market.marketplace.set_listed(owner, asset_id, False)
    assert provider.publish_version(asset_id, first) == 3
    assert not market.marketplace.asset(asset_id).listed
    assert catalog_entry(provider, asset_id).content_uploaded is True


@pytest.mark.backend("embedded")
def test_a_listed_asset_whose_content_the_server_lost_is_marked_and_restored(live, chain, market):
    owner = fresh_account(chain)
    provider = connect(live, chain, owner)
    content = os.urandom(700)
    asset_id = provider.publish(content, price=PRICE)
    assert provider.asset(asset_id).content_uploaded is True

    live.app.state.services.content.path_of(asset_id, 1).unlink()  # the server lost it
    assert provider.asset(asset_id).content_uploaded is False
    entry = next(item for item in provider.assets().items if item.asset_id == asset_id)
    assert (entry.listed, entry.content_uploaded) == (True, False)

    # A refused re-upload of a listed asset raises the server's error as it is (the asset's state is unchanged).
    live.restart(500)
    with pytest.raises(ApiClientError) as too_large:
        provider.upload(asset_id, content)
    assert (too_large.value.status, too_large.value.code) == (413, "content_too_large")
    # Re-uploading a listed asset sends no listing transaction.
    live.restart(UPLOAD_LIMIT)
    block = chain.block_number()
    assert provider.upload(asset_id, content).listed is True
    assert chain.block_number() == block  # nothing was sent on chain
    assert provider.asset(asset_id).content_uploaded is True


@pytest.mark.backend("embedded")
def test_a_provider_agent_gets_a_typed_refusal_naming_the_unlisted_asset(live, chain, market, tmp_path):
    """The agents' ``publish_asset`` tool (what ProviderAgent, BuilderAgent and the simulations publish with)."""
    owner = fresh_account(chain)
    wallet = AgentWallet.connect(owner, Budget(run_cap=0, asset_cap=0, call_ceiling=0),
                                 AuditLedger(tmp_path / "ledger.jsonl"), live.url, chain)  # fmt: skip
    context = ToolContext(wallet, tmp_path / "downloads")
    with pytest.raises(ActionRefused) as info:
        run_tool(context, "publish_asset", {"content": "x" * 5_000, "price": 1_000})  # over the 1,000-byte limit
    incomplete = info.value.__cause__
    assert isinstance(incomplete, PublishIncomplete) and not incomplete.uploaded
    assert f"asset {incomplete.asset_id} is on chain but unlisted: its content was not uploaded" in str(info.value)
    assert not market.marketplace.asset(incomplete.asset_id).listed
    published = run_tool(context, "publish_asset", {"content": "x" * 500, "price": 1_000})
    assert market.marketplace.asset(published.asset_id).listed
