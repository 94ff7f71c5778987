"""Royalties up the lineage (marketplace/chain/lineage.py), on both backends: what waits for an account
anywhere up its assets' lineage is computed to the unit, withdrawing collects exactly that, `release`
pushes one asset's royalties up for anyone, and nothing strands in an intermediate vault when tokens
differ along a lineage. Then a property test on random lineages (embedded chain).

The figures asserted are worked out by hand from the vault's rule: a payee's due is
floor(received * shares / 1e8) - released, shares = bps * (10,000 - fee bps), the fee 100 bps.
"""

from __future__ import annotations

import os
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import pytest
from eth_account import Account
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from marketplace.api import Settings, create_app
from marketplace.chain import connect
from marketplace.chain.contracts import TestUSD
from marketplace.chain.deployment import deploy_all
from marketplace.chain.eip712 import sign_voucher
from marketplace.chain.lineage import (
    Lineage,
    ReleaseIncomplete,
    VaultReads,
    clone_address,
    execute,
    plan_release,
    plan_withdrawal,
)
from marketplace.chain.market import Market
from marketplace.chain.records import AssetKind
from marketplace.chain.units import BPS, TOTAL_SHARES, to_units
from marketplace.errors import AgentmarketError

NET = BPS - 100  # what is left of every bps once the 1% protocol fee is taken off the top


def share(bps: int) -> int:
    """A provider bps as vault shares (out of 1e8)."""
    return bps * NET


def due(received: int, bps: int) -> int:
    return received * share(bps) // TOTAL_SHARES


def publish(market: Market, owner, *, token: str, payees, parents=(), price=to_units(1), kind=AssetKind.DATASET):
    return market.marketplace.publish(
        owner, kind=kind, content_hash=os.urandom(32), uri="ipfs://x", price=price, token=token,
        payees=[(p if isinstance(p, str) else p.address, bps) for p, bps in payees], parents=list(parents),
    )  # fmt: skip


def other_token(chain, admin) -> TestUSD:
    return TestUSD(chain, chain.deploy("TestUSD", admin.address, sender=admin).address)


def collect(market: Market, account, caller=None):
    """Plan ``account``'s withdrawal, send it, and return (plan, what ``account`` received per token)."""
    lineage = Lineage.of_market(market)
    plan = plan_withdrawal(market.chain, lineage, account.address)
    tokens = {r.token for r in plan.releases} | {s.token for s in plan.slots}
    before = {t: TestUSD(market.chain, t).balance_of(account.address) for t in tokens}
    execute(market.chain, caller or account, plan)
    return plan, {t: TestUSD(market.chain, t).balance_of(account.address) - before[t] for t in tokens}


def slot(plan, asset_id, token):
    (found,) = [s for s in plan.slots if (s.asset_id, s.token) == (asset_id, token)]
    return found


def test_vault_addresses_are_computed_as_the_marketplace_predicts(market, alice):
    token = market.token.address
    ids = [publish(market, alice, token=token, payees=[(alice, 10_000)]) for _ in range(3)]
    implementation = market.chain.call(market.marketplace.contract.functions.vaultImplementation())
    for asset_id in ids:
        assert clone_address(implementation, asset_id, market.marketplace.address) == market.marketplace.vault_of(
            asset_id
        )
    lineage = Lineage.of_market(market)
    assert [lineage.asset_of_vault(market.marketplace.vault_of(i)) for i in ids] == ids
    assert lineage.asset_of_vault(alice.address) is None


