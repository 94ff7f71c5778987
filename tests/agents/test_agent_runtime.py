"""Brains, the agent runtime and the roles.

- LLMBrain against a real local HTTP server speaking the OpenAI protocol with scripted tool calls:
  a purchase flow, a malformed call, an unknown tool and an over-budget request, each refused and
  reported back to the model.
- Policy brains: seeded, and they learn what the rewards say.
- Each role end to end on the embedded chain with an in-process server: providers publish real
  dataset shards (one noisy), a builder buys them, trains a real model, publishes it with royalty
  shares to exactly those datasets and serves it; a buyer pays per call over a channel and its answers
  are scored against true labels; royalties flow up the lineage to the providers.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient

from agents import AuditLedger, Budget
from agents.brains import (
    Action,
    EpsilonGreedyBrain,
    GreedyBrain,
    LLMBrain,
    Observation,
    Outcome,
    PricedAsset,
    RandomBrain,
    UCBBrain,
    policy_brain,
)
from agents.errors import ActionRefused, AgentError, translate
from agents.learning import load_source, make_shards, split_holdout, with_label_noise
from agents.roles import BuilderAgent, BuildPlan, BuyerAgent, ClassificationTask, Errand, Listing, ProviderAgent
from agents.runtime import Agent, read_trace
from agents.wallet import AgentWallet
from marketplace.api import Settings, create_app
from marketplace.api.app import attach_model_handler
from marketplace.chain.units import to_units
from marketplace.client import ApiClientError
from tests.helpers.openai_stub import ScriptedLLM, answer, tool_calls


def tool_messages(request: dict) -> dict[str, dict]:
    """The tool replies to the model's last turn in a chat request, by call id."""
    messages = request["messages"]
    last_turn = max(i for i, m in enumerate(messages) if m["role"] == "assistant")
    return {m["tool_call_id"]: json.loads(m["content"]) for m in messages[last_turn:] if m["role"] == "tool"}


# ---------------------------------------------------------------------- LLM brain


@pytest.mark.backend("embedded")
def test_llm_brain_buys_calls_and_hears_every_refusal(server, chain, market, alice, assets, tmp_path):
    data, model = assets["data"], assets["model"]
    budget = Budget(run_cap=to_units(3), asset_cap=to_units(3), call_ceiling=to_units("2.5"))
    wallet = AgentWallet.connect(alice, budget, AuditLedger(tmp_path / "ledger.jsonl"), "http://testserver", chain,
                                 http=server)  # fmt: skip
    before = market.token.balance_of(alice.address)
    script = [
        tool_calls(("search_assets", '{"kind": "dataset"}'), ("get_asset", '{"asset_id": '), ("drain_wallet", "{}")),
        tool_calls(("buy_license", json.dumps({"asset_id": data})), ("get_asset", json.dumps({"asset_id": model}))),
        tool_calls(("open_channel", json.dumps({"asset_id": model, "deposit": to_units(2)}))),
        tool_calls(
            ("open_channel", json.dumps({"asset_id": model, "deposit": to_units("0.5")})),
            ("invoke_model", json.dumps({"model_id": model, "input": [2, 3]})),
        ),
        answer("Bought the dataset and the sum is 5."),
    ]
    with ScriptedLLM(script) as llm:
        brain = LLMBrain(base_url=llm.base_url, model="scripted", price_per_1k_prompt=0.5, price_per_1k_completion=1)
        agent = Agent(7, wallet, brain, role=Errand("Buy the dataset, then add 2 and 3 with the model."),
                      trace_path=tmp_path / "trace.jsonl", download_dir=tmp_path / "downloads")  # fmt: skip
        report = agent.run(max_steps=10)

    assert (report.reason, report.steps) == ("brain_finished", 4)
    assert brain.final_answer == "Bought the dataset and the sum is 5."
    first = llm.requests[0]
    assert first["model"] == "scripted" and {t["function"]["name"] for t in first["tools"]} >= {"buy_license"}
    system = first["messages"][0]["content"]
    assert "Budget left this run: 3000000" in system and f"- {data} dataset price 2000000" in system
    assert f"- {model} model price 250000" in system

    found, malformed, unknown = tool_messages(llm.requests[1]).values()
    assert found["ok"] and [a["asset_id"] for a in found["result"]["items"]] == [data]
    assert malformed["error"]["type"] == "BadArguments" and "get_asset" in malformed["error"]["message"]
    assert unknown["error"]["type"] == "UnknownTool" and "buy_license" in unknown["error"]["message"]

    bought, looked_up = tool_messages(llm.requests[2]).values()
    assert bought["result"]["amount"] == to_units(2) and looked_up["result"]["kind"] == "model"
    assert "Budget left this run: 1000000" in llm.requests[2]["messages"][0]["content"]
    (over,) = tool_messages(llm.requests[3]).values()
    assert over["error"]["type"] == "OverBudget" and "run budget" in over["error"]["message"]
    opened, called = tool_messages(llm.requests[4]).values()
    assert opened["ok"] and called["result"]["output"] == {"sum": 5.0}

    # Only what the guard allowed was signed, and the ledger matches the chain.
    assert [e.kind for e in wallet.ledger.entries()] == ["license", "channel_deposit", "voucher"]
    assert wallet.ledger.total() == to_units("2.5") == before - market.token.balance_of(alice.address)
    assert market.marketplace.has_access(data, alice.address)
    assert (brain.usage.requests, brain.usage.prompt_tokens, brain.usage.completion_tokens) == (5, 500, 100)
    assert brain.usage.cost == pytest.approx(5 * (0.1 * 0.5 + 0.02 * 1))
    lines = list(read_trace(tmp_path / "trace.jsonl"))
    assert [line["event"] for line in lines] == ["step"] * 4 + ["stop"]
    assert lines[0]["outcomes"][2]["error"]["type"] == "UnknownTool" and lines[-1]["reason"] == "brain_finished"
    assert lines[-1]["usage"]["requests"] == 5


