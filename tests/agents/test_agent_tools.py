"""Agent tools: schemas, the happy path of every tool against an in-process server, typed errors, and a
property that no sequence of tool calls spends past the budget or away from the ledger."""

from __future__ import annotations

import contextlib
import json
import tempfile
from pathlib import Path

import jsonschema_rs
import pytest
from eth_account import Account
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from agents import ActionRefused, AgentError, BadArguments, Budget, NotFound, OverBudget, PaymentRefused, UnknownTool
from agents.tools import TOOLS, mcp_tools, openai_tools, parse_arguments, run_tool
from marketplace.api import Settings, create_app
from marketplace.chain.records import AssetKind, SubjectKind
from marketplace.chain.units import to_units
from tests.helpers.agents import MODEL_PRICE, adder, context_for

NAMES = {"search_assets", "get_asset", "buy_license", "download", "open_channel", "invoke_model", "check_balance",
         "rate_asset", "publish_asset"}  # fmt: skip
TEXT = "city,population\n" + "Lyon,522000\n" * 500


def test_schemas_are_valid_json_schema_for_openai_and_mcp():
    assert set(TOOLS) == NAMES
    for spec in openai_tools():
        assert spec["type"] == "function" and spec["function"]["name"] in NAMES and spec["function"]["description"]
        assert jsonschema_rs.meta.is_valid(spec["function"]["parameters"])
        assert spec["function"]["parameters"]["type"] == "object"
        json.dumps(spec)
    assert [t["name"] for t in mcp_tools()] == list(TOOLS)
    assert mcp_tools()[2]["inputSchema"]["required"] == ["asset_id"]
    for spec in mcp_tools():  # every tool declares its result's schema
        assert jsonschema_rs.meta.is_valid(spec["outputSchema"]) and spec["outputSchema"]["type"] == "object"


def test_a_result_that_does_not_fit_its_schema_never_leaves_the_tool():
    tool = TOOLS["get_asset"]
    assert tool.result({"asset_id": 3, "kind": "model", "price": "7", "rating": {"count": 0}}).price == "7"
    for unfit in ({"asset_id": "three", "kind": "model", "price": "7"}, {"kind": "model"}, [1, 2]):
        with pytest.raises(ValidationError):
            tool.result(unfit)


@pytest.mark.parametrize("nothing", ["null", "", "  ", " null ", b"null", "{}", {}, None])
def test_no_arguments_may_be_null_empty_or_an_empty_object(nothing):
    tool, args = parse_arguments("check_balance", nothing)
    assert tool is TOOLS["check_balance"] and args.model_dump() == {}
    _, defaults = parse_arguments("search_assets", nothing)  # only optional parameters: all defaults
    assert defaults.model_dump() == {"kind": None, "query": None, "min_price": None, "max_price": None, "limit": 10}
    with pytest.raises(BadArguments, match="asset_id"):  # a required parameter is still required
        parse_arguments("get_asset", nothing)


def test_every_tool_on_the_happy_path(server, chain, market, alice, bob, assets, tmp_path):
    provider = context_for(bob, server, chain, tmp_path)
    published = run_tool(provider, "publish_asset", {"content": TEXT, "price": 1_500_000, "uri": "ipfs://cities"})

    agent = context_for(alice, server, chain, tmp_path)
    market.agents.register(alice, "", {"encryptionKey": agent.wallet.public_encryption_key})  # sealed downloads
    before = market.token.balance_of(alice.address)
    found = run_tool(agent, "search_assets", {"kind": "dataset", "query": "cities"})
    assert [a.asset_id for a in found.items] == [published.asset_id]
    assert run_tool(agent, "get_asset", {"asset_id": published.asset_id}).price == "1500000"

    bought = run_tool(agent, "buy_license", json.dumps({"asset_id": published.asset_id, "max_price": 2_000_000}))
    assert (bought.kind, bought.amount) == ("license", 1_500_000)
    got = run_tool(agent, "download", {"asset_id": published.asset_id})
    assert Path(got.path).read_text() == TEXT and got.sha256 == published.sha256 and got.preview.startswith("city")

    channel = run_tool(agent, "open_channel", {"asset_id": assets["model"], "deposit": to_units(1)})
    called = run_tool(agent, "invoke_model", {"model_id": assets["model"], "input": [2, 3]})
    assert (called.output, called.paid, called.channel_id) == ({"sum": 5.0}, MODEL_PRICE, channel.channel_id)
    assert called.channel_remaining == to_units(1) - MODEL_PRICE

    rated = run_tool(agent, "rate_asset", {"asset_id": published.asset_id, "value": 90, "tag": "clean"})
    assert market.reputation.has_rated(SubjectKind.ASSET, rated.asset_id, alice.address)

    balance = run_tool(agent, "check_balance", {})
    assert balance.spent_this_run == 1_500_000 + to_units(1) == before - balance.balance == agent.ledger.total()
    assert balance.locked_in_channels == to_units(1) - MODEL_PRICE