def test_a_provider_collects_the_dataset_royalty_its_model_earned(chain, market, admin, alice, bob, relayer):
    """The issue's case: bob owns dataset 1 and model 2 (--parent 1:2000); buyers pay model 2 by license and
    by channel. Before, withdrawing left the dataset's royalty in the model's vault."""
    token = market.token.address
    data = publish(market, bob, token=token, payees=[(bob, 10_000)], price=to_units("2.5"))
    model = publish(market, bob, token=token, payees=[(bob, 8_000)], parents=[(data, 2_000)], price=to_units(2),
                    kind=AssetKind.MODEL)  # fmt: skip
    market.token.approve(alice, market.marketplace.address, to_units(2))
    market.marketplace.buy(alice, model, to_units(2))
    market.token.approve(alice, market.channels.address, to_units(5))
    channel = market.channels.open(alice, model, token, to_units(5), chain.timestamp() + 3600,
                                   receiver_authorizer=relayer.address)  # fmt: skip
    voucher = sign_voucher(alice, market.channels.domain, channel, 30_000).packed
    market.channels.claim(relayer, channel, 30_000, 30_000, voucher)
    paid = to_units(2) + 30_000

    plan = plan_withdrawal(chain, Lineage.of_market(market), bob.address)
    royalty = due(paid, 2_000)
    assert (slot(plan, model, token).claimable, slot(plan, model, token).waiting) == (due(paid, 8_000), 0)
    assert (slot(plan, data, token).claimable, slot(plan, data, token).waiting) == (0, due(royalty, 10_000))
    # One vault-to-vault release (the royalty), then both vaults to bob: three transactions.
    assert [(r.asset_id, r.payee_asset_id, r.amount) for r in plan.releases] == [
        (model, data, royalty), (model, None, due(paid, 8_000)), (data, None, due(royalty, 10_000)),
    ]  # fmt: skip
    assert plan.complete and plan.walked == 2

    before = market.token.balance_of(bob.address)
    sent = execute(chain, bob, plan)
    assert market.token.balance_of(bob.address) - before == sum(s.total for s in plan.slots)
    assert [r.amount for r in sent] == [r.amount for r in plan.releases]
    assert all(r.gas_used > 0 and r.transaction.startswith("0x") for r in sent)
    again = plan_withdrawal(chain, Lineage.of_market(market), bob.address)
    assert again.releases == () and all(s.claimable == s.waiting == 0 for s in again.slots)
    assert slot(again, data, token).released == due(royalty, 10_000)
    assert execute(chain, bob, plan) == []  # the same plan again sends nothing: each claimable is re-read


def test_a_model_priced_in_another_token_leaves_nothing_in_its_parents_vault(chain, market, admin, alice, bob, carol):
    """Grandparent G and parent P are priced in tUSD, the model M in token B. The old release_upstream
    released only M's token from M's vault, so G's royalty in B stayed in P's vault for good."""
    token_a, token_b = market.token, other_token(chain, admin)
    a, b = token_a.address, token_b.address
    grand = publish(market, alice, token=a, payees=[(alice, 10_000)])
    parent = publish(market, bob, token=a, payees=[(bob, 7_000)], parents=[(grand, 3_000)])
    model = publish(market, carol, token=b, payees=[(carol, 5_000)], parents=[(parent, 5_000)], kind=AssetKind.MODEL)
    token_b.mint(admin, admin.address, to_units(10))
    token_b.transfer(admin, market.marketplace.vault_of(model), 1_000_000)  # e.g. an x402 payment in B
    market.token.approve(alice, market.marketplace.address, to_units(1))
    market.marketplace.buy(alice, parent, to_units(1))  # and a license of P in tUSD

    sent = market.release_upstream(relayer_of(chain), model)
    to_parent, royalty_a = due(1_000_000, 5_000), due(to_units(1), 3_000)
    to_grand = due(to_parent, 3_000)
    # M's vault pays P's in B; P's vault pays G's in every token it holds: its own tUSD and M's B.
    assert [(r.asset_id, r.payee_asset_id, r.token, r.amount) for r in sent] == [
        (model, parent, b, to_parent), (parent, grand, a, royalty_a), (parent, grand, b, to_grand),
    ]  # fmt: skip
    parent_vault, grand_vault = market.vault(parent), market.marketplace.vault_of(grand)
    assert parent_vault.claimable(a, grand_vault) == parent_vault.claimable(b, grand_vault) == 0
    assert market.vault(grand).total_received(b) == to_grand

    plan, got = collect(market, alice)
    assert (slot(plan, grand, b).claimable, slot(plan, grand, a).claimable) == (due(to_grand, 10_000),
                                                                                due(royalty_a, 10_000))  # fmt: skip
    assert got == {a: due(royalty_a, 10_000), b: due(to_grand, 10_000)}
    for payee in (bob, carol, admin):  # the treasury (admin) is a payee of every vault
        collect(market, payee)
    for asset_id in (grand, parent, model):
        vault = market.vault(asset_id)
        for token in (a, b):
            assert all(vault.claimable(token, p) == 0 for p in vault.payees()), (asset_id, token)


