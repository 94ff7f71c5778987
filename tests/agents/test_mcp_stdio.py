"""`agentmarket mcp` as an MCP client meets it: the real SDK stdio client (``mcp.client.stdio``,
``ClientSession``) launches a real ``agentmarket mcp`` process, which pays on a live ``agentmarket node``
(anvil) through a live ``agentmarket serve``.

Every tool is listed with an output schema and called once; every result validates against its schema; a
refusal (over budget, a rating without a payment) is a tool error with no structured content and nothing
signed; an unknown tool is a JSON-RPC protocol error (-32602); and ``agentmarket mcp`` never reads a password
from stdin, which carries the protocol.
"""

from __future__ import annotations

import json
import os
import subprocess
from hashlib import sha256
from pathlib import Path

import anyio
import jsonschema
import mcp_types as types
import pytest
from eth_account import Account
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError

from agents.tools import TOOLS
from marketplace.chain import rpc_chain
from marketplace.chain.records import AssetKind
from marketplace.chain.units import to_units
from marketplace.client import MarketplaceClient
from marketplace.wallet_file import encryption_keypair
from tests.helpers.cli import AGENTMARKET, assert_one_line_error
from tests.helpers.stack import TWO_MODELS, node_and_server

pytestmark = pytest.mark.backend("anvil")

CHEAP = "city,population\n" + "Lyon,522000\n" * 50


def refusal(result: types.CallToolResult) -> str:
    """A tool error: one text block, and no structured content on the wire (not even null)."""
    assert result.is_error
    assert "structured_content" not in result.model_fields_set
    [content] = result.content
    assert isinstance(content, types.TextContent)
    return content.text


def conforming(name: str, result: types.CallToolResult) -> dict:
    """A tool result whose structured content validates against the tool's output schema (the SDK client
    checks it too, and raises if it does not) and equals its text block."""
    assert not result.is_error, result.content
    jsonschema.validate(result.structured_content, TOOLS[name].output_schema())
    assert json.loads(result.content[0].text) == result.structured_content
    return result.structured_content


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """One node and server for this module, both real processes on 127.0.0.1."""
    with node_and_server(tmp_path_factory.mktemp("stack"), *TWO_MODELS) as running:
        yield running.home, running.env


@pytest.fixture(scope="module")
def market_with_assets(stack):
    """A provider lists dataset 1 (2.5 tUSD), model 2 (0.01 tUSD a call, served as ``len``) and dataset 3
    (0.2 tUSD); the MCP agent's account holds 5 tUSD and is a registered agent (sealed downloads need its
    X25519 key). Set up in process, through the server: the CLI's own paths are tested elsewhere."""
    home, env = stack
    chain = rpc_chain(env["AGENTMARKET_RPC"])
    admin, provider, agent = chain.accounts[0], Account.create(), Account.create()
    for account in (provider, agent):
        chain.send_eth(admin, account.address, 10**18)
    seller = MarketplaceClient.connect(env["AGENTMARKET_SERVER"], provider, chain)
    seller.market.token.mint(admin, agent.address, to_units(5))
    for content, price, kind in ((b"x,label\n1,0\n" * 100, "2.5", AssetKind.DATASET),
                                 (b"a model that counts its inputs", "0.01", AssetKind.MODEL),
                                 (CHEAP.encode(), "0.2", AssetKind.DATASET)):  # fmt: skip
        seller.publish(content, price=to_units(price), kind=kind)
    public_key = bytes(encryption_keypair(agent).public_key)
    seller.market.agents.register(agent, "", {"encryptionKey": public_key})
    return home, {**env, "AGENTMARKET_AGENT_KEY": agent.key.hex()}