@pytest.mark.backend("embedded")
def test_llm_brain_calls_a_tool_without_parameters_with_null_or_empty_arguments(server, chain, market, alice, tmp_path):
    """Small local models send ``null`` (or nothing) as the arguments of a tool that takes none: each works."""
    wallet = AgentWallet.connect(alice, Budget(to_units(1), to_units(1), to_units(1)),
                                 AuditLedger(tmp_path / "ledger.jsonl"), "http://testserver", chain,
                                 http=server)  # fmt: skip
    nothing = ["null", "", "{}", " null "]
    script = [tool_calls(*[("check_balance", raw) for raw in nothing]), answer("Checked.")]
    with ScriptedLLM(script) as llm:
        brain = LLMBrain(base_url=llm.base_url, model="small", max_actions_per_decision=len(nothing))
        agent = Agent(None, wallet, brain, role=Errand("Check the balance."),
                      trace_path=tmp_path / "trace.jsonl", download_dir=tmp_path / "downloads")  # fmt: skip
        report = agent.run(max_steps=3)
    assert (report.reason, report.steps) == ("brain_finished", 1)
    replies = list(tool_messages(llm.requests[1]).values())
    assert len(replies) == len(nothing) and all(reply["ok"] for reply in replies), replies
    assert {reply["result"]["balance"] for reply in replies} == {market.token.balance_of(alice.address)}
    assert wallet.ledger.entries() == []


def test_llm_brain_refuses_extra_calls_and_reports_endpoint_failures():
    with ScriptedLLM([tool_calls(*[("check_balance", "{}")] * 3)]) as llm:
        brain = LLMBrain(base_url=llm.base_url, model="m", max_actions_per_decision=2)
        actions = brain.decide(Observation(step=0, task="t", budget_left=1, balance=1))
        assert [a.tool for a in actions] == ["check_balance", "check_balance"]
        refused = [m for m in brain.messages if m["role"] == "tool"]
        assert len(refused) == 1 and json.loads(refused[0]["content"])["error"]["type"] == "TooManyCalls"
        with pytest.raises(AgentError, match="LLM endpoint failed"):  # the script is exhausted: HTTP 500
            brain.decide(Observation(step=1, task="t", budget_left=1, balance=1))


# ---------------------------------------------------------------------- policy brains

OFFERS = [
    PricedAsset(1, "model", 100, rating=90),
    PricedAsset(2, "model", 100, rating=40),
    PricedAsset(3, "model", 400, rating=95),
]


def run_bandit(brain, accuracy: dict[int, float], rounds: int, seed: int = 1) -> dict[int, int]:
    """Pull arms against Bernoulli rewards; returns pulls per arm."""
    rng = np.random.default_rng(seed)
    rewards: dict[int, float] = {}
    pulls = {o.asset_id: 0 for o in OFFERS}
    for step in range(rounds):
        observation = Observation(step=step, task="", budget_left=10**9, balance=10**9, offers=OFFERS,
                                  query={"features": [[0]]}, rewards=rewards,
                                  open_channels={o.asset_id: 10**6 for o in OFFERS},
                                  value_per_success=1000)  # fmt: skip
        (action,) = brain.decide(observation)
        arm = action.arguments["model_id"]
        pulls[arm] += 1
        rewards = {arm: float(rng.random() < accuracy[arm])}
    return pulls