def test_earnings_over_http_show_every_token_waiting_up_the_lineage(chain, deployment, market, admin, alice, bob,
                                                                    carol, tmp_path):  # fmt: skip
    """The server's figure (its lineage from the read model) is the chain's (the SDK's plan), per token: the
    grandparent's owner sees the royalty in token B still waiting in the model's vault."""
    token_b = other_token(chain, admin)
    a, b = market.token.address, token_b.address
    grand = publish(market, alice, token=a, payees=[(alice, 10_000)])
    parent = publish(market, bob, token=a, payees=[(bob, 7_000)], parents=[(grand, 3_000)])
    model = publish(market, carol, token=b, payees=[(carol, 5_000)], parents=[(parent, 5_000)], kind=AssetKind.MODEL)
    token_b.mint(admin, market.marketplace.vault_of(model), 1_000_000)
    market.token.approve(alice, market.marketplace.address, to_units(1))
    market.marketplace.buy(alice, grand, to_units(1))
    settings = Settings(manifest=deployment.save(tmp_path / "deployment.json"), data_dir=tmp_path / "server")
    with TestClient(create_app(settings, chain=chain)) as http:
        shown = http.get(f"/v1/accounts/{alice.address}/earnings").json()
    plan = plan_withdrawal(chain, Lineage.of_market(market), alice.address)
    in_b = due(due(due(1_000_000, 5_000), 3_000), 10_000)
    assert [(v["asset_id"], v["token"], v["claimable"], v["waiting"]) for v in shown["vaults"]] == [
        (grand, a, str(due(to_units(1), 10_000)), "0"), (grand, b, "0", str(in_b)),
    ] == [(s.asset_id, s.token, str(s.claimable), str(s.waiting)) for s in plan.slots]  # fmt: skip
    assert (shown["token"], shown["total_claimable"], shown["total_waiting"]) == (a, str(due(to_units(1), 10_000)), "0")
    assert [(t["token"], t["waiting"]) for t in shown["totals"]] == [(a, "0"), (b, str(in_b))]
    assert shown["pending_releases"] == len(plan.releases) == 4 and shown["lineage_complete"]  # M-P, P-G, G-alice x2


def relayer_of(chain):
    """An account that owns no asset: whoever pushes royalties up pays only gas."""
    return chain.accounts[6]


def test_anyone_may_push_an_assets_royalties_up_its_lineage(chain, market, admin, alice, bob, carol):
    token = market.token.address
    data = publish(market, alice, token=token, payees=[(alice, 10_000)])
    model = publish(market, bob, token=token, payees=[(bob, 6_000)], parents=[(data, 4_000)], kind=AssetKind.MODEL)
    derived = publish(market, carol, token=token, payees=[(carol, 5_000)], parents=[(model, 5_000)])
    market.token.approve(alice, market.marketplace.address, to_units(1))
    market.marketplace.buy(alice, derived, to_units(1))
    stranger = relayer_of(chain)
    held = market.token.balance_of(stranger.address)

    plan = plan_release(chain, Lineage.of_market(market), derived)
    sent = market.release_upstream(stranger, derived)
    to_model = due(to_units(1), 5_000)
    assert [(r.asset_id, r.payee_asset_id, r.amount) for r in sent] == [
        (derived, model, to_model), (model, data, due(to_model, 4_000)),
    ]  # fmt: skip
    assert [r.amount for r in plan.releases] == [r.amount for r in sent]
    assert market.token.balance_of(stranger.address) == held  # it paid gas, it got nothing
    assert market.release_upstream(stranger, derived) == []  # nothing left to push: no transaction
    assert market.vault(data).claimable(token, alice.address) == due(due(to_model, 4_000), 10_000)
    with pytest.raises(AgentmarketError, match="asset 99 does not exist"):
        market.release_upstream(stranger, 99)


def test_a_payee_that_is_another_assets_vault_and_a_cycle_through_one(chain, market, admin, alice, bob, carol):
    """A payee may be any address, so also the vault of an asset its publisher does not own, even of one
    published later: asset 1 names the vault of asset 2 (not yet published), which names asset 1 as its
    parent. The walk visits each asset once; every figure is still exact; what a cycle sends round stays
    claimable for the next run, which gets less each time."""
    token = market.token.address
    implementation = chain.call(market.marketplace.contract.functions.vaultImplementation())
    next_id = market.marketplace.asset_count() + 1
    future_vault = clone_address(implementation, next_id + 1, market.marketplace.address)
    first = publish(market, alice, token=token, payees=[(alice, 5_000), (future_vault, 5_000)])
    second = publish(market, bob, token=token, payees=[(bob, 5_000)], parents=[(first, 5_000)])
    assert market.marketplace.vault_of(second) == future_vault
    gift = publish(market, carol, token=token, payees=[(carol, 9_000), (market.marketplace.vault_of(first), 1_000)])
    for asset_id in (first, second, gift):
        market.token.transfer(alice, market.marketplace.vault_of(asset_id), 1_000_000)

    lineage = Lineage.of_market(market)
    assert lineage.upstream(first) == [second] and lineage.upstream(second) == [first]
    assert lineage.downstream(first) == [second, gift]
    waiting = []
    for _run in range(3):
        plan, got = collect(market, alice)
        assert plan.walked == 3 and plan.complete
        assert got == {token: sum(s.total for s in plan.slots)}  # the plan's figure, to the unit
        waiting.append(slot(plan, first, token).total)
    assert waiting[0] > waiting[1] > waiting[2] > 0
    assert slot(plan, first, token).released == waiting[0] + waiting[1]


