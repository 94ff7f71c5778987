"""Marketplace and RevenueVault: publishing, licenses, payment paths, splits and royalties."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest

from marketplace.chain.contracts import RevenueVaultContract
from marketplace.chain.records import AssetKind
from marketplace.chain.units import PERPETUAL, to_units
from tests.helpers.chain import expect_revert

TOTAL_SHARES = 100_000_000
HOUR = 3600
CONTENT = hashlib.sha256(b"iris shard 1").digest()


def publish(market, owner, *, price=to_units(1), payees=None, parents=(), duration=0, kind=AssetKind.DATASET):
    return market.marketplace.publish(
        owner,
        kind=kind,
        content_hash=CONTENT,
        uri="ipfs://asset",
        price=price,
        token=market.token.address,
        payees=[(owner.address, 10_000)] if payees is None else payees,
        parents=list(parents),
        license_duration=duration,
    )


def fund_and_approve(market, admin, buyer, amount=to_units(100)):
    market.token.mint(admin, buyer.address, amount)
    market.token.approve(buyer, market.marketplace.address, amount)


# ---------------------------------------------------------------------- publishing


def test_publish_creates_asset_and_deterministic_vault_with_fee_split(market, admin, alice, bob):
    asset_id = publish(market, alice, price=to_units(3), payees=[(alice.address, 6_000), (bob.address, 4_000)])
    asset = market.marketplace.asset(asset_id)
    assert (asset.asset_id, asset.kind, asset.owner, asset.price) == (1, AssetKind.DATASET, alice.address, 3_000_000)
    assert (asset.content_hash, asset.uri, asset.version, asset.listed, asset.parents) == (
        CONTENT,
        "ipfs://asset",
        1,
        True,
        (),
    )
    assert asset.vault == market.marketplace.vault_of(asset_id)
    fee = market.marketplace.fee_bps()
    assert fee == 100
    assert market.vault(asset_id).payees() == {
        alice.address: 6_000 * (10_000 - fee),
        bob.address: 4_000 * (10_000 - fee),
        admin.address: fee * 10_000,  # the treasury
    }


def test_parent_vaults_are_payees_of_the_child(market, alice, bob):
    data = publish(market, alice)
    model = publish(market, bob, kind=AssetKind.MODEL, payees=[(bob.address, 7_000)], parents=[(data, 3_000)])
    assert market.marketplace.asset(model).parents == (data,)
    payees = market.vault(model).payees()
    assert payees[market.marketplace.vault_of(data)] == 3_000 * 9_900


@pytest.mark.parametrize(
    ("payees", "parents", "error"),
    [
        ([], [], "NoPayees"),
        ([("alice", 5_000)], [], "SharesDoNotSum"),
        ([("alice", 10_001)], [], "SharesDoNotSum"),
        ([("alice", 5_000)], [(99, 5_000)], "UnknownParent"),
        ([("alice", 5_000)], [(0, 5_000)], "UnknownParent"),
        ([("alice", 0), ("bob", 10_000)], [], "ZeroShare"),
        ([("alice", 100)] * 101, [], "TooManyPayees"),
        ([("alice", 10_000 - 17)], [(1, 1)] * 17, "TooManyParents"),
    ],
)
def test_publish_rejects_bad_splits(market, alice, bob, payees, parents, error):
    publish(market, alice)  # asset 1 exists, so parent 1 is known
    named = {"alice": alice.address, "bob": bob.address}
    expect_revert(error, publish, market, alice, payees=[(named[p], s) for p, s in payees], parents=parents)


def test_publish_rejects_bad_token_and_price(market, alice):
    with pytest.raises(Exception) as info:
        market.marketplace.publish(
            alice, kind=AssetKind.DATASET, content_hash=CONTENT, uri="", price=1, token=alice.address,
            payees=[(alice.address, 10_000)],
        )  # fmt: skip
    assert getattr(info.value, "error", None) == "InvalidToken"
    revert = expect_revert("PriceTooLarge", publish, market, alice, price=2**96)
    assert revert.args_by_name == {"price": 2**96}


def test_only_the_owner_changes_an_asset(market, alice, bob):
    asset_id = publish(market, alice)
    revert = expect_revert("NotAssetOwner", market.marketplace.set_price, bob, asset_id, 5)
    assert revert.args_by_name == {"assetId": asset_id, "caller": bob.address, "owner": alice.address}
    expect_revert("NotAssetOwner", market.marketplace.set_listed, bob, asset_id, False)
    expect_revert("NotAssetOwner", market.marketplace.publish_version, bob, asset_id, CONTENT, "x")
    expect_revert("UnknownAsset", market.marketplace.set_price, alice, 42, 5)

    new_hash = hashlib.sha256(b"v2").digest()
    market.marketplace.publish_version(alice, asset_id, new_hash, "ipfs://v2")
    market.marketplace.set_price(alice, asset_id, 7)
    asset = market.marketplace.asset(asset_id)
    assert (asset.version, asset.content_hash, asset.uri, asset.price) == (2, new_hash, "ipfs://v2", 7)


# ---------------------------------------------------------------------- buying


def test_buy_pays_exactly_the_price_into_the_vault(market, admin, alice, carol):
    asset_id = publish(market, alice, price=to_units("2.5"))
    fund_and_approve(market, admin, carol)
    receipt = market.marketplace.buy(carol, asset_id, to_units(3))
    vault = market.marketplace.vault_of(asset_id)
    assert market.token.balance_of(vault) == 2_500_000
    assert market.token.balance_of(carol.address) == to_units(100) - 2_500_000
    assert market.marketplace.has_access(asset_id, carol.address)
    assert market.marketplace.license(asset_id, carol.address).perpetual
    (event,) = market.chain.events(market.marketplace.contract, receipt, "LicensePurchased")
    assert event == {"assetId": asset_id, "buyer": carol.address, "price": 2_500_000, "expiresAt": PERPETUAL}


def test_buy_errors_carry_their_data(market, admin, alice, carol):
    asset_id = publish(market, alice, price=to_units(2))
    fund_and_approve(market, admin, carol)
    expect_revert("UnknownAsset", market.marketplace.buy, carol, 9, to_units(5))
    revert = expect_revert("PriceAboveMax", market.marketplace.buy, carol, asset_id, to_units(1))
    assert revert.args_by_name == {"assetId": asset_id, "price": 2_000_000, "maxPrice": 1_000_000}
    market.marketplace.set_listed(alice, asset_id, False)
    expect_revert("AssetDelisted", market.marketplace.buy, carol, asset_id, to_units(5))
    market.marketplace.set_listed(alice, asset_id, True)
    market.marketplace.buy(carol, asset_id, to_units(5))
    expect_revert("AlreadyLicensed", market.marketplace.buy, carol, asset_id, to_units(5))
    assert market.token.balance_of(market.marketplace.vault_of(asset_id)) == to_units(2)


def test_buy_without_approval_fails_and_moves_nothing(market, admin, alice, carol):
    asset_id = publish(market, alice)
    market.token.mint(admin, carol.address, to_units(5))
    expect_revert("ERC20InsufficientAllowance", market.marketplace.buy, carol, asset_id, to_units(5))
    assert not market.marketplace.has_access(asset_id, carol.address)
    assert market.token.balance_of(carol.address) == to_units(5)


def test_timed_license_expires_and_rebuying_extends_it(chain, market, admin, alice, carol):
    asset_id = publish(market, alice, duration=HOUR)
    fund_and_approve(market, admin, carol)
    market.marketplace.buy(carol, asset_id, to_units(1))
    first = market.marketplace.license(asset_id, carol.address).expires_at
    market.marketplace.buy(carol, asset_id, to_units(1))
    assert market.marketplace.license(asset_id, carol.address).expires_at == first + HOUR
    chain.time_travel(first + HOUR)
    assert not market.marketplace.has_access(asset_id, carol.address)
    market.marketplace.buy(carol, asset_id, to_units(1))
    assert market.marketplace.license(asset_id, carol.address).expires_at == chain.timestamp() + HOUR


def test_buy_with_permit_needs_no_prior_approval(chain, market, admin, alice, carol):
    asset_id = publish(market, alice)
    market.token.mint(admin, carol.address, to_units(5))
    market.marketplace.buy_with_permit(carol, asset_id, to_units(1), chain.timestamp() + HOUR)
    assert market.marketplace.has_access(asset_id, carol.address)
    assert market.token.balance_of(market.marketplace.vault_of(asset_id)) == to_units(1)


def test_buy_with_authorization_is_gasless_for_the_buyer(chain, market, admin, alice, carol, relayer):
    asset_id = publish(market, alice, price=to_units(4), duration=HOUR)  # timed, so buying twice is allowed
    market.token.mint(admin, carol.address, to_units(5))
    carol_eth = chain.balance(carol.address)
    auth = market.marketplace.sign_purchase(carol, asset_id, valid_before=chain.timestamp() + HOUR)
    market.marketplace.buy_with_authorization(auth, relayer)
    assert market.marketplace.has_access(asset_id, carol.address)
    assert not market.marketplace.has_access(asset_id, relayer.address)
    assert chain.balance(carol.address) == carol_eth
    assert market.token.balance_of(market.marketplace.vault_of(asset_id)) == to_units(4)
    assert market.token.balance_of(market.marketplace.address) == 0
    expect_revert("ERC3009UsedAuthorization", market.marketplace.buy_with_authorization, auth, relayer)


def test_purchase_authorization_is_bound_to_its_asset_price_and_signer(
    chain, market, admin, alice, bob, carol, relayer
):
    first = publish(market, alice, price=to_units(1))
    second = publish(market, bob, price=to_units(1))
    market.token.mint(admin, carol.address, to_units(5))
    auth = market.marketplace.sign_purchase(carol, first, valid_before=chain.timestamp() + HOUR)
    # the same signature presented for another asset of the same price
    expect_revert(
        "ERC3009InvalidSignature",
        market.marketplace.buy_with_authorization,
        dataclasses.replace(auth, asset_id=second),
        relayer,
    )
    # someone else's signature claiming carol's money
    forged = market.marketplace.sign_purchase(bob, first, valid_before=chain.timestamp() + HOUR)
    expect_revert(
        "ERC3009InvalidSignature",
        market.marketplace.buy_with_authorization,
        dataclasses.replace(forged, buyer=carol.address),
        relayer,
    )
    market.marketplace.set_price(alice, first, to_units(2))
    revert = expect_revert("PriceAboveMax", market.marketplace.buy_with_authorization, auth, relayer)
    assert revert.args_by_name["price"] == to_units(2)
    market.marketplace.set_price(alice, first, to_units("0.5"))
    expect_revert("PriceMismatch", market.marketplace.buy_with_authorization, auth, relayer)
    assert market.token.balance_of(carol.address) == to_units(5)


# ---------------------------------------------------------------------- vaults


def test_vault_splits_by_share_and_anyone_releases(market, admin, alice, bob, carol, relayer):
    asset_id = publish(market, alice, price=to_units(10), payees=[(alice.address, 7_000), (bob.address, 3_000)])
    fund_and_approve(market, admin, carol)
    market.marketplace.buy(carol, asset_id, to_units(10))
    vault = market.vault(asset_id)
    token = market.token.address
    assert vault.claimable(token, alice.address) == 6_930_000
    assert vault.claimable(token, bob.address) == 2_970_000
    assert vault.claimable(token, admin.address) == 100_000
    alice_before = market.token.balance_of(alice.address)
    vault.release(relayer, token, alice.address)  # a stranger may release; money goes to the payee
    assert market.token.balance_of(alice.address) - alice_before == 6_930_000
    assert vault.claimable(token, alice.address) == 0
    revert = expect_revert("NothingToRelease", vault.release, relayer, token, alice.address)
    assert revert.args_by_name == {"token": token, "payee": alice.address}
    expect_revert("NotAPayee", vault.release, relayer, token, carol.address)


def test_direct_transfers_to_the_vault_are_split_too(market, alice, bob):
    """x402 and channel claims are plain transfers into the vault: no attribution step."""
    asset_id = publish(market, bob, payees=[(bob.address, 10_000)])
    vault = market.vault(asset_id)
    market.token.transfer(alice, vault.address, 1_000_001)
    assert vault.total_received(market.token.address) == 1_000_001
    assert vault.claimable(market.token.address, bob.address) == 990_000  # floor(1_000_001 * 0.99)


def test_royalties_flow_up_two_levels(market, admin, alice, bob, carol, relayer):
    token = market.token.address
    data = publish(market, alice, payees=[(alice.address, 10_000)])
    model = publish(market, bob, payees=[(bob.address, 8_000)], parents=[(data, 2_000)])
    derived = publish(market, carol, price=to_units(100), payees=[(carol.address, 5_000)], parents=[(model, 5_000)])
    fund_and_approve(market, admin, relayer, to_units(100))
    market.marketplace.buy(relayer, derived, to_units(100))

    derived_vault, model_vault, data_vault = market.vault(derived), market.vault(model), market.vault(data)
    derived_vault.release(relayer, token, model_vault.address)
    assert model_vault.total_received(token) == 49_500_000  # 50% of 99% of 100
    model_vault.release(relayer, token, data_vault.address)
    assert data_vault.total_received(token) == 9_801_000  # 20% of 99% of that
    alice_before = market.token.balance_of(alice.address)
    data_vault.release(relayer, token, alice.address)
    assert market.token.balance_of(alice.address) - alice_before == 9_702_990  # 99% again


def test_rounding_never_releases_more_than_received(market, alice, bob, carol, relayer):
    payees = [(alice.address, 3_333), (bob.address, 3_333), (carol.address, 3_334)]
    asset_id = publish(market, alice, payees=payees)
    vault = market.vault(asset_id)
    token = market.token.address
    for amount in (1, 2, 7, 99_999):
        market.token.transfer(alice, vault.address, amount)
        for payee in vault.payees():
            if vault.claimable(token, payee):
                vault.release(relayer, token, payee)
        assert vault.total_released(token) <= vault.total_received(token)
        assert market.token.balance_of(vault.address) == vault.total_received(token) - vault.total_released(token)


def test_vault_cannot_be_initialised_twice(market, alice):
    vault = market.vault(publish(market, alice))
    fn = vault.contract.functions.initialize(1, [alice.address], [TOTAL_SHARES])
    expect_revert("InvalidInitialization", market.chain.send, fn, alice)
    implementation = RevenueVaultContract(
        market.chain, market.marketplace.contract.functions.vaultImplementation().call()
    )
    fn = implementation.contract.functions.initialize(1, [alice.address], [TOTAL_SHARES])
    expect_revert("InvalidInitialization", market.chain.send, fn, alice)


# ---------------------------------------------------------------------- gas is O(1) in payees and lineage depth


def test_buy_and_release_gas_do_not_depend_on_payees_or_depth(chain, market, admin, alice, bob, carol, relayer):
    token = market.token.address
    simple = publish(market, alice, payees=[(alice.address, 10_000)])
    strangers = [(chain.w3.to_checksum_address(f"0x{i:040x}"), 200) for i in range(1, 50)]
    level1 = publish(market, bob, payees=[(bob.address, 10_000)])
    level2 = publish(market, bob, payees=[(bob.address, 9_000)], parents=[(level1, 1_000)])
    level3 = publish(market, bob, payees=[(bob.address, 9_000)], parents=[(level2, 1_000)])
    wide_and_deep = publish(market, alice, payees=[(alice.address, 100), *strangers], parents=[(level3, 100)])
    assert len(market.vault(wide_and_deep).payees()) == 52  # 50 payees, a parent vault, the treasury

    fund_and_approve(market, admin, carol)
    gas_simple = market.marketplace.buy(carol, simple, to_units(1), gas=300_000)["gasUsed"]
    gas_wide = market.marketplace.buy(carol, wide_and_deep, to_units(1), gas=300_000)["gasUsed"]
    assert abs(gas_simple - gas_wide) <= 0.02 * gas_simple, (gas_simple, gas_wide)

    # A payee's first release writes two fresh storage slots; every later one is the steady state,
    # and that is the same for a vault of 1 payee and one of 52.
    for asset_id in (simple, wide_and_deep):
        market.vault(asset_id).release(relayer, token, alice.address)
    fund_and_approve(market, admin, bob)
    market.marketplace.buy(bob, simple, to_units(1))
    market.marketplace.buy(bob, wide_and_deep, to_units(1))
    release_simple = market.vault(simple).release(relayer, token, alice.address, gas=200_000)["gasUsed"]
    release_wide = market.vault(wide_and_deep).release(relayer, token, alice.address, gas=200_000)["gasUsed"]
    assert release_simple == release_wide
    assert release_simple <= 60_000
