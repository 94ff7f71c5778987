"""The marketplace CLI as a provider and a buyer use it, against `agentmarket node` + `agentmarket serve`."""

from __future__ import annotations

import json
import os

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client

from tests.helpers.cli import AGENTMARKET, assert_one_line_error, run_cli
from tests.helpers.stack import TWO_MODELS, cli, node_and_server, ok

pytestmark = pytest.mark.backend("anvil")


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """A node and a server, both real processes on 127.0.0.1, stopped at the end."""
    with node_and_server(tmp_path_factory.mktemp("stack"), *TWO_MODELS) as running:
        yield running.home, running.env


def test_provider_and_buyer_round_trip(stack):
    home, _env = stack
    for name in ("provider.json", "buyer.json"):
        assert "address 0x" in ok(cli(stack, "wallet", "new", wallet=name))
        ok(cli(stack, "faucet", "--amount", "50", wallet=name))
    shown = json.loads(ok(cli(stack, "wallet", "show", "--json", wallet="buyer.json")))
    assert shown["tusd"] == "50000000" and int(shown["eth_wei"]) >= 10**18

    data = home / "iris.csv"
    data.write_text("sepal,label\n5.1,0\n" * 1000)
    out = ok(cli(stack, "asset", "publish", str(data), "--price", "2.5", wallet="provider.json"))
    assert "published asset 1" in out
    listing = json.loads(ok(cli(stack, "asset", "ls", "--json", wallet="buyer.json")))
    assert [(a["asset_id"], a["price"], a["uri"]) for a in listing["items"]] == [(1, "2500000", "iris.csv")]

    ok(cli(stack, "agent", "register", "--endpoint", "http://127.0.0.1:1", wallet="buyer.json"))
    denied = cli(stack, "download", "1", "--out", str(home / "x.csv"), wallet="buyer.json")
    assert_one_line_error(denied, "license")
    ok(cli(stack, "buy", "1", wallet="buyer.json"))
    ok(cli(stack, "download", "1", "--out", str(home / "bought.csv"), wallet="buyer.json"))
    assert (home / "bought.csv").read_bytes() == data.read_bytes()

    weights = home / "counter.bin"
    weights.write_bytes(b"a model that counts its inputs")
    out = ok(cli(stack, "asset", "publish", str(weights), "--price", "0.01", "--kind", "1", "--parent", "1:2000",
                 wallet="provider.json"))  # fmt: skip
    assert "published asset 2" in out
    ok(cli(stack, "channel", "open", "2", "--deposit", "1", wallet="buyer.json"))
    for expected in ("10000", "20000"):  # a new CLI process each time: the wallet's voucher book keeps the count
        called = json.loads(
            ok(cli(stack, "invoke", "2", "--channel", "1", "--input", "[1, 2, 3]", wallet="buyer.json"))
        )
        assert (called["output"], called["payment"]["debited"], called["payment"]["maxClaimableAmount"]) == (
            3, expected, expected,
        )  # fmt: skip
    book = json.loads(next((home / "vouchers").glob("0x*.json")).read_text())
    # Counted per chain (chain id and genesis hash) and per channel (id, payer, ..., the block that opened it).
    ((scope, counts),) = book.items()
    ((channel, count),) = counts.items()
    assert scope.startswith("eip155:31337/genesis:0x") and channel.startswith("1/payer:")
    assert count == {"answered": "20000", "signed": "20000"}
    assert_one_line_error(cli(stack, "invoke", "1", "--channel", "1", "--input", "[1]", wallet="buyer.json"),
                          "channel 1 pays for asset 2, not model 1")  # fmt: skip
    assert_one_line_error(cli(stack, "invoke", "2", "--channel", "1", "--input", "{nope", wallet="buyer.json"), "JSON")

    earnings = json.loads(ok(cli(stack, "earnings", "--json", wallet="provider.json")))
    assert earnings["total_claimable"] == str(2_500_000 * 99 // 100)
    assert "withdrew 2.475000 tUSD" in ok(cli(stack, "withdraw", wallet="provider.json"))
    provider = json.loads(ok(cli(stack, "wallet", "show", "--json", wallet="provider.json")))
    assert provider["tusd"] == str(50_000_000 + 2_475_000)

    # Without --channel a call is paid per call with x402: settled into the model's vault before the answer.
    paid = json.loads(ok(cli(stack, "invoke", "2", "--input", "[1, 2]", wallet="buyer.json")))
    assert (paid["output"], paid["payment"]["scheme"], paid["payment"]["amount"]) == (2, "exact", "10000")
    by_address = json.loads(ok(cli(stack, "earnings", provider["address"], "--json", wallet="nobody.json")))
    assert by_address["address"] == provider["address"]
    assert [v["asset_id"] for v in by_address["vaults"] if int(v["claimable"]) > 0] == [2]


def test_cli_mistakes_are_one_line(stack):
    assert_one_line_error(cli(stack, "buy", "1", wallet="nobody.json"), "wallet new")
    ok(cli(stack, "wallet", "new", wallet="w.json"))
    assert_one_line_error(cli(stack, "wallet", "new", wallet="w.json"), "already exists")
    home, env = stack
    wrong = run_cli("buy", "1", cwd=home, env={**env, "AGENTMARKET_WALLET": str(home / "w.json"),
                                                "AGENTMARKET_PASSWORD": "nope"})  # fmt: skip
    assert_one_line_error(wrong, "wrong password")
    assert_one_line_error(cli(stack, "asset", "publish", __file__, "--price", "1", "--payee", "0xabc", wallet="w.json"),
                          "ADDR:BPS")  # fmt: skip
    assert_one_line_error(cli(stack, "buy", "77", wallet="w.json"), "77")
    # A second gateway on the running one's data directory (the default, in the same home) is refused.
    rpc, manifest = env["AGENTMARKET_RPC"], str(home / ".agentmarket" / "deployment.json")
    second = run_cli("serve", "--rpc", rpc, "--manifest", manifest, "--port", "9", cwd=home)
    assert_one_line_error(second, "channels.sqlite3 is in use by process", "--data-dir")
    bad_sync = run_cli("serve", "--rpc", rpc, "--manifest", manifest, "--voucher-sync", "sometimes", cwd=home)
    assert_one_line_error(bad_sync, "--voucher-sync must be one of full, normal")


def test_agent_run_pays_for_calls_within_its_caps(stack):
    """Runs after the round trip (model 2 counts its input at 0.01 tUSD a call); the provider publishes
    model 3, served as a real digits classifier, at 0.005 tUSD: the greedy buyer pays for it."""
    home, _env = stack
    card = home / "digits-knn.json"
    card.write_text('{"model": "k-NN on digits", "input": {"features": [[64 numbers]]}}')
    assert "published asset 3" in ok(cli(stack, "asset", "publish", str(card), "--price", "0.005", "--kind", "1",
                                         wallet="provider.json"))  # fmt: skip
    ok(cli(stack, "wallet", "new", wallet="agent.json"))
    ok(cli(stack, "faucet", "--amount", "5", wallet="agent.json"))
    ledger, trace = home / "agent-ledger.jsonl", home / "agent-trace.jsonl"
    report = json.loads(ok(cli(stack, "agent", "run", "--role", "buyer", "--brain", "greedy", "--budget", "1",
                               "--queries", "3", "--ledger", str(ledger), "--trace", str(trace), "--json",
                               wallet="agent.json")))  # fmt: skip
    assert (report["reason"], report["steps"], report["spent"]) == ("task_complete", 3, 50_000)  # 10 calls' deposit
    assert report["task"]["per_model"] == {"3": {"calls": 3, "correct": report["task"]["correct"]}}
    assert report["task"]["correct"] >= 2  # a real classifier answered, scored against the true labels
    kinds = [json.loads(line)["kind"] for line in ledger.read_text().splitlines()]
    assert kinds == ["channel_deposit", "voucher", "voucher", "voucher"]
    assert [json.loads(line)["event"] for line in trace.read_text().splitlines()] == ["step"] * 3 + ["stop"]
    shown = json.loads(ok(cli(stack, "wallet", "show", "--json", wallet="agent.json")))
    assert shown["tusd"] == str(5_000_000 - 50_000)

    assert_one_line_error(cli(stack, "agent", "run", "--role", "buyer", "--brain", "llm", wallet="agent.json"),
                          "--llm-url")  # fmt: skip
    assert_one_line_error(cli(stack, "agent", "run", "--role", "buyer", "--brain", "greedy", "--budget", "lots",
                              wallet="agent.json"), "--budget")  # fmt: skip


def test_mcp_command_serves_the_tools_with_the_caps(stack):
    home, env = stack
    ok(cli(stack, "wallet", "new", wallet="mcp.json"))
    ok(cli(stack, "faucet", "--amount", "5", wallet="mcp.json"))
    parameters = StdioServerParameters(
        command=AGENTMARKET[0], args=[*AGENTMARKET[1:], "mcp", "--budget", "1", "--ledger", str(home / "mcp.jsonl")],
        cwd=home, env={**os.environ, **env, "AGENTMARKET_WALLET": str(home / "mcp.json")},
    )  # fmt: skip

    async def session_calls() -> tuple[list[str], object, object]:
        with (home / "mcp-stderr.log").open("w") as errlog:
            async with stdio_client(parameters, errlog=errlog) as streams, ClientSession(*streams) as session:
                await session.initialize()
                names = [tool.name for tool in (await session.list_tools()).tools]
                balance = await session.call_tool("check_balance", {})
                over = await session.call_tool("buy_license", {"asset_id": 1})  # 2.5 tUSD > the 1 tUSD cap
                return names, balance, over

    names, balance, over = anyio.run(session_calls)
    assert "buy_license" in names and "invoke_model" in names
    assert not balance.is_error and balance.structured_content["balance"] == 5_000_000
    assert over.is_error and "OverBudget" in over.content[0].text
    assert not (home / "mcp.jsonl").exists()  # nothing was signed