def test_a_vault_whose_token_cannot_be_read_is_left_out_not_fatal(chain, market, admin, alice, bob):
    """A child priced in a 'token' whose balanceOf reverts (any contract will do: here the Marketplace)
    cannot stop its parent's owner from seeing and collecting the rest."""
    token = market.token.address
    data = publish(market, alice, token=token, payees=[(alice, 10_000)])
    publish(market, bob, token=market.marketplace.address, payees=[(bob, 5_000)], parents=[(data, 5_000)])
    market.token.approve(bob, market.marketplace.address, to_units(1))
    market.token.mint(admin, bob.address, to_units(1))
    market.marketplace.buy(bob, data, to_units(1))
    plan, got = collect(market, alice)
    weird = market.marketplace.address
    assert not plan.complete and plan.unreadable == ((data, weird), (data + 1, weird))
    assert got == {token: due(to_units(1), 10_000)}


def test_a_child_priced_in_a_gas_burning_token_costs_its_parents_owner_nothing(chain, market, admin, alice, carol):
    """Anyone may publish a child of your dataset priced in their own token and pay its vault in it. Here the
    token's next transfer first publishes an asset with 40 payees (about 2M gas): the release that would move
    it is estimated, found too costly and not sent; every other release is, and the error says which one."""
    token = market.token.address
    data = publish(market, alice, token=token, payees=[(alice, 10_000)])
    market.token.approve(alice, market.marketplace.address, to_units(1))
    market.marketplace.buy(alice, data, to_units(1))
    evil = chain.deploy("MaliciousToken", sender=carol)
    child = publish(market, carol, token=evil.address, payees=[(carol, 5_000)], parents=[(data, 5_000)])
    chain.send(evil.functions.mint(market.marketplace.vault_of(child), 1_000_000), carol)
    burn = market.marketplace.contract.encode_abi("publish", args=[
        0, b"\x01" * 32, "", 1, token, 0, [Account.create().address for _ in range(40)], [250] * 40, [], [], True,
    ])  # fmt: skip
    chain.send(evil.functions.arm(market.marketplace.address, burn), carol)

    plan = plan_withdrawal(chain, Lineage.of_market(market), alice.address)
    assert [(r.asset_id, r.token) for r in plan.releases] == [
        (child, evil.address), (data, token), (data, evil.address),
    ]  # fmt: skip
    before = market.token.balance_of(alice.address)
    with pytest.raises(ReleaseIncomplete) as partial:
        execute(chain, alice, plan)
    assert [(r.asset_id, r.token) for r in partial.value.sent] == [(data, token)]
    assert market.token.balance_of(alice.address) - before == due(to_units(1), 10_000)
    (refused, why), *_ = partial.value.failed
    assert (refused.asset_id, refused.token) == (child, evil.address) and "more than 300,000" in why
    assert not partial.value.stopped and chain.call(evil.functions.reentryCount()) == 0  # never sent


def test_the_walk_is_bounded_and_says_what_it_left_out(chain, market, alice, bob):
    token = market.token.address
    ids = [publish(market, alice, token=token, payees=[(alice, 10_000)])]
    for _ in range(4):  # a chain of five assets, each the parent of the next
        ids.append(publish(market, bob, token=token, payees=[(bob, 5_000)], parents=[(ids[-1], 5_000)]))
    market.token.transfer(alice, market.marketplace.vault_of(ids[-1]), 1_000_000)
    lineage = Lineage.of_market(market)
    bounded = plan_withdrawal(chain, lineage, alice.address, max_assets=3)
    assert (bounded.walked, bounded.left_out, bounded.complete, bounded.releases) == (3, 1, False, ())
    whole = plan_withdrawal(chain, lineage, alice.address)
    assert (whole.walked, whole.complete, len(whole.releases)) == (5, True, 5)
    up = plan_release(chain, lineage, ids[-1], max_assets=2)
    assert (up.walked, up.left_out, [r.asset_id for r in up.releases]) == (2, 1, [ids[-1]])


