"""The MCP server: a real MCP client session lists the agent tools (each with an output schema) and calls them
on an in-process marketplace with a real chain; every result validates against its tool's output schema;
refusals (over budget, bad arguments) come back as tool errors with no structured content and nothing signed;
an unknown tool is a protocol error (-32602); concurrent purchases cannot overspend, unexpected failures never
carry the key, and stdio works."""

from __future__ import annotations

import contextlib
import json
import sys
import textwrap
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import anyio
import jsonschema
import mcp_types as types
import pytest
from eth_account import Account
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError
from mcp.shared.memory import create_client_server_memory_streams

from agents import Budget
from agents.mcp_server import build_mcp_server
from agents.tools import TOOLS, ToolContext
from agents.wallet import AgentWallet, AuditLedger
from marketplace.chain.units import to_units
from marketplace.wallet_file import encryption_keypair
from tests.helpers.agents import DATA_PRICE, GENEROUS, MODEL_PRICE, context_for

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@contextlib.asynccontextmanager
async def connected(context: ToolContext) -> AsyncIterator[ClientSession]:
    """A client session with an MCP server for ``context``, over in-memory streams."""
    mcp_server = build_mcp_server(context)
    async with (
        create_client_server_memory_streams() as (client_streams, server_streams),
        anyio.create_task_group() as tasks,
    ):
        tasks.start_soon(mcp_server.run, *server_streams, mcp_server.create_initialization_options())
        async with ClientSession(*client_streams) as session:
            await session.initialize()
            yield session
        tasks.cancel_scope.cancel()


def offline_client(market: object = None) -> SimpleNamespace:
    """A stand-in for a MarketplaceClient of a new account with no marketplace behind it (``market``): what an
    AgentWallet binds to (its signer and X25519 key), for calls that never reach a marketplace."""
    account = Account.create()
    return SimpleNamespace(account=account, address=account.address, market=market,
                           encryption_key=bytes(encryption_keypair(account)))  # fmt: skip


def offline_context(tmp_path: Path, market: object = None) -> ToolContext:
    """A context with a real wallet and no marketplace behind it (for calls that never reach one)."""
    wallet = AgentWallet(offline_client(market), GENEROUS, AuditLedger(tmp_path / "ledger.jsonl"))  # type: ignore[arg-type]
    return ToolContext(wallet, tmp_path / "downloads")


def refusal(result: types.CallToolResult) -> str:
    """The text of a tool error, which carries no structured content (it could not match the output schema)."""
    assert result.is_error
    assert "structured_content" not in result.model_fields_set  # not sent at all (not even as null)
    [content] = result.content
    assert isinstance(content, types.TextContent)
    kind, _, detail = content.text.partition(": ")
    assert kind.isidentifier() and detail
    return content.text


def conforming(name: str, result: types.CallToolResult) -> dict:
    """The structured content of a successful call, checked against the tool's output schema and its text."""
    assert not result.is_error, result.content
    jsonschema.validate(result.structured_content, TOOLS[name].output_schema())
    assert json.loads(result.content[0].text) == result.structured_content
    return result.structured_content


async def test_lists_exactly_the_tools_with_their_pydantic_schemas(tmp_path):
    async with connected(offline_context(tmp_path)) as session:
        assert session.server_info and session.server_info.name == "agentmarket"
        listed = (await session.list_tools()).tools
    assert [tool.name for tool in listed] == list(TOOLS)
    for tool in listed:
        assert tool.input_schema == TOOLS[tool.name].args.model_json_schema()
        assert tool.description == TOOLS[tool.name].description
        assert tool.output_schema == TOOLS[tool.name].output_schema() and tool.output_schema["type"] == "object"
        jsonschema.Draft202012Validator.check_schema(tool.output_schema)
    schemas = {tool.name: tool.output_schema for tool in listed}
    assert schemas["buy_license"]["required"] == ["asset_id", "amount", "kind", "ref", "remaining_budget"]
    assert schemas["search_assets"]["required"] == ["items"]  # the API's page: more fields may pass through
    assert schemas["get_asset"]["additionalProperties"] is True


@pytest.mark.backend("embedded")
async def test_search_get_and_buy_through_mcp(server, chain, market, alice, assets, tmp_path):
    agent = context_for(alice, server, chain, tmp_path)
    before = market.token.balance_of(alice.address)
    async with connected(agent) as session:
        found = conforming("search_assets", await session.call_tool("search_assets", {"kind": "dataset"}))
        assert [item["asset_id"] for item in found["items"]] == [assets["data"]]
        assert found["total"] == 1  # the API's paging fields pass through

        asset = conforming("get_asset", await session.call_tool("get_asset", {"asset_id": assets["data"]}))
        assert asset["price"] == str(DATA_PRICE) and asset["licenses_sold"] == 0

        bought = await session.call_tool("buy_license", {"asset_id": assets["data"], "max_price": DATA_PRICE})
        conforming("buy_license", bought)

    receipt = bought.structured_content
    assert (receipt["kind"], receipt["amount"], receipt["asset_id"]) == ("license", DATA_PRICE, assets["data"])
    assert chain.w3.eth.get_transaction_receipt(receipt["ref"])["status"] == 1
    assert market.marketplace.has_access(assets["data"], alice.address)
    [entry] = agent.ledger.entries()
    assert (entry.kind, entry.amount, entry.ref) == ("license", DATA_PRICE, receipt["ref"])
    assert agent.ledger.total() == before - market.token.balance_of(alice.address) == DATA_PRICE


