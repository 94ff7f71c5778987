"""Producers collect what models earned for them (issue 13 §1), the way a provider meets it: the CLI as
a subprocess against `agentmarket node` and `agentmarket serve`, both real processes.

A provider owns dataset 1 and model 2 (`--parent 1:2000`); buyers pay model 2 by license and by
channel. `earnings` shows the dataset's royalty waiting in the model's vault, `withdraw` gets all of it
and the wallet's balance on chain grows by exactly the figures shown; `release 2` by a third party
pushes the next royalty up (anyone may); a payee without ETH gets one line and loses nothing.
"""

from __future__ import annotations

import json
import time

import pytest

from marketplace.chain import rpc_chain
from marketplace.chain.deployment import load_deployment
from marketplace.chain.lineage import Lineage, plan_withdrawal
from marketplace.chain.units import BPS, TOTAL_SHARES, format_units
from tests.helpers.cli import assert_one_line_error
from tests.helpers.stack import cli, node_and_server, ok

pytestmark = pytest.mark.backend("anvil")

NET = BPS - 100  # bps left once the 1% protocol fee is off the top


def due(received: int, bps: int) -> int:
    """What a vault owes a payee of ``bps`` (of the providers' 100%) out of ``received``."""
    return received * bps * NET // TOTAL_SHARES


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A node and a server whose settler claims channel calls every second; stopped at the end."""
    home = tmp_path_factory.mktemp("lineage")
    with node_and_server(home, "--model", "2=builtins:len", settle_interval="1") as running:
        yield running.home, running.env, running.manifest


def new_wallet(stack, name: str, tusd: str | None) -> str:
    address = ok(cli(stack, "wallet", "new", wallet=name)).split("address ")[1].strip()
    if tusd is not None:
        ok(cli(stack, "faucet", "--amount", tusd, wallet=name))
    return address


def test_a_provider_collects_every_royalty_its_model_earned_for_its_dataset(stack):
    home, env, manifest = stack
    chain = rpc_chain(env["AGENTMARKET_RPC"])
    market = load_deployment(manifest, chain).market(chain)
    provider = new_wallet(stack, "provider.json", "10")
    new_wallet(stack, "buyer.json", "10")
    partner = new_wallet(stack, "partner.json", None)  # `wallet new` only: no ETH for gas

    data, weights, notes = home / "iris.csv", home / "counter.bin", home / "notes.txt"
    data.write_text("sepal,label\n5.1,0\n" * 100)
    weights.write_bytes(b"a model that counts its inputs")
    notes.write_text("shared notes")
    assert "published asset 1" in ok(
        cli(stack, "asset", "publish", str(data), "--price", "2.5", wallet="provider.json")
    )
    assert "published asset 2" in ok(cli(stack, "asset", "publish", str(weights), "--price", "0.01", "--kind", "1",
                                         "--parent", "1:2000", wallet="provider.json"))  # fmt: skip
    payees = ["--payee", f"{provider}:5000", "--payee", f"{partner}:5000"]
    assert "published asset 3" in ok(cli(stack, "asset", "publish", str(notes), "--price", "0.2", *payees,
                                         wallet="provider.json"))  # fmt: skip

    # Buyers pay: a license of the dataset, a license of the model, two model calls over a channel.
    for asset_id in ("1", "2", "3"):
        ok(cli(stack, "buy", asset_id, wallet="buyer.json"))
    ok(cli(stack, "channel", "open", "2", "--deposit", "1", wallet="buyer.json"))
    for _ in range(2):
        ok(cli(stack, "invoke", "2", "--channel", "1", "--input", "[1, 2, 3]", wallet="buyer.json"))
    deadline = time.monotonic() + 30
    while market.channels.payment(1)[2] < 20_000:  # the server's settler claims the answered calls
        assert time.monotonic() < deadline, "the settler did not claim the channel's calls"
        time.sleep(0.2)
    paid_model = 10_000 + 20_000
    royalty = due(paid_model, 2_000)

    shown = json.loads(ok(cli(stack, "earnings", "--json", wallet="provider.json")))
    by_asset = {v["asset_id"]: v for v in shown["vaults"]}
    assert (by_asset[1]["claimable"], by_asset[1]["waiting"]) == (
        str(due(2_500_000, 10_000)),
        str(due(royalty, 10_000)),
    )
    assert (by_asset[2]["claimable"], by_asset[2]["waiting"]) == (str(due(paid_model, 8_000)), "0")
    assert (by_asset[3]["claimable"], by_asset[3]["waiting"]) == (str(due(200_000, 5_000)), "0")
    expected = due(2_500_000, 10_000) + due(royalty, 10_000) + due(paid_model, 8_000) + due(200_000, 5_000)
    assert int(shown["total_claimable"]) + int(shown["total_waiting"]) == expected
    assert shown["pending_releases"] == 4 and shown["lineage_complete"]
    # The server (lineage from its read model) and the chain alone (the SDK's view) agree to the unit.
    plan = plan_withdrawal(chain, Lineage.of_market(market), provider)
    assert [(s.asset_id, str(s.claimable), str(s.waiting)) for s in plan.slots] == [
        (v["asset_id"], v["claimable"], v["waiting"]) for v in shown["vaults"]
    ]  # fmt: skip
    table = ok(cli(stack, "earnings", wallet="provider.json"))
    assert "waiting up the lineage" in table and "in 4 transaction(s)" in table

    before = market.token.balance_of(provider)
    out = ok(cli(stack, "withdraw", wallet="provider.json"))
    assert market.token.balance_of(provider) - before == expected
    assert (
        f"withdrew {format_units(expected)} tUSD from 3 vault(s) in 4 transaction(s) (1 release(s) up the lineage"
        in out
    )
    after = json.loads(ok(cli(stack, "earnings", "--json", wallet="provider.json")))
    assert (after["total_claimable"], after["total_waiting"], after["pending_releases"]) == ("0", "0", 0)

    # More calls are paid; a third party pushes the model's royalties up; the dataset's share is then
    # claimable in the dataset's own vault.
    ok(cli(stack, "invoke", "2", "--input", "[1, 2]", wallet="buyer.json"))  # paid per call over x402
    pushed = ok(cli(stack, "release", "2", wallet="buyer.json"))  # a third party: it owns no asset
    second = due(10_000, 2_000)
    assert f"asset 2's vault -> asset 1's vault: {format_units(second)} tUSD" in pushed
    assert "in 1 transaction(s)" in pushed
    reader = json.loads(ok(cli(stack, "earnings", provider, "--json", wallet="buyer.json")))
    dataset = next(v for v in reader["vaults"] if v["asset_id"] == 1)
    assert (dataset["claimable"], dataset["waiting"]) == (str(due(second, 10_000)), "0")
    before = market.token.balance_of(provider)
    ok(cli(stack, "withdraw", "--json", wallet="provider.json"))
    assert market.token.balance_of(provider) - before == due(second, 10_000) + due(10_000, 8_000)
    assert_one_line_error(cli(stack, "release", "9", wallet="buyer.json"), "asset 9 does not exist")

    # A payee with no ETH: one line saying what to do; nothing is lost; after the faucet it collects.
    failed = cli(stack, "withdraw", wallet="partner.json")
    assert_one_line_error(failed, "0 release(s) sent", f"{partner} has no ETH to pay gas", "agentmarket faucet",
                          "run `agentmarket withdraw` again")  # fmt: skip
    ok(cli(stack, "faucet", "--amount", "0", wallet="partner.json"))
    report = json.loads(ok(cli(stack, "withdraw", "--json", wallet="partner.json")))
    assert [(r["asset_id"], r["payee"], r["amount"]) for r in report["releases"]] == [
        (3, partner, str(due(200_000, 5_000)))
    ]  # fmt: skip
    assert market.token.balance_of(partner) == due(200_000, 5_000) and report["gas_used"] > 0