def test_policy_brains_are_seeded_and_learn_from_rewards():
    accuracy = {1: 0.9, 2: 0.3, 3: 0.95}
    for name in ("greedy", "bandit", "epsilon-greedy", "random"):
        first, again = (run_bandit(policy_brain(name, seed=5), accuracy, 60) for _ in range(2))
        assert first == again, name  # same seed, same choices
    ucb = run_bandit(UCBBrain(seed=0, c=0.3), accuracy, 300)
    assert ucb[1] > ucb[2] and ucb[1] > ucb[3]  # 0.9 - 0.1 beats 0.95 - 0.4 once price counts
    eps = run_bandit(EpsilonGreedyBrain(seed=0, epsilon=0.1), accuracy, 300)
    assert eps[1] > 200
    greedy = run_bandit(GreedyBrain(seed=0), accuracy, 50)
    assert greedy[1] > 40  # best rating per price, and it keeps paying off
    spread = run_bandit(RandomBrain(seed=0), accuracy, 300)
    assert min(spread.values()) > 60
    with pytest.raises(AgentError, match="unknown brain"):
        policy_brain("oracle")


def test_policy_brain_opens_a_channel_first_and_stops_when_nothing_is_affordable():
    brain = GreedyBrain(seed=0, deposit_calls=5)
    observation = Observation(step=0, task="", budget_left=1_000, balance=1_000, offers=OFFERS[:2],
                              query={"features": [[1]]})  # fmt: skip
    opened, called = brain.decide(observation)
    assert opened == Action("open_channel", {"asset_id": 1, "deposit": 500})
    assert called.tool == "invoke_model" and called.arguments["input"] == {"features": [[1]]}
    observation.budget_left = 99
    assert brain.decide(observation) == []


# ---------------------------------------------------------------------- the roles, end to end


def test_a_model_that_refuses_the_row_scores_zero_and_the_row_stays():
    """A buyer among models of other tasks (README: an iris model beside a digits one) hears the refusal, its
    brain learns the model is worth nothing to it, and the run goes on (it used to end on the first 422)."""
    refusal = translate(ApiClientError(422, "bad_model_input", "the model rejected its input"), payment=True)
    assert isinstance(refusal, ActionRefused) and "(bad_model_input)" in str(refusal)
    task = ClassificationTask(np.zeros((2, 4)), np.array([0, 1]), value_per_success=1)
    refused = Outcome(Action("invoke_model", {"model_id": 2, "input": task.query()}),
                      error={"type": "ActionRefused", "message": str(refusal)})  # fmt: skip
    assert task.record([refused]) == {2: 0.0} and (task.index, task.paid_calls) == (0, 0)
    brain = UCBBrain(seed=0)
    brain.decide(Observation(step=1, task="", budget_left=10, balance=10, offers=[], query=None,
                             rewards={2: 0.0}))  # fmt: skip
    assert (brain.pulls, brain.reward_sum) == ({2: 1}, {2: 0.0})  # tried: no longer an untried arm it must pick