@pytest.mark.backend("embedded")
async def test_refusals_are_tool_errors_and_nothing_is_signed(server, chain, market, alice, assets, tmp_path):
    budget = Budget(run_cap=to_units(1), asset_cap=to_units(1), call_ceiling=to_units(1))
    agent = context_for(alice, server, chain, tmp_path, budget)
    nonce, balance = chain.w3.eth.get_transaction_count(alice.address), market.token.balance_of(alice.address)
    async with connected(agent) as session:
        over = refusal(await session.call_tool("buy_license", {"asset_id": assets["data"]}))
        assert over.startswith("OverBudget: over the per_call budget")
        assert refusal(await session.call_tool("get_asset", {"asset_id": -1})).startswith("BadArguments: ")
        extra = refusal(await session.call_tool("buy_license", {"asset_id": assets["data"], "surprise": 1}))
        assert "surprise" in extra and extra.startswith("BadArguments: ")
        assert refusal(await session.call_tool("get_asset")).startswith("BadArguments: ")  # no arguments at all
        with pytest.raises(MCPError) as unknown:  # a protocol error, not a tool result
            await session.call_tool("drain_wallet", {"to": "0x0"})
        assert unknown.value.code == types.INVALID_PARAMS == -32602
        assert (
            unknown.value.message.startswith("Unknown tool: 'drain_wallet'") and "buy_license" in unknown.value.message
        )
        assert refusal(await session.call_tool("get_asset", {"asset_id": 999})).startswith("NotFound: ")

        still_serving = await session.call_tool("check_balance", {})  # the server is still up after refusals
    assert not still_serving.is_error
    assert still_serving.structured_content["spent_this_run"] == 0
    assert still_serving.structured_content["balance"] == balance
    assert chain.w3.eth.get_transaction_count(alice.address) == nonce
    assert market.token.balance_of(alice.address) == balance
    assert agent.ledger.entries() == [] and not market.marketplace.has_access(assets["data"], alice.address)


@pytest.mark.backend("embedded")
async def test_concurrent_purchases_cannot_overspend(server, chain, market, alice, assets, tmp_path):
    """Two purchases sent at once, only one of which fits the run cap: exactly one is paid."""
    budget = Budget(run_cap=DATA_PRICE + MODEL_PRICE - 1, asset_cap=to_units(10), call_ceiling=to_units(10))
    agent = context_for(alice, server, chain, tmp_path, budget)
    before = market.token.balance_of(alice.address)
    results: dict[str, types.CallToolResult] = {}
    async with connected(agent) as session:

        async def buy(asset: str) -> None:
            results[asset] = await session.call_tool("buy_license", {"asset_id": assets[asset]})

        async with anyio.create_task_group() as tasks:
            tasks.start_soon(buy, "data")
            tasks.start_soon(buy, "model")
    assert sorted(result.is_error for result in results.values()) == [False, True]
    assert any(refusal(r).startswith("OverBudget: over the run budget") for r in results.values() if r.is_error)
    assert agent.ledger.total() == before - market.token.balance_of(alice.address) <= budget.run_cap
    assert len(agent.ledger.entries()) == 1


async def test_unexpected_failures_are_mcp_errors_without_the_key(tmp_path):
    class Broken:
        def balance_of(self, address: str) -> int:
            raise RuntimeError(f"node said no to {address} signing with 0x{key.upper()} and {x25519}")

    context = offline_context(tmp_path, SimpleNamespace(token=Broken()))
    key, x25519 = bytes(context.wallet.account.key).hex(), bytes(context.wallet.encryption_key).hex()
    async with connected(context) as session:
        with pytest.raises(MCPError) as failed:
            await session.call_tool("check_balance", {})
        assert (await session.call_tool("search_assets", {"limit": 0})).is_error  # still serving
    message = failed.value.message
    assert message.startswith("check_balance failed unexpectedly: RuntimeError: node said no to 0x")
    assert key not in message.lower() and x25519 not in message.lower() and message.count("<redacted>") == 2


SERVE = """
    import sys
    from pathlib import Path
    from eth_account import Account
    from agents.mcp_server import run_stdio
    from agents.tools import ToolContext
    from agents.wallet import AgentWallet, AuditLedger, Budget
    from marketplace.wallet_file import encryption_keypair

    class Offline:
        account = Account.create()
        address = account.address
        encryption_key = bytes(encryption_keypair(account))

        @property
        def market(self):
            print("stray output goes to stderr, not onto the wire")
            raise LookupError("no marketplace in this process")

    folder = Path(sys.argv[1])
    wallet = AgentWallet(Offline(), Budget(1, 1, 1), AuditLedger(folder / "ledger.jsonl"))
    run_stdio(ToolContext(wallet, folder))
"""


async def test_run_stdio_serves_the_tools(tmp_path):
    parameters = StdioServerParameters(command=sys.executable, args=["-c", textwrap.dedent(SERVE), str(tmp_path)],
                                       cwd=Path(__file__).parents[2])  # fmt: skip
    with (tmp_path / "stderr.log").open("w") as errlog:
        async with stdio_client(parameters, errlog=errlog) as streams, ClientSession(*streams) as session:
            await session.initialize()
            assert [tool.name for tool in (await session.list_tools()).tools] == list(TOOLS)
            with pytest.raises(MCPError, match="Unknown tool: 'nope'") as unknown:
                await session.call_tool("nope", {})
            assert unknown.value.code == -32602
            with pytest.raises(MCPError, match="check_balance failed unexpectedly: LookupError: no marketplace"):
                await session.call_tool("check_balance", {})
            assert refusal(await session.call_tool("get_asset", {})).startswith("BadArguments: ")  # still serving
    assert "stray output goes to stderr" in (tmp_path / "stderr.log").read_text()