def test_rate_asset_needs_a_payment_that_reached_the_vault(server, chain, market, alice, assets, tmp_path):
    """A model call paid by a voucher the gateway has not claimed yet is no payment on chain: the chain
    refuses the rating (typed). Once the channel's claims reach the price the tool rates through it."""
    agent = context_for(alice, server, chain, tmp_path)
    model = assets["model"]
    channel = run_tool(agent, "open_channel", {"asset_id": model, "deposit": to_units(1)}).channel_id
    run_tool(agent, "invoke_model", {"model_id": model, "input": [1, 2]})
    with pytest.raises(ActionRefused, match=f"InsufficientPayment.*paid=0, required={MODEL_PRICE}"):
        run_tool(agent, "rate_asset", {"asset_id": model, "value": 70})
    voucher = market.channels.sign_voucher(alice, channel, MODEL_PRICE)
    gateway_key = server.app.state.services.relayer  # the server's own settlement key
    market.channels.claim(gateway_key, channel, MODEL_PRICE, MODEL_PRICE, voucher)
    run_tool(agent, "rate_asset", {"asset_id": model, "value": 70, "tag": "fast"})
    feedback = market.reputation.feedback(SubjectKind.ASSET, model, alice.address)
    assert (feedback.value, feedback.tag1) == (70, "fast")


def test_bad_arguments_unknown_tools_refusals_are_typed(server, chain, market, alice, assets, tmp_path):
    budget = Budget(run_cap=to_units(1), asset_cap=to_units(1), call_ceiling=to_units(1))
    agent = context_for(alice, server, chain, tmp_path, budget)
    for name, raw in [("get_asset", {"asset_id": -1}), ("get_asset", "{not json"), ("get_asset", {}),
                      ("buy_license", {"asset_id": 1, "surprise": True}), ("rate_asset", {"asset_id": 1, "value": 101}),
                      ("open_channel", [1, 2])]:  # fmt: skip
        with pytest.raises(BadArguments) as bad:
            run_tool(agent, name, raw)
        assert bad.value.tool == name and bad.value.errors
    with pytest.raises(UnknownTool) as unknown:
        run_tool(agent, "drain_wallet", {})
    assert "buy_license" in unknown.value.known
    with pytest.raises(NotFound):
        run_tool(agent, "get_asset", {"asset_id": 999})
    with pytest.raises(NotFound):
        run_tool(agent, "buy_license", {"asset_id": 999})
    nonce = chain.w3.eth.get_transaction_count(alice.address)
    with pytest.raises(OverBudget) as over:
        run_tool(agent, "buy_license", {"asset_id": assets["data"]})
    assert over.value.kind == "per_call" and chain.w3.eth.get_transaction_count(alice.address) == nonce
    with pytest.raises(PaymentRefused) as unpaid:
        run_tool(agent, "download", {"asset_id": assets["data"]})
    assert "license_required" in str(unpaid.value)
    with pytest.raises(PaymentRefused, match="open_channel first"):
        run_tool(agent, "invoke_model", {"model_id": assets["model"], "input": [1]})
    assert agent.ledger.entries() == []