def test_releases_made_meanwhile_by_others_are_skipped(chain, market, alice, bob):
    """Between planning and sending, someone else sends one of the plan's releases: it is not sent again
    (no revert, no gas wasted on it), and the account still gets exactly the planned figure."""
    token = market.token.address
    data = publish(market, alice, token=token, payees=[(alice, 10_000)])
    model = publish(market, bob, token=token, payees=[(bob, 7_000)], parents=[(data, 3_000)])
    market.token.transfer(alice, market.marketplace.vault_of(model), 2_000_000)
    plan = plan_withdrawal(chain, Lineage.of_market(market), alice.address)
    assert len(plan.releases) == 2
    market.release_upstream(bob, model)  # bob pushes the royalty first
    before = market.token.balance_of(alice.address)
    sent = execute(chain, alice, plan)
    assert [r.payee for r in sent] == [alice.address]
    assert market.token.balance_of(alice.address) - before == sum(s.total for s in plan.slots)


@pytest.mark.backend("anvil")
def test_a_run_that_runs_out_of_gas_money_stops_cleanly_and_a_rerun_finishes(chain, market, admin, alice, bob):
    """Anvil only: the embedded chain's gas estimate asks the sender for the whole block's gas, so there
    no balance pays for one release and not for the next."""
    token = market.token.address
    data = publish(market, alice, token=token, payees=[(alice, 10_000)])
    model = publish(market, alice, token=token, payees=[(alice, 8_000)], parents=[(data, 2_000)])
    market.token.transfer(alice, market.marketplace.vault_of(model), 2_000_000)
    plan = plan_withdrawal(chain, Lineage.of_market(market), alice.address)
    poor = Account.create()
    w3 = chain.w3
    max_fee = w3.eth.max_priority_fee + 2 * w3.eth.get_block("latest")["baseFeePerGas"]
    chain.send_eth(admin, poor.address, 165_000 * max_fee)  # one release's gas limit and a fifth more
    with pytest.raises(ReleaseIncomplete) as stopped:
        execute(chain, poor, plan)
    assert stopped.value.stopped and len(stopped.value.sent) == 1
    assert f"{poor.address} has " in str(stopped.value) and "ETH, not enough to pay" in str(stopped.value)
    assert "stays claimable" in str(stopped.value)
    before = market.token.balance_of(alice.address)
    execute(chain, bob, plan_withdrawal(chain, Lineage.of_market(market), alice.address))
    assert market.token.balance_of(alice.address) - before == sum(s.total for s in plan.slots)


# ---------------------------------------------------------------------- random lineages

PROFILE = os.environ.get("AGENTMARKET_HYPOTHESIS_PROFILE", "ci")
EXAMPLES = {"ci": 6, "long": 300}[PROFILE]  # 2-5 s an example on the embedded chain
PAYEES = 4  # accounts 1..4 are payees; 0 deploys and is the treasury; 5 pays


@dataclass
class RandomWorld:
    chain: Any
    market: Market
    tokens: tuple[TestUSD, TestUSD]
    snapshot: Any


@pytest.fixture(scope="module")
def random_world():
    chain = connect("embedded")
    try:
        admin, payer = chain.accounts[0], chain.accounts[5]
        market = deploy_all(chain, admin).market(chain)
        tokens = (market.token, other_token(chain, admin))
        for token in tokens:
            token.mint(admin, payer.address, 10**15)
        yield RandomWorld(chain, market, tokens, chain.snapshot())
    finally:
        chain.close()


@st.composite
def lineages(draw):
    """Up to 6 assets: payees among 4 accounts, up to 3 parents among earlier assets, a token each, and
    payments (asset index, amount) into their vaults."""
    assets = []
    for index in range(draw(st.integers(2, 6))):
        parents = draw(st.lists(st.integers(0, index - 1), max_size=min(3, index), unique=True)) if index else []
        royalty = [draw(st.integers(1, 3_000)) for _ in parents]
        payees = draw(st.lists(st.integers(1, PAYEES), min_size=1, max_size=3, unique=True))
        left = BPS - sum(royalty)
        cuts = sorted(draw(st.lists(st.integers(1, left - 1), min_size=len(payees) - 1, max_size=len(payees) - 1,
                                    unique=True))) if len(payees) > 1 else []  # fmt: skip
        bps = [b - a for a, b in zip([0, *cuts], [*cuts, left], strict=True)]
        assets.append(
            (draw(st.integers(0, 1)), list(zip(payees, bps, strict=True)), list(zip(parents, royalty, strict=True)))
        )
    payments = draw(st.lists(st.tuples(st.integers(0, len(assets) - 1), st.integers(1, 10**9)), min_size=1, max_size=4))
    order = draw(st.permutations([0, *range(1, PAYEES + 1)]))
    return assets, payments, order