def test_every_tool_over_stdio_with_the_real_sdk_client(market_with_assets):
    home, env = market_with_assets
    ledger, downloads = home / "mcp-ledger.jsonl", home / "mcp-downloads"
    parameters = StdioServerParameters(
        command=AGENTMARKET[0],
        args=[*AGENTMARKET[1:], "mcp", "--budget", "1", "--ledger", str(ledger), "--download-dir", str(downloads)],
        cwd=home, env={**os.environ, **env},
    )  # fmt: skip
    results: dict[str, types.CallToolResult] = {}
    listed: list[types.Tool] = []

    async def session_calls() -> MCPError:
        with (home / "mcp-stderr.log").open("w") as errlog:
            async with stdio_client(parameters, errlog=errlog) as streams, ClientSession(*streams) as session:
                await session.initialize()
                listed.extend((await session.list_tools()).tools)
                calls = [
                    ("before", "check_balance", None),
                    ("search", "search_assets", {"kind": "dataset"}),
                    ("model", "get_asset", {"asset_id": 2}),
                    ("over", "buy_license", {"asset_id": 1}),  # 2.5 tUSD > the 1 tUSD cap
                    ("bought", "buy_license", {"asset_id": 3}),
                    ("download", "download", {"asset_id": 3}),
                    ("channel", "open_channel", {"asset_id": 2, "deposit": 50_000}),
                    ("invoked", "invoke_model", {"model_id": 2, "input": [1, 2, 3]}),
                    ("unpaid_rating", "rate_asset", {"asset_id": 1, "value": 90}),  # never paid for asset 1
                    ("published", "publish_asset", {"content": "a,b\n1,2\n", "price": 1_000}),
                    ("after", "check_balance", {}),
                ]
                for key, name, arguments in calls:
                    results[key] = await session.call_tool(name, arguments)
                with pytest.raises(MCPError) as unknown:
                    await session.call_tool("drain_wallet", {"to": "0x0"})
                return unknown.value

    unknown = anyio.run(session_calls)

    assert [tool.name for tool in listed] == list(TOOLS)
    for tool in listed:  # every tool declares the schema of its result
        assert tool.output_schema == TOOLS[tool.name].output_schema() and tool.output_schema["type"] == "object"
    assert unknown.code == types.INVALID_PARAMS == -32602
    assert "drain_wallet" in unknown.message and "buy_license" in unknown.message

    before = conforming("check_balance", results["before"])
    assert (before["balance"], before["spent_this_run"], before["run_cap"]) == (5_000_000, 0, 1_000_000)
    assert [a["asset_id"] for a in conforming("search_assets", results["search"])["items"]] == [1, 3]
    assert conforming("get_asset", results["model"])["price"] == "10000"

    assert refusal(results["over"]).startswith("OverBudget: over the per_call budget for asset 1")
    bought = conforming("buy_license", results["bought"])
    assert (bought["kind"], bought["amount"], bought["remaining_budget"]) == ("license", 200_000, 800_000)
    got = conforming("download", results["download"])
    assert Path(got["path"]).read_text() == CHEAP and got["sha256"] == sha256(CHEAP.encode()).hexdigest()
    channel = conforming("open_channel", results["channel"])
    invoked = conforming("invoke_model", results["invoked"])
    assert (invoked["output"], invoked["paid"], invoked["channel_id"]) == (3, 10_000, channel["channel_id"])
    assert refusal(results["unpaid_rating"]).startswith("ActionRefused: ")
    published = conforming("publish_asset", results["published"])
    assert published["asset_id"] == 4 and published["sha256"] == sha256(b"a,b\n1,2\n").hexdigest()

    after = conforming("check_balance", results["after"])
    assert after["spent_this_run"] == 200_000 + 50_000 and after["locked_in_channels"] == 40_000
    assert after["balance"] == 5_000_000 - 250_000
    # Only what the guard allowed was signed: the refused purchase and rating left no trace.
    kinds = [json.loads(line)["kind"] for line in ledger.read_text().splitlines()]
    assert kinds == ["license", "channel_deposit", "voucher"]
    chain = rpc_chain(env["AGENTMARKET_RPC"])
    assert (
        MarketplaceClient.connect(env["AGENTMARKET_SERVER"], chain.accounts[0], chain).market.token.balance_of(
            after["address"]
        )
        == 5_000_000 - 250_000
    )


def test_mcp_never_reads_a_password_from_stdin(tmp_path):
    """stdin carries the MCP protocol: with neither AGENTMARKET_PASSWORD nor AGENTMARKET_AGENT_KEY set,
    `agentmarket mcp` says so in one line and exits 1, without prompting or answering the handshake."""
    handshake = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {}}) + "\n"
    environ = {**os.environ, "AGENTMARKET_WALLET": str(tmp_path / "agent.json")}
    for secret in ("AGENTMARKET_PASSWORD", "AGENTMARKET_AGENT_KEY"):
        environ.pop(secret, None)
    result = subprocess.run([*AGENTMARKET, "mcp"], input=handshake, capture_output=True, text=True, cwd=tmp_path,
                            env=environ, timeout=60, check=False)  # fmt: skip
    assert_one_line_error(result, "AGENTMARKET_PASSWORD", "AGENTMARKET_AGENT_KEY", "stdin")
    assert result.stdout == ""  # no prompt and no protocol message on the protocol's channel