# ---------------------------------------------------------------------- property: the budget always holds

CAPS = Budget(run_cap=to_units(3), asset_cap=to_units(2), call_ceiling=to_units("1.5"))
ids = st.one_of(st.integers(1, 3), st.integers(1, 3), st.integers(-1, 5))  # mostly real assets (1, 2, 3)
deposits = st.one_of(st.integers(1, 2_500_000), st.integers(-1, 0))
calls = st.one_of(
    st.tuples(st.just("buy_license"), st.fixed_dictionaries({"asset_id": ids},
              optional={"max_price": st.integers(0, 3_000_000)})),
    st.tuples(st.just("open_channel"), st.fixed_dictionaries({"asset_id": ids, "deposit": deposits})),
    st.tuples(st.just("invoke_model"), st.fixed_dictionaries({"model_id": ids, "input": st.lists(st.integers(0, 9))},
              optional={"channel_id": ids})),
    st.tuples(st.sampled_from(["check_balance", "download", "rate_asset", "nonsense"]),
              st.dictionaries(st.sampled_from(["asset_id", "value"]), st.integers(-1, 120))),
)  # fmt: skip


@pytest.fixture
def shared_server(chain, deployment, market, bob, tmp_path, assets):
    """One server for every example (fresh agent accounts keep the examples apart), with a third asset:
    a 1 tUSD dataset, under the per-call ceiling unlike the 2 tUSD one."""
    market.marketplace.publish(
        bob, kind=AssetKind.DATASET, content_hash=b"\x03" * 32, uri="ipfs://cheap", price=to_units(1),
        token=market.token.address, payees=[(bob.address, 10_000)],
    )  # fmt: skip
    settings_ = Settings(manifest=deployment.save(tmp_path / "d.json"), data_dir=tmp_path / "server",
                         siwe_domain="testserver", settle_interval=3600)  # fmt: skip
    with TestClient(create_app(settings_, chain=chain, model_handlers={assets["model"]: adder})) as test_client:
        yield test_client


@pytest.mark.backend("embedded")
@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(sequence=st.lists(calls, min_size=1, max_size=12))
@example(sequence=[("buy_license", {"asset_id": 3}), ("open_channel", {"asset_id": 2, "deposit": 1_000_000}),
                   ("invoke_model", {"model_id": 2, "input": [1]}), ("buy_license", {"asset_id": 3}),
                   ("open_channel", {"asset_id": 2, "deposit": 900_000}),
                   ("buy_license", {"asset_id": 2})])  # fmt: skip
def test_no_sequence_of_tool_calls_breaks_the_budget(chain, market, admin, bob, assets, shared_server, sequence):
    account = Account.create()  # a fresh agent per example: 100 tUSD and gas money
    market.token.mint(admin, account.address, to_units(100))
    chain.send_eth(admin, account.address, 10**18)
    with tempfile.TemporaryDirectory() as tmp:
        agent = context_for(account, shared_server, chain, Path(tmp), CAPS)
        before = market.token.balance_of(account.address)
        for name, arguments in sequence:
            with contextlib.suppress(AgentError):  # typed refusals are fine; anything else fails the test
                run_tool(agent, name, arguments)
        ledger = agent.ledger
        event(f"ledger kinds: {sorted({e.kind for e in ledger.entries()})}")
        assert ledger.total() <= CAPS.run_cap
        for asset_id in range(1, 6):
            assert ledger.total(asset_id) <= CAPS.asset_cap
        assert ledger.total() == before - market.token.balance_of(account.address) == agent.wallet.guard.spent
        for channel_id, state in agent.wallet.channels.items():
            drawn = sum(e.amount for e in ledger.entries() if e.kind == "voucher" and e.channel_id == channel_id)
            assert drawn == state.drawn <= state.deposit == market.channels.channel(channel_id).deposit
