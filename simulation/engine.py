"""Run a scenario: real data, real models, and every payment through the contracts.

One run, in order (the model owns the seeded randomness and the schedule, agents own behaviour):

1. deploy the contracts (fee from the scenario) on the chosen chain and start an in-process server;
2. producers publish their shards (clean, label-noised, or duplicated from another producer);
3. builders buy datasets, train (k-NN / logistic regression), set parent shares with the royalty
   rule, publish their models and serve them;
4. each round, consumers classify held-out rows by paying for model calls over channels (their
   brains choose the model); answers are scored against the true labels;
5. the server's settler claims every voucher, royalties are released up the lineage, every payee
   withdraws — and what each party holds is read back from the chain and compared, to the unit,
   with the simulation's own ledger (computed from the payments it made and the vault shares).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi.testclient import TestClient
from pydantic import SecretStr
from web3 import Web3

from agents import AgentWallet, AuditLedger, Budget
from agents.brains import policy_brain
from agents.datavalue import loo_contributions
from agents.learning import Shard, load_source, make_shards, split_holdout, with_duplicates, with_label_noise
from agents.roles import BuilderAgent, BuildPlan, BuyerAgent, ClassificationTask, Listing, ProviderAgent
from marketplace.api import Settings, create_app
from marketplace.api.app import attach_model_handler
from marketplace.chain import Chain, connect
from marketplace.chain.deployment import deploy_all
from marketplace.chain.market import Market
from marketplace.chain.units import BPS, TOTAL_SHARES
from marketplace.errors import AgentmarketError
from simulation.scenario import Scenario

GAS_ETH = 10**18  # given to each generated account for gas


class LedgerMismatch(AgentmarketError):
    """What the chain holds differs from what the simulation's own ledger says it should."""


@dataclass
class Party:
    """A simulated participant: a deterministic account and its agent wallet."""

    role: str
    index: int
    account: LocalAccount
    wallet: AgentWallet


def derived_account(seed: int, role: str, index: int) -> LocalAccount:
    """A key derived from the seed, so the same scenario and seed give the same addresses."""
    return Account.from_key(hashlib.sha256(f"agentmarket-sim/{seed}/{role}/{index}".encode()).digest())


def _vault_split(amount: int, share: int) -> int:
    """What a payee holding ``share`` of a vault's shares can claim of ``amount`` (the contract's floor)."""
    return amount * share // TOTAL_SHARES