@pytest.mark.backend("embedded")  # a chain of its own: connect("embedded")
@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=lineages())
def test_after_every_payee_withdraws_no_vault_owes_anything_and_every_unit_is_accounted_for(random_world, case):
    world = random_world
    chain, market = world.chain, world.market
    chain.revert(world.snapshot)
    world.snapshot = chain.snapshot()
    accounts, payer = chain.accounts, chain.accounts[5]
    assets, payments, order = case
    ids = []
    for token_index, payees, parents in assets:
        ids.append(market.marketplace.publish(
            accounts[1], kind=AssetKind.DATASET, content_hash=os.urandom(32), uri="", price=1,
            token=world.tokens[token_index].address, payees=[(accounts[p].address, bps) for p, bps in payees],
            parents=[(ids[p], bps) for p, bps in parents],
        ))  # fmt: skip
    paid: dict[str, int] = defaultdict(int)
    for index, amount in payments:
        token = world.tokens[assets[index][0]]
        token.transfer(payer, market.marketplace.vault_of(ids[index]), amount)
        paid[token.address] += amount

    received: dict[str, int] = defaultdict(int)
    for who in order:  # every payee withdraws, the treasury (account 0) too, in a random order
        plan, got = collect(market, accounts[who], caller=accounts[who])
        for token, amount in got.items():
            assert amount == sum(s.total for s in plan.slots if s.token == token), (who, token)
            received[token] += amount
    for asset_id in ids:
        vault = market.vault(asset_id)
        payees = vault.payees()
        for token in world.tokens:
            if vault.total_received(token.address):  # a vault that never received a token owes none of it
                assert all(vault.claimable(token.address, p) == 0 for p in payees), (asset_id, token.address)
    for token in world.tokens:
        dust = sum(token.balance_of(market.marketplace.vault_of(i)) for i in ids)
        assert received[token.address] + dust == paid[token.address]
        assert dust <= len(ids) * (PAYEES + 4)  # floor rounding only: less than a unit per payee per vault


def test_plans_from_vault_reads_made_in_one_batch_equal_plans_that_read_as_they_go(chain, market, alice, bob):
    """``reads=VaultReads(...)`` (the fast engine reads every vault in one batch of calls): the same plans as
    reading one call at a time, and the plan uses those reads (reads saying nothing arrived plan nothing)."""
    token = market.token.address
    data = publish(market, bob, token=token, payees=[(bob, 10_000)])
    model = publish(market, alice, token=token, payees=[(alice, 7_000)], parents=[(data, 3_000)],
                    kind=AssetKind.MODEL)  # fmt: skip
    market.token.transfer(alice, market.marketplace.vault_of(model), 1_234_567)
    lineage = Lineage.of_market(market)
    nodes = [lineage.node(a) for a in (data, model)]
    vault = {n.vault: chain.contract("RevenueVault", n.vault) for n in nodes}
    block = chain.block_number()
    reads = VaultReads(
        block,
        {(n.vault, n.token): chain.call(vault[n.vault].functions.totalReceived(n.token)) for n in nodes},
        {(n.vault, n.token, p): chain.call(vault[n.vault].functions.released(n.token, p)) for n in nodes
         for p, _ in n.payees},
    )  # fmt: skip
    assert plan_release(chain, lineage, model, reads=reads) == plan_release(chain, lineage, model)
    for account in (alice, bob):
        assert plan_withdrawal(chain, lineage, account.address, reads=reads) == plan_withdrawal(
            chain, lineage, account.address
        )
    assert plan_withdrawal(chain, lineage, bob.address, reads=reads).releases  # there is something to move
    nothing = VaultReads(block, dict.fromkeys(reads.received, 0), reads.released)
    assert plan_withdrawal(chain, lineage, bob.address, reads=nothing).releases == ()
    assert plan_release(chain, lineage, model, reads=VaultReads(block)) == plan_release(chain, lineage, model)
