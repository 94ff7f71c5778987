"""``agentmarket demo``: the whole story in one command, every number read back from the chain.

A human owner registers two agents (wallets, X25519 keys, spend permissions); three providers publish
shards of scikit-learn's digits (one of them label-noised) to a real server on 127.0.0.1; the builder
agent buys licenses, downloads the content sealed to its key, decrypts and verifies it, trains a
k-NN model, publishes it with royalty shares set by a data-value rule (k-NN Shapley) and serves it;
the buyer agent pays for model calls over a payment channel and for one dataset over x402, and rates
what it bought; the server settles the channel, royalties are released up the lineage, and everyone
withdraws. A buyer that pays for no call (an LLM that answers in text and calls no tool) is part of the
story too: the demo says it bought nothing, and skips the x402 download and the rating.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from agents import AgentWallet
from agents.brains import LLMBrain, UCBBrain
from agents.learning import load_source, make_shards, split_holdout, with_label_noise
from agents.roles import BuilderAgent, BuildPlan, BuiltModel, BuyerAgent, ClassificationTask, Listing, ProviderAgent
from agents.tools import ToolContext, run_tool
from marketplace.chain.records import SubjectKind
from marketplace.chain.units import format_units, to_units
from marketplace.errors import AgentmarketError
from simulation.results import ChainActivity
from simulation.world import Party, World

SEED = 11
FEE_BPS = 100
DATASET_PRICE = to_units(3)
CALL_PRICE = to_units("0.05")
ROYALTY_BPS = 6_000
PROVIDERS = [("provider-a", 0.0), ("provider-b", 0.0), ("provider-c (noisy)", 0.5)]
QUERIES = 40


def run_demo(
    chain_target: str = "embedded",
    *,
    llm_url: str | None = None,
    llm_model: str = "default",
    work_dir: Path,
    say: Callable[[str], None] = lambda _line: None,
) -> dict[str, Any]:
    """Tell the story on ``chain_target``; returns the summary (every amount read from the chain)."""
    started = time.perf_counter()
    # The gateway is served on 127.0.0.1 (a free port, so that the login domain is the one the clients reach);
    # it settles with a dev account the world names, so that every run tells the same story with the same gas.
    with World(chain_target, fee_bps=FEE_BPS, seed=SEED, work_dir=work_dir, gateway="http", settle_interval=3600,
               say=say) as world:  # fmt: skip
        story = _Story(world, say)
        story.register_agents()
        story.publish_datasets()
        story.build_model()
        story.buy(llm_url, llm_model)
        story.settle()
        story.rate()
        story.release_and_withdraw()
        summary = story.summary(world.activity())
    summary["wall_time_s"] = round(time.perf_counter() - started, 1)
    return summary


class _Story:
    """The demo's cast and what happened to them, step by step, on a world."""

    def __init__(self, world: World, say: Callable[[str], None]) -> None:
        self.world, self.say = world, say
        self.market, self.token, self.deployer = world.market, world.market.token, world.deployer
        self.payments: list[dict[str, Any]] = []
        self.assets: list[dict[str, Any]] = []
        X, y = load_source("digits", seed=SEED)
        self.X_train, self.y_train, X_held, y_held = split_holdout(X, y, 0.3, SEED)
        self.X_val, self.y_val, self.X_query, self.y_query = X_held[:200], y_held[:200], X_held[200:], y_held[200:]
        # The cast: a human owner with tUSD, and two agents that hold none and draw on the owner's within caps.
        self.owner = world.fund("owner (human)", tusd=to_units(30))
        self.builder_agent = world.party("builder agent", cap=to_units(12))
        self.buyer_agent = world.party("buyer agent", cap=to_units(6))
        self.agent_ids: dict[str, int] = {}
        self.providers: list[tuple[str, Party, ProviderAgent, int, float]] = []
        self.built: BuiltModel | None = None
        self.buyer_accuracy: float | None = None
        self.buyer: dict[str, Any] = {}
        self.channel_claimed = 0
        self.earnings: dict[str, int] = {}
        self.fee = 0

    @property
    def builder_wallet(self) -> AgentWallet:
        """The builder agent's wallet (caps, audit ledger)."""
        return self.builder_agent.wallet

    @property
    def buyer_wallet(self) -> AgentWallet:
        """The buyer agent's wallet (caps, audit ledger)."""
        return self.buyer_agent.wallet

    @property
    def model(self) -> BuiltModel:
        """The builder's published model (after ``build_model``)."""
        if self.built is None:
            raise AgentmarketError("the demo's model is not built yet")
        return self.built

    # ------------------------------------------------------------------ the story

    def register_agents(self) -> None:
        agents, token = self.market.agents, self.token
        allowances = {"builder": to_units(12), "buyer": to_units(6)}
        token.approve(self.owner, agents.address, sum(allowances.values()))
        for name, wallet in (("builder", self.builder_wallet), ("buyer", self.buyer_wallet)):
            agent_id = agents.register(self.owner, f"agentmarket-demo://{name}",
                                       {"encryptionKey": wallet.public_encryption_key})  # fmt: skip
            deadline = self.world.chain.timestamp() + 240
            signature = agents.sign_wallet_binding(wallet.account, agent_id, self.owner.address, deadline)
            agents.set_agent_wallet(self.owner, agent_id, wallet.address, deadline, signature.packed)
            agents.grant_spend_permission(
                self.owner, agent_id, token.address, allowances[name], 86_400, wallet=wallet.address
            )
            self.agent_ids[name] = wallet.agent_id = agent_id  # payments top up from the owner, within the cap
        self.say(
            f"the owner registered agents #{self.agent_ids['builder']} (builder) and #{self.agent_ids['buyer']} "
            "(buyer): wallets bound by their signatures, X25519 keys, spend permissions of 12 and 6 tUSD a day; "
            "the agents hold no tUSD and draw on the owner's, within those caps, as they pay"
        )

    def publish_datasets(self) -> None:
        shards = make_shards(self.X_train, self.y_train, [200, 200, 200], seed=SEED)
        rng = np.random.default_rng(SEED)
        for (name, noise), shard in zip(PROVIDERS, shards, strict=True):
            if noise:
                shard = with_label_noise(shard, noise, 10, rng)
            party = self.world.party(name)
            provider = ProviderAgent(party.wallet)
            (asset_id,) = provider.publish([Listing(shard, DATASET_PRICE, f"digits-{name.split()[0]}")])
            self.providers.append((name, party, provider, asset_id, noise))
            self.assets.append({"asset_id": asset_id, "kind": "dataset", "name": f"digits shard of {name}",
                                "owner": party.address, "price": DATASET_PRICE, "label_noise": noise})  # fmt: skip
            self.say(f"{name} published dataset #{asset_id}: 200 digits rows at {format_units(DATASET_PRICE)} tUSD"
                     + (f", {noise:.0%} of labels wrong" if noise else "") + "; content uploaded")  # fmt: skip

    def build_model(self) -> None:
        plan = BuildPlan(model="knn", rule="knn_shapley", royalty_bps=ROYALTY_BPS, price_per_call=CALL_PRICE,
                         X_val=self.X_val, y_val=self.y_val, seed=SEED)  # fmt: skip
        builder = BuilderAgent(self.builder_wallet, plan, self.world.serve_model,
                               download_dir=self.world.work_dir / "builder-downloads")  # fmt: skip
        self.built = built = builder.run()
        for asset_id in built.parents:
            self.payments.append({"from": self.builder_wallet.address, "asset_id": asset_id, "kind": "license",
                                  "amount": DATASET_PRICE})  # fmt: skip
        self.say(f"the builder bought {len(built.parents)} licenses and downloaded each dataset sealed to its "
                 "X25519 key, decrypted it and checked it against the on-chain sha256")  # fmt: skip
        shares = ", ".join(f"#{p} {s / 100:.2f}%" for p, s in zip(built.parents, built.shares_bps, strict=True))
        self.say(f"it trained k-NN on {built.rows} rows (validation accuracy {built.validation_accuracy:.3f}), "
                 f"published model #{built.model_id} with royalties by k-NN Shapley ({shares}) "
                 "and serves it")  # fmt: skip
        self.assets.append({"asset_id": built.model_id, "kind": "model", "name": "k-NN digits classifier",
                            "owner": self.builder_wallet.address, "price": CALL_PRICE, "parents": built.parents,
                            "parent_shares_bps": built.shares_bps,
                            "validation_accuracy": built.validation_accuracy})  # fmt: skip

    def buy(self, llm_url: str | None, llm_model: str) -> None:
        wallet = self.buyer_wallet
        if llm_url:
            brain: Any = LLMBrain(base_url=llm_url, model=llm_model)
        else:
            brain = UCBBrain(seed=SEED, deposit_calls=QUERIES)
        task = ClassificationTask(self.X_query[:QUERIES], self.y_query[:QUERIES], value_per_success=to_units("0.2"))
        trace = self.world.work_dir / "buyer-trace.jsonl"
        report = BuyerAgent(wallet, brain, task, identity=self.agent_ids["buyer"], trace_path=trace).run(
            max_steps=3 * QUERIES
        )
        report.raise_if_interrupted()
        calls = sum(1 for entry in wallet.ledger.entries() if entry.kind == "voucher")
        self.buyer_accuracy = task.correct / task.index if task.index else None
        self.buyer = {"brain": "llm" if llm_url else "ucb", "calls": calls, "rows_answered": task.index,
                      "correct": task.correct, "stopped": report.reason,
                      "final_answer": getattr(brain, "final_answer", None)}  # fmt: skip
        who = "LLM" if llm_url else "UCB bandit"
        if not calls:  # e.g. a model that answers in text and never calls a tool: the story goes on without it
            answered = self.buyer["final_answer"]
            said = f" and answered: {_quote(answered)}" if answered else ""
            self.say(f"the buyer ({who}) bought nothing: it made no paid model call ({report.reason}){said}; "
                     "it skips the x402 download too")  # fmt: skip
            return
        self.say(f"the buyer ({who}) classified {task.index} rows paying "
                 f"{format_units(CALL_PRICE)} tUSD a call by channel vouchers: {task.correct} right "
                 f"({report.reason})")  # fmt: skip
        clean = self.providers[0][3]
        _content, entry = wallet.buy_over_x402(clean)
        self.payments.append({"from": wallet.address, "asset_id": clean, "kind": "x402", "amount": entry.amount,
                              "tx": entry.ref})  # fmt: skip
        self.say(f"it bought one download of dataset #{clean} over x402 (a stock x402 client signed EIP-3009; "
                 "the server's facilitator settled it into the vault and paid the gas)")  # fmt: skip

    def rate(self) -> None:
        """Paid-only feedback: the channel counts once its vouchers are claimed on chain."""
        if not self.channel_claimed:
            self.say(f"no rating: the buyer paid for no call to model #{self.model.model_id}, and only payers may rate")
            return
        wallet = self.buyer_wallet
        context = ToolContext(wallet, self.world.work_dir / "buyer-downloads")
        model = self.model.model_id
        run_tool(context, "rate_asset", {"asset_id": model, "value": 90, "tag": "accurate"})
        buyer = self.buyer_wallet.address
        summary = self.market.reputation.summary(SubjectKind.ASSET, model, [buyer])
        floor = self.market.reputation.min_payment()
        self.say(f"the buyer rated model #{model} 90/100: a rater must have paid the model's vault at least "
                 f"max(its price, {format_units(floor)} tUSD); this one's channel claims did "
                 f"({summary.count} rating from it on chain, average {summary.average:.0f})")  # fmt: skip

    def settle(self) -> None:
        settled = self.world.settle()
        claimed = self.channel_claimed = settled.claimed
        if not claimed:
            self.say("the server's settler had no voucher to claim")
            return
        self.payments.append({"from": self.buyer_wallet.address, "asset_id": self.model.model_id, "kind": "channel",
                              "amount": claimed})  # fmt: skip
        self.say(f"the server's settler claimed the calls it answered on the channel: {format_units(claimed)} tUSD "
                 f"into model #{self.model.model_id}'s vault in {settled.channels} transaction(s)")  # fmt: skip

    def release_and_withdraw(self) -> None:
        payees = [party for _name, party, *_ in self.providers] + [self.builder_agent]
        payout = self.world.release_and_withdraw(models=[self.model.model_id], payees=payees,
                                                 assets=[asset["asset_id"] for asset in self.assets])  # fmt: skip
        forwarded = payout.forwarded
        self.say(f"royalties released up the lineage: {format_units(sum(r.amount for r in forwarded))} tUSD "
                 f"to {len({r.payee for r in forwarded})} dataset vaults")  # fmt: skip
        self.earnings, self.fee = dict(payout.withdrawn), payout.protocol_fee
        for asset in self.assets:
            asset["revenue_received"] = self.market.vault(asset["asset_id"]).total_received(self.token.address)
        self.say("providers and the builder withdrew their earnings; the treasury released the protocol fee")

    # ------------------------------------------------------------------ the report

    def summary(self, activity: ChainActivity) -> dict[str, Any]:
        token = self.token.address
        paid = sum(p["amount"] for p in self.payments)
        dust = sum(self.token.balance_of(self.market.marketplace.vault_of(a["asset_id"])) for a in self.assets)
        leftover = {}
        for asset in self.assets:
            vault = self.market.vault(asset["asset_id"])
            for payee in vault.payees():
                claimable = vault.claimable(token, payee)
                if claimable:
                    leftover[f"{asset['asset_id']}:{payee}"] = claimable
        producers = {party.address: self.earnings[party.address] for _, party, *_ in self.providers}
        names = self.world.names
        return {
            "chain_id": activity.chain_id,
            "chain": activity.kind,
            "assets": self.assets,
            "payments": self.payments,
            "paid_total": paid,
            "earnings_by_address": {a: {"role": names.get(a, "?"), "amount": v} for a, v in self.earnings.items()},
            "parties": dict(names),  # address -> who it is: owner, agents, providers, treasury
            "protocol_fee": self.fee,
            "left_in_vaults": dust,
            "claimable_left": leftover,
            "producer_earnings": producers,
            "producer_share": sum(producers.values()) / paid if paid else 0.0,
            "model_accuracy": {"validation": self.model.validation_accuracy, "buyer_queries": self.buyer_accuracy},
            "buyer": self.buyer,
            "owner_funding": {
                name: sum(e.amount for e in wallet.ledger.entries() if e.kind == "owner_top_up")
                for name, wallet in (("builder", self.builder_wallet), ("buyer", self.buyer_wallet))
            },
            "gas_used": activity.gas_used,
            "tx_count": activity.tx_count,
        }