def run_simulation(
    scenario: Scenario,
    *,
    chain_target: str = "embedded",
    work_dir: Path,
    on_round: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Run ``scenario`` on ``chain_target`` (embedded, anvil or an RPC URL); returns the result dict.

    Raises ``LedgerMismatch`` if any party's on-chain holdings differ from the simulation's ledger.
    """
    started = time.perf_counter()
    rng = np.random.default_rng(scenario.seed)
    with connect(chain_target) as chain:
        deployer = chain.accounts[0]
        first_block = chain.block_number() + 1
        deployment = deploy_all(chain, deployer, fee_bps=scenario.protocol.fee_bps)
        market = deployment.market(chain)
        # The run's one gateway settles with a dev account named here (not a key of its own made at random), so
        # that the same scenario and seed give the same transactions, gas and bytes.
        settings = Settings.load(manifest=deployment.save(work_dir / "deployment.json"),
                                 data_dir=work_dir / "server", siwe_domain="testserver", settle_interval=10**6,
                                 relayer_key=SecretStr(Web3.to_hex(chain.accounts[-1].key)))  # fmt: skip
        with TestClient(create_app(settings, chain=chain)) as http:
            world = _World(scenario, chain, market, deployer, http, work_dir, rng)
            world.publish_datasets()
            world.build_models()
            for round_number in range(1, scenario.rounds + 1):
                figures = world.play_round(round_number)
                if on_round:
                    on_round(round_number, figures)
            settled = http.app.state.services.settler.settle_once()
            world.channel_revenue_claimed = sum(s.amount for s in settled if s.outcome == "claimed")
            world.release_and_withdraw()
        result = world.result()
        result["chain"] = {"kind": chain.kind, "chain_id": chain.chain_id, **chain_activity(chain, first_block)}
    world.reconcile(result)
    result["wall_time"] = time.perf_counter() - started
    result["onchain_actions"] = result["chain"]["tx_count"]
    return result


def chain_activity(chain: Chain, first_block: int) -> dict[str, int]:
    """Gas used and transactions, summed over every block of the run."""
    gas = txs = 0
    for number in range(first_block, chain.block_number() + 1):
        block = chain.w3.eth.get_block(number)
        gas += block["gasUsed"]
        txs += len(block["transactions"])
    return {"gas_used": gas, "tx_count": txs}


class _World:
    """The run's state: parties, assets, and the ledger of every payment made."""

    def __init__(
        self,
        scenario: Scenario,
        chain: Chain,
        market: Market,
        deployer: LocalAccount,
        http: TestClient,
        work_dir: Path,
        rng: np.random.Generator,
    ) -> None:
        self.scenario, self.chain, self.market, self.deployer, self.http = scenario, chain, market, deployer, http
        self.work_dir, self.rng = work_dir, rng
        X, y = load_source(scenario.data.source, seed=scenario.seed)
        X_train, y_train, X_held, y_held = split_holdout(X, y, scenario.data.test_fraction, scenario.seed)
        half = len(y_held) // 2
        self.X_train, self.y_train = X_train, y_train
        self.X_val, self.y_val = X_held[:half], y_held[:half]  # builders' validation data
        self.X_test, self.y_test = X_held[half:], y_held[half:]  # consumers' queries and the true-value test set
        self.n_classes = len(np.unique(y))
        self.shards: list[Shard] = []
        self.datasets: list[int] = []
        self.producers: list[Party] = []
        self.builders: list[Party] = []
        self.consumers: list[Party] = []
        self.models: list[dict[str, Any]] = []
        self.license_paid: dict[int, int] = {}  # dataset id -> total paid for licenses
        self.rounds: list[dict[str, Any]] = []
        self.query_cursor = 0
        self.brains: list[Any] = []
        self.answered = [0] * scenario.consumers.count
        self.correct = [0] * scenario.consumers.count
        self.channel_revenue_claimed = 0
        self.withdrawn: dict[str, int] = {}

    # ------------------------------------------------------------------ parties

    def _party(self, role: str, index: int, budget: int) -> Party:
        account = derived_account(self.scenario.seed, role, index)
        self.chain.send_eth(self.deployer, account.address, GAS_ETH)
        if budget:
            self.market.token.mint(self.deployer, account.address, budget)
        caps = Budget(run_cap=budget, asset_cap=budget, call_ceiling=budget)
        wallet = AgentWallet.connect(account, caps, AuditLedger(self.work_dir / "ledgers" / f"{role}-{index}.jsonl"),
                                     "http://testserver", self.chain, http=self.http)  # fmt: skip
        return Party(role, index, account, wallet)

    def _client(self, party: Party) -> Any:
        """The party's SDK client (its wallet's: made once, when the party was)."""
        return party.wallet.client

    # ------------------------------------------------------------------ steps

    def publish_datasets(self) -> None:
        """Producers cut their shards (with the scenario's defects) and publish them."""
        spec = self.scenario.producers
        shards = make_shards(self.X_train, self.y_train, spec.shard_size, seed=self.scenario.seed)
        for index, rate in enumerate(spec.label_noise):
            if rate > 0:
                shards[index] = with_label_noise(shards[index], rate, self.n_classes, self.rng)
        for duplicate in spec.duplicates:
            shards[duplicate.producer] = with_duplicates(
                shards[duplicate.producer], shards[duplicate.source], duplicate.rate, self.rng
            )
        self.shards = shards
        for index, shard in enumerate(shards):
            party = self._party("producer", index, 0)
            provider = ProviderAgent(party.wallet)
            (asset_id,) = provider.publish([Listing(shard, spec.price_units, f"{self.scenario.name}-producer-{index}")])
            self.producers.append(party)
            self.datasets.append(asset_id)
            self.license_paid[asset_id] = 0

    def build_models(self) -> None:
        """Builders buy every dataset they can afford, train, set royalties by the rule, publish and serve."""
        spec = self.scenario.builders
        for index in range(spec.count):
            party = self._party("builder", index, spec.budget_units)
            plan = BuildPlan(model=spec.model_for(index), rule=self.scenario.royalty.rule,
                             royalty_bps=spec.royalty_bps, price_per_call=self._call_price(),
                             X_val=self.X_val, y_val=self.y_val, seed=self.scenario.seed + index)  # fmt: skip
            builder = BuilderAgent(party.wallet, plan,
                                   lambda model_id, handler: attach_model_handler(self.http.app, model_id, handler),
                                   download_dir=self.work_dir / "downloads" / f"builder-{index}")  # fmt: skip
            built = builder.run()
            for parent in built.parents:
                self.license_paid[parent] += self.market.marketplace.asset(parent).price
            self.builders.append(party)
            self.models.append({"index": index, "model_id": built.model_id, "model": plan.model,
                                "rule": plan.rule, "accuracy": built.validation_accuracy,
                                "parents": built.parents, "shares_bps": built.shares_bps})  # fmt: skip
        spec_c = self.scenario.consumers
        for index in range(spec_c.count):
            self.consumers.append(self._party("consumer", index, spec_c.budget_units))
            self.brains.append(policy_brain(spec_c.brain, seed=self.scenario.seed * 1000 + index))

    def _call_price(self) -> int:
        """A builder's price per call under the scenario's pricing policy."""
        builders, producers, consumers = self.scenario.builders, self.scenario.producers, self.scenario.consumers
        if builders.pricing == "fixed":
            return builders.price_per_call_units
        # cost_recovery: the licenses it will buy (cheapest first within its budget, at most 8 parents) ...
        affordable = builders.budget_units // producers.price_units if producers.price_units else producers.count
        license_cost = producers.price_units * min(producers.count, affordable, 8)
        # ... repaid, with the margin, by its share of every query all consumers will ask.
        calls = max(1, consumers.count * consumers.queries_per_round * self.scenario.rounds // builders.count)
        price = -(-int(license_cost * (1 + builders.margin)) // calls)  # ceiling
        return max(price, builders.price_per_call_units)

    def play_round(self, round_number: int) -> dict[str, Any]:
        """Every consumer classifies its share of this round's queries, paying per call."""
        spec = self.scenario.consumers
        spent_before = sum(self._paid(c) for c in self.consumers)
        answered = correct = 0
        for index, party in enumerate(self.consumers):
            rows = self._next_queries(spec.queries_per_round)
            value = spec.value_per_correct_units
            task = ClassificationTask(self.X_test[rows], self.y_test[rows], value_per_success=value)
            buyer = BuyerAgent(party.wallet, self.brains[index], task)
            buyer.run(max_steps=2 * spec.queries_per_round).raise_if_interrupted()
            self.answered[index] += task.index
            self.correct[index] += task.correct
            answered, correct = answered + task.index, correct + task.correct
        figures = {"round": round_number, "consumer_spend": sum(self._paid(c) for c in self.consumers) - spent_before,
                   "answered": answered, "correct": correct}  # fmt: skip
        self.rounds.append(figures)
        return figures

    def _next_queries(self, count: int) -> np.ndarray:
        rows = (np.arange(count) + self.query_cursor) % len(self.y_test)
        self.query_cursor += count
        return rows

    @staticmethod
    def _paid(party: Party) -> int:
        """What a consumer paid for calls so far (vouchers; deposits still locked are not spent)."""
        return sum(e.amount for e in party.wallet.ledger.entries() if e.kind == "voucher")

    def release_and_withdraw(self) -> None:
        """Royalties up every model's lineage, then every payee (and the treasury) claims."""
        for model in self.models:
            self.market.release_upstream(self.deployer, model["model_id"])
        for party in self.producers + self.builders:
            self.withdrawn[party.account.address] = sum(self._client(party).withdraw().values())
        fee = 0
        for asset_id in self.datasets + [m["model_id"] for m in self.models]:
            vault = self.market.vault(asset_id)
            token = self.market.token.address
            if vault.claimable(token, self.deployer.address) > 0:
                vault.release(self.deployer, token, self.deployer.address)
            fee += vault.released(token, self.deployer.address)
        self.protocol_fee_onchain = fee

    # ------------------------------------------------------------------ the ledger and the chain

    def expected(self) -> dict[str, Any]:
        """What every party should hold, from the payments made and the vault shares (floor at every hop)."""
        fee_bps = self.scenario.protocol.fee_bps
        fee_share, net = fee_bps * BPS, BPS - fee_bps
        model_paid = {m["model_id"]: 0 for m in self.models}
        for party in self.consumers:
            for entry in party.wallet.ledger.entries():
                if entry.kind == "voucher":
                    model_paid[entry.asset_id] += entry.amount
        received = dict(self.license_paid)  # dataset vault inflows: licenses + royalties from models
        builder_revenue, fee = {}, 0
        for model in self.models:
            paid = model_paid[model["model_id"]]
            fee += _vault_split(paid, fee_share)
            for parent, bps in zip(model["parents"], model["shares_bps"], strict=True):
                if bps:
                    received[parent] += _vault_split(paid, bps * net)
            builder_revenue[model["index"]] = _vault_split(paid, (BPS - sum(model["shares_bps"])) * net)
        producer_revenue = {}
        for index, asset_id in enumerate(self.datasets):
            fee += _vault_split(received[asset_id], fee_share)
            producer_revenue[index] = _vault_split(received[asset_id], BPS * net)
        return {"producer": producer_revenue, "builder": builder_revenue, "fee": fee,
                "consumer_paid": sum(model_paid.values()), "model_paid": model_paid}  # fmt: skip

    def result(self) -> dict[str, Any]:
        """The run's figures, each read back from the chain where the chain holds it."""
        expected = self.expected()
        self.expected_ledger = expected
        token = self.market.token
        true_value = loo_contributions(self.shards, self.X_test, self.y_test, "logreg", self.scenario.seed)
        net_share = BPS * (BPS - self.scenario.protocol.fee_bps)
        producers = [
            {"index": i, "address": p.account.address, "asset_id": self.datasets[i],
             "license_revenue": _vault_split(self.license_paid[self.datasets[i]], net_share),
             "label_noise": self.scenario.producers.label_noise[i],
             "duplicate_of": self.scenario.producers.duplicate_of(i), "rows": self.shards[i].rows,
             "revenue": token.balance_of(p.account.address), "true_value": float(true_value[i])}
            for i, p in enumerate(self.producers)
        ]  # fmt: skip
        for row in producers:  # the rest of what reached a producer came from model calls, up the lineage
            row["royalty_revenue"] = row["revenue"] - row["license_revenue"]
        builders = []
        for model, party in zip(self.models, self.builders, strict=True):
            spend = party.wallet.ledger.total()
            balance = token.balance_of(party.account.address)
            builders.append({**model, "address": party.account.address, "spend": spend,
                             "revenue": balance - (self.scenario.builders.budget_units - spend)})  # fmt: skip
        consumers = [
            {"index": i, "address": p.account.address, "spend": self._paid(p), "answered": self.answered[i],
             "correct": self.correct[i], "value": self.correct[i] * self.scenario.consumers.value_per_correct_units}
            for i, p in enumerate(self.consumers)
        ]  # fmt: skip
        return {
            "scenario": self.scenario.name, "seed": self.scenario.seed, "producers": producers,
            "builders": builders, "consumers": consumers, "protocol_fee": self.protocol_fee_onchain,
            "consumer_spend": sum(c["spend"] for c in consumers), "rounds": self.rounds,
            "channel_revenue_claimed": self.channel_revenue_claimed,
        }  # fmt: skip

    def reconcile(self, result: dict[str, Any]) -> None:
        """Fail loudly unless the chain agrees with the simulation's ledger, to the unit."""
        expected, problems = self.expected_ledger, []
        for row in result["producers"]:
            if row["revenue"] != expected["producer"][row["index"]]:
                want = expected["producer"][row["index"]]
                problems.append(f"producer {row['index']}: chain {row['revenue']}, ledger {want}")
        for row in result["builders"]:
            if row["revenue"] != expected["builder"][row["index"]]:
                want = expected["builder"][row["index"]]
                problems.append(f"builder {row['index']}: chain {row['revenue']}, ledger {want}")
        if result["protocol_fee"] != expected["fee"]:
            problems.append(f"protocol fee: chain {result['protocol_fee']}, ledger {expected['fee']}")
        if result["channel_revenue_claimed"] != expected["consumer_paid"]:
            claimed, paid = result["channel_revenue_claimed"], expected["consumer_paid"]
            problems.append(f"channel claims: chain {claimed}, vouchers {paid}")
        if problems:
            raise LedgerMismatch("the chain disagrees with the simulation's ledger: " + "; ".join(problems))