@pytest.mark.backend("embedded")
def test_providers_builder_and_buyer_end_to_end(chain, market, deployment, admin, alice, bob, carol, tmp_path):
    X, y = load_source("digits", seed=0)
    X_train, y_train, X_test, y_test = split_holdout(X, y, 0.3, seed=0)
    clean_a, clean_b, noisy = make_shards(X_train, y_train, [200, 200, 200], seed=0)
    noisy = with_label_noise(noisy, 0.6, 10, np.random.default_rng(0))
    dave = chain.accounts[6]
    market.token.mint(admin, dave.address, to_units(50))
    settings = Settings(manifest=deployment.save(tmp_path / "deployment.json"), data_dir=tmp_path / "server",
                        siwe_domain="testserver", settle_interval=3600)  # fmt: skip

    def wallet(account, name, budget=to_units(40)):  # (called within the server's block below)
        return AgentWallet.connect(account, Budget(budget, budget, budget), AuditLedger(tmp_path / f"{name}.jsonl"),
                                   "http://testserver", chain, http=http)  # fmt: skip

    with TestClient(create_app(settings, chain=chain)) as http:
        providers = {}
        for account, name, shard in [
            (bob, "clean-a", clean_a),
            (carol, "clean-b", clean_b),
            (chain.accounts[7], "noisy", noisy),
        ]:
            provider_wallet = wallet(account, name)
            provider = ProviderAgent(provider_wallet, trace_path=tmp_path / f"{name}.trace")
            (asset_id,) = provider.publish([Listing(shard, to_units(3), f"digits-{name}")])
            providers[name] = (provider, asset_id)
        datasets = [asset_id for _, asset_id in providers.values()]

        builder_wallet = wallet(dave, "builder")
        plan = BuildPlan(model="knn", rule="knn_shapley", royalty_bps=6_000, price_per_call=to_units("0.05"),
                         X_val=X_test[:150], y_val=y_test[:150])  # fmt: skip
        builder = BuilderAgent(builder_wallet, plan,
                               lambda model_id, handler: attach_model_handler(http.app, model_id, handler),
                               trace_path=tmp_path / "builder.trace",
                               download_dir=tmp_path / "builder-data")  # fmt: skip
        built = builder.run()

        # Really trained on exactly what it bought, and its published parents are those datasets.
        assert built.parents == datasets and built.rows == 600
        asset = market.marketplace.asset(built.model_id)
        assert list(asset.parents) == datasets
        assert builder_wallet.ledger.total() == 3 * to_units(3) == to_units(50) - market.token.balance_of(dave.address)
        assert built.validation_accuracy > 0.9
        assert built.weights[2] < min(built.weights[:2]) and sum(built.shares_bps) == 6_000

        buyer_wallet = wallet(alice, "buyer", budget=to_units(2))
        task = ClassificationTask(X_test[150:180], y_test[150:180], value_per_success=to_units("0.5"))
        buyer = BuyerAgent(buyer_wallet, UCBBrain(seed=0, deposit_calls=40), task,
                           trace_path=tmp_path / "buyer.trace")  # fmt: skip
        before = market.token.balance_of(alice.address)
        report = buyer.run()
        assert report.reason == "task_complete" and task.index == 30
        predicted = built.estimator.predict(X_test[150:180])
        assert task.correct == int((predicted == y_test[150:180]).sum()) >= 25  # real answers, really scored
        assert buyer_wallet.ledger.total() == before - market.token.balance_of(alice.address) == to_units(2)
        assert buyer.utility() == task.correct * to_units("0.5") - 30 * to_units("0.05")
        trace = list(read_trace(tmp_path / "buyer.trace"))
        assert len(trace) == 31 and trace[0]["actions"][0]["tool"] == "open_channel"

        # An LLM buyer (a local OpenAI-protocol server playing the model) does the same task by tool calls.
        def llm_buyer(body: dict) -> dict:
            last, system = body["messages"][-1], body["messages"][0]["content"]
            if last["role"] != "user" or "Work item: " not in last["content"]:
                return answer("done")
            item = last["content"].split("Work item: ", 1)[1]
            invoke = ("invoke_model", json.dumps({"model_id": built.model_id, "input": json.loads(item)}))
            if f"{built.model_id}: " in system.split("Channels you hold")[1]:
                return tool_calls(invoke)
            return tool_calls(
                ("open_channel", json.dumps({"asset_id": built.model_id, "deposit": to_units(1)})), invoke
            )

        llm_wallet = wallet(carol, "llm-buyer", budget=to_units(1))
        market.token.mint(admin, carol.address, to_units(1))
        llm_task = ClassificationTask(X_test[180:186], y_test[180:186], value_per_success=to_units("0.5"))
        with ScriptedLLM(llm_buyer) as llm:
            brain = LLMBrain(base_url=llm.base_url, model="buyer")
            llm_report = BuyerAgent(llm_wallet, brain, llm_task).run()
        assert (llm_report.reason, llm_task.index, brain.usage.requests) == ("task_complete", 6, 6)
        assert llm_task.correct == int((built.estimator.predict(X_test[180:186]) == y_test[180:186]).sum())
        assert [e.kind for e in llm_wallet.ledger.entries()] == ["channel_deposit"] + ["voucher"] * 6

        # A poorer buyer stops cleanly when its budget is spent.
        poor = wallet(bob, "poor", budget=to_units("0.1"))
        market.token.mint(admin, bob.address, to_units(1))
        poor_task = ClassificationTask(X_test[:10], y_test[:10], value_per_success=to_units("0.5"))
        stopped = BuyerAgent(poor, GreedyBrain(seed=0, deposit_calls=1), poor_task).run()
        assert (stopped.reason, poor_task.index, poor.ledger.total()) == ("budget_exhausted", 2, to_units("0.1"))
        # A buyer to whom a right answer is worth less than a call's price does not pay at all.
        thrifty_task = ClassificationTask(X_test[:10], y_test[:10], value_per_success=to_units("0.05") - 1)
        thrifty = BuyerAgent(wallet(bob, "thrifty"), GreedyBrain(seed=0), thrifty_task).run()
        assert (thrifty.reason, thrifty_task.index) == ("brain_finished", 0)

        settled = http.app.state.services.settler.settle_once()
        assert sum(s.amount for s in settled) == (30 + 6 + 2) * to_units("0.05")

    market.release_upstream(admin, built.model_id)
    earned = {name: sum(provider.withdraw().values()) for name, (provider, _) in providers.items()}
    assert min(earned.values()) > 0
    assert earned["noisy"] < min(earned["clean-a"], earned["clean-b"])