def _quote(text: str, limit: int = 120) -> str:
    """``text`` on one line, in quotes, cut to ``limit`` characters."""
    line = " ".join(text.split())
    return json.dumps(line if len(line) <= limit else line[: limit - 1] + "…", ensure_ascii=False)


def report_markdown(summary: dict[str, Any]) -> str:
    """A small Markdown report of a demo run."""
    lines = [f"# agentmarket demo (chain {summary['chain_id']}, {summary['chain']})", "", "## Payments", "",
             "| from | asset | kind | tUSD |", "| --- | --- | --- | ---: |"]  # fmt: skip
    lines += [
        f"| {p['from']} | #{p['asset_id']} | {p['kind']} | {format_units(p['amount'])} |" for p in summary["payments"]
    ]
    lines += [
        "",
        "## Earnings (withdrawn, read from the chain)",
        "",
        "| address | role | tUSD |",
        "| --- | --- | ---: |",
    ]
    lines += [f"| {a} | {e['role']} | {format_units(e['amount'])} |" for a, e in summary["earnings_by_address"].items()]
    lines += ["", f"Protocol fee: {format_units(summary['protocol_fee'])} tUSD. "
              f"Share of all payments that reached data producers: {summary['producer_share']:.1%}. "
              f"The buyer made {summary['buyer']['calls']} paid model calls. "
              f"Gas used: {summary['gas_used']:,} in {summary['tx_count']} transactions.", ""]  # fmt: skip
    return "\n".join(lines)


def write_outputs(summary: dict[str, Any], out_dir: Path) -> list[Path]:
    """``demo.json`` and ``report.md`` in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    data, report = out_dir / "demo.json", out_dir / "report.md"
    data.write_text(json.dumps(summary, indent=2) + "\n")
    report.write_text(report_markdown(summary))
    return [data, report]
