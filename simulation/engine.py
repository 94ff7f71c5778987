"""Run a scenario: real data, real models, and every payment through the contracts.

One run, in order (the model owns the seeded randomness and the schedule, agents own behaviour):

1. a ``simulation.world.World``: the contracts deployed (fee from the scenario) on the chosen chain, the
   gateway in process, parties funded from the seed;
2. producers publish their shards (clean, label-noised, poisoned, or duplicated from another producer)
   at prices set by the license pricing mechanism (``producers.pricing``);
3. builders buy datasets by expected value for money (``agents.economy.choose_parents``), train (k-NN /
   logistic regression), set parent shares with the royalty rule, price their calls (fixed, or cost
   recovery net of royalties and fee), publish their models and serve them — all before round 1, or in
   ``builders.waves`` waves over the rounds, producers repricing (on chain) before each later wave;
4. each round, consumers classify held-out rows by paying for model calls over channels (their
   brains choose the model by expected value for the price); answers are scored against the true labels;
5. the server's settler claims every voucher, royalties are released up the lineage, every payee
   withdraws — and what each party holds is read back from the chain and compared, to the unit,
   with the simulation's own ledger (computed from the payments it made and the vault shares).

The result is a typed ``simulation.results.RunResult``; metrics, plots, CSVs and the report read only that.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from typing import Protocol

import numpy as np

from agents.brains import Brain, policy_brain
from agents.economy import DataValuation, cost_recovery_price, license_price, lineage_signal, reprice
from agents.learning import Shard, make_shards, split_holdout, with_duplicates, with_label_noise
from agents.roles import BuilderAgent, BuildPlan, BuyerAgent, ClassificationTask, Listing, ProviderAgent
from marketplace.chain.units import BPS, TOTAL_SHARES
from simulation.groundtruth import ModelTruth, TruthGames, producer_values
from simulation.results import BuilderResult, ConsumerResult, ProducerResult, RoundFigures, RunResult
from simulation.scenario import Scenario
from simulation.txlog import RunRecord
from simulation.world import Holding, World, reconcile


def _vault_split(amount: int, share: int) -> int:
    """What a payee holding ``share`` of a vault's shares can claim of ``amount`` (the contract's floor)."""
    return amount * share // TOTAL_SHARES


@dataclass(frozen=True)
class ExpectedLedger:
    """What every party should hold, from the payments the run made and the vault shares (base units).

    ``producer`` and ``builder`` by party index; ``fee`` the protocol's; ``consumer_paid`` all vouchers;
    ``model_paid`` vouchers by model id.
    """

    producer: dict[int, int]
    builder: dict[int, int]
    fee: int
    consumer_paid: int
    model_paid: dict[int, int]


@dataclass(frozen=True)
class PublishedModel:
    """A builder's published model: its index, id, kind, royalty rule, validation accuracy and lineage."""

    index: int
    model_id: int
    model: str
    rule: str
    accuracy: float
    parents: tuple[int, ...]
    shares_bps: tuple[int, ...]


#: ``engine = "auto"`` runs the fast engine from this many paid model calls up (consumers x queries per
#: round x rounds), the full stack below it.
FAST_FROM_CALLS = 2_000

#: The engines: ``full`` (HTTP gateway in process, SDK, agent wallets) and ``fast`` (``simulation.fast``).
ENGINES = ("fast", "full")


def choose_engine(scenario: Scenario, engine: str | None = None) -> str:
    """The engine a run uses: ``engine`` if given, else the scenario's; ``auto`` is ``fast`` from
    :data:`FAST_FROM_CALLS` paid calls up, else ``full``. Raises ``ValueError`` for another name."""
    chosen = engine or scenario.engine
    if chosen == "auto":
        consumers = scenario.consumers
        calls = consumers.count * consumers.queries_per_round * scenario.rounds
        return "fast" if calls >= FAST_FROM_CALLS else "full"
    if chosen not in ENGINES:
        raise ValueError(f"unknown engine {chosen!r}: use auto, fast or full")
    return chosen


def run_simulation(
    scenario: Scenario,
    *,
    chain_target: str = "embedded",
    work_dir: Path,
    on_round: Callable[[int, RoundFigures], None] | None = None,
    engine: str | None = None,
    record: RunRecord | None = None,
) -> RunResult:
    """Run ``scenario`` on ``chain_target`` (embedded, anvil or an RPC URL) with ``engine`` (``fast``,
    ``full``, or None: the scenario's ``engine``, see :func:`choose_engine`); returns the typed result.
    ``record`` (``simulation.txlog.RunRecord``), when given, is filled before the chain goes: every token
    transfer read back from it, by round (the last block of the set-up and of each round are noted as the run
    goes), and the paid calls per round.

    Both engines make the same payments on the same contracts and give the same economic results.
    Raises ``LedgerMismatch`` (``simulation.world``) if any party's on-chain holdings differ from the
    simulation's ledger.
    """
    started = time.perf_counter()
    fast = choose_engine(scenario, engine) == "fast"
    gateway = "none" if fast else "in_process"
    with World(chain_target, fee_bps=scenario.protocol.fee_bps, seed=scenario.seed, work_dir=work_dir,
               gateway=gateway) as world:  # fmt: skip
        if fast:
            from simulation.fast import FastRun

            run: _Run = FastRun(scenario, world)
        else:
            run = _Run(scenario, world)
        try:
            run.publish_datasets()
            run.build_models()
            round_ends = [world.chain.block_number()]  # the last block of the set-up, then of each round
            voucher_marks = [[0] * len(run.consumers)]  # calls each consumer had paid by then
            for round_number in range(1, scenario.rounds + 1):
                figures = run.play_round(round_number)
                if record is not None:
                    round_ends.append(world.chain.block_number())
                    voucher_marks.append([len(run.vouchers(i)) for i in range(len(run.consumers))])
                if on_round:
                    on_round(round_number, figures)
            channel_revenue = run.settle()
            protocol_fee = run.release_and_withdraw()
            result = run.result(channel_revenue, protocol_fee)
            if record is not None:
                record.capture(world, run, round_ends, voucher_marks)
        finally:
            run.close()
    reconcile(holdings(result, run.expected()))
    return replace(result, wall_time=time.perf_counter() - started, onchain_actions=result.chain.tx_count)


def _split(shard: Shard, parts: int) -> list[Shard]:
    """``shard`` cut into ``parts`` consecutive near-equal shards (the first ones one row longer); 1 → itself."""
    if parts == 1:
        return [shard]
    return [Shard(shard.X[rows], shard.y[rows]) for rows in np.array_split(np.arange(shard.rows), parts)]


def call_price(scenario: Scenario, license_cost: int = 0, upstream_bps: int = 0, entry_round: int = 1) -> int:
    """A builder's price per call under the scenario's pricing policy (base units): ``fixed`` →
    ``price_per_call``; ``cost_recovery`` → the price at which the calls it expects (every consumer's
    queries from its ``entry_round`` on, spread evenly over all builders) repay its ``license_cost`` plus the
    margin, with what it keeps of a call once the protocol fee and the ``upstream_bps`` it passes up to its
    parents are taken (``agents.economy.cost_recovery_price``), never below ``price_per_call``."""
    builders, consumers = scenario.builders, scenario.consumers
    if builders.pricing == "fixed":
        return builders.price_per_call_units
    rounds = scenario.rounds - entry_round + 1
    calls = consumers.count * consumers.queries_per_round * rounds // builders.count
    return cost_recovery_price(license_cost, margin=builders.margin, calls=calls, upstream_bps=upstream_bps,
                               fee_bps=scenario.protocol.fee_bps, floor=builders.price_per_call_units)  # fmt: skip


def valuation(scenario: Scenario) -> DataValuation:
    """What the scenario's builders expect data to be worth (``builders.data_value``, ``saturation_rows``,
    ``min_value_ratio``): the rule by which they choose their parents."""
    spec = scenario.builders
    return DataValuation(spec.data_value_units, spec.saturation_rows, spec.min_value_ratio)


def with_targeted_flips(shard: Shard, flips: list[tuple[int, int, float]], rng: np.random.Generator) -> Shard:
    """``shard`` with, for each (source class, target class, rate) of ``flips``, that rate of its rows labelled
    the source class relabelled the target class (rows chosen with ``rng``; every flip reads the original
    labels, so 1 -> 7 with 7 -> 1 swaps the two classes): a targeted label-flipping poison."""
    original, y = shard.y, shard.y.copy()
    for source_class, target_class, rate in flips:
        rows = np.flatnonzero(original == source_class)
        y[rng.choice(rows, size=round(rate * len(rows)), replace=False)] = target_class
    return Shard(shard.X, y)


def model_signal(models: list[PublishedModel], rows: dict[int, int]) -> dict[int, Fraction]:
    """The lineage signal (``agents.economy.lineage_signal``) of ``models`` as the chain holds them (only the
    parents a model pays, share > 0, are on chain), with ``rows`` (dataset id -> rows) as listings state them."""
    on_chain = [
        (
            tuple(p for p, s in zip(m.parents, m.shares_bps, strict=True) if s > 0),
            tuple(s for s in m.shares_bps if s > 0),
        )
        for m in models
    ]
    return lineage_signal(on_chain, rows)


def holdings(result: RunResult, expected: ExpectedLedger) -> list[Holding]:
    """Each party's holdings on chain (from ``result``) against the run's ledger, for ``reconcile``."""
    lines = [Holding(f"producer {p.index}", p.revenue, expected.producer[p.index]) for p in result.producers]
    lines += [Holding(f"builder {b.index}", b.revenue, expected.builder[b.index]) for b in result.builders]
    lines.append(Holding("protocol fee", result.protocol_fee, expected.fee))
    lines.append(Holding("channel claims", result.channel_revenue_claimed, expected.consumer_paid, "vouchers"))
    return lines


class Actor(Protocol):
    """A party of a run as the results see it: its role, index and address (a ``Party`` of the world in the
    full engine; the fast engine's own)."""

    role: str
    index: int

    @property
    def address(self) -> str:
        """The party's checksummed address."""
        ...


class _Run:
    """One run's economy on a world: parties, assets, and the ledger of every payment made."""

    def __init__(self, scenario: Scenario, world: World) -> None:
        self.scenario, self.world = scenario, world
        self.rng = np.random.default_rng(scenario.seed)
        X, y = scenario.data.load(seed=scenario.seed)  # a bundled, synthetic or your own (CSV) data set
        X_train, y_train, X_held, y_held = split_holdout(X, y, scenario.data.test_fraction, scenario.seed)
        half = len(y_held) // 2
        self.X_train, self.y_train = X_train, y_train
        self.X_val, self.y_val = X_held[:half], y_held[:half]  # builders' validation data
        self.X_test, self.y_test = X_held[half:], y_held[half:]  # consumers' queries and the true-value test set
        self.n_classes = len(np.unique(y))
        self.shards: list[Shard] = []
        self.owners: list[int] = []  # identity index -> producer (owner) index of the scenario
        self.datasets: list[int] = []
        self.producers: list[Actor] = []
        self.builders: list[Actor] = []
        self.consumers: list[Actor] = []
        self.models: list[PublishedModel] = []
        self.license_paid: dict[int, int] = {}  # dataset id -> total paid for licenses
        self.rounds: list[RoundFigures] = []
        self.query_cursor = 0
        self.brains: list[Brain] = []
        self.answered = [0] * scenario.consumers.count
        self.correct = [0] * scenario.consumers.count
        self.prices: dict[int, int] = {}  # dataset id -> its license price now (base units)
        self.price_factor: dict[int, Fraction] = {}  # dataset id -> the demand rule's factor on its price
        self.sold: set[int] = set()  # datasets that sold a license since the producers last repriced

    # ------------------------------------------------------------------ steps

    def publish_datasets(self) -> None:
        """Producers cut their shards (with the scenario's defects) and publish them: one identity per producer,
        or, for a split (Sybil) owner, its shard cut into ``split.identities`` near-equal shards, each
        published by its own identity (``self.owners`` maps identity index to owner)."""
        spec = self.scenario.producers
        shards = make_shards(self.X_train, self.y_train, spec.shard_size, seed=self.scenario.seed)
        for index, rate in enumerate(spec.label_noise):
            if rate > 0:
                shards[index] = with_label_noise(shards[index], rate, self.n_classes, self.rng)
        for duplicate in spec.duplicates:
            shards[duplicate.producer] = with_duplicates(
                shards[duplicate.producer], shards[duplicate.source], duplicate.rate, self.rng
            )
        for producer in sorted({poison.producer for poison in spec.poison}):
            flips = [(p.source_class, p.target_class, p.rate) for p in spec.poison if p.producer == producer]
            shards[producer] = with_targeted_flips(shards[producer], flips, self.rng)
        self.owners = spec.identities()
        self.shards = [piece for index, shard in enumerate(shards) for piece in _split(shard, self.owners.count(index))]
        self.publish_shards()

    def listing_price(self, index: int, signal: Fraction | None = None) -> int:
        """Identity ``index``'s license price under the scenario's mechanism (``agents.economy.license_price``)
        times its demand factor, with the lineage ``signal`` for ``value`` pricing (base units, at least 1)."""
        spec, owner = self.scenario.producers, self.owners[index]
        base = license_price(
            spec.pricing, spec.price_of(owner), self.shards[index].rows, spec.shard_size[owner], signal
        )
        factor = self.price_factor.get(self.datasets[index], Fraction(1)) if index < len(self.datasets) else 1
        return max(1, int(base * factor))

    def publish_shards(self) -> None:
        """Every identity publishes its shard at its listing price (through its wallet's client and the gateway)."""
        for index, shard in enumerate(self.shards):
            party = self.world.party("producer", index)
            provider = ProviderAgent(party.wallet)
            price = self.listing_price(index)
            (asset_id,) = provider.publish([Listing(shard, price, f"{self.scenario.name}-producer-{index}")])
            self.producers.append(party)
            self.datasets.append(asset_id)
            self.license_paid[asset_id] = 0
            self.prices[asset_id] = price

    def build_models(self) -> None:
        """The builders of the first wave buy, train, set royalties by the rule, publish and serve; consumers
        get ready. Later waves enter at the start of their round (:meth:`enter`)."""
        for index in self.entering(1):
            self.build(index)
        self.ready_consumers()

    def entering(self, round_number: int) -> list[int]:
        """The builders that enter before round ``round_number`` (``BuildersSpec.entry_round``)."""
        spec = self.scenario.builders
        return [i for i in range(spec.count) if spec.entry_round(i, self.scenario.rounds) == round_number]

    def enter(self, round_number: int) -> None:
        """Before a round after the first: if a wave of builders enters now, the producers reprice
        (:meth:`reprice`), then each builder of the wave builds (:meth:`build`)."""
        entering = self.entering(round_number) if round_number > 1 else []
        if entering:
            self.reprice()
            for index in entering:
                self.build(index)

    def plan(self, index: int) -> BuildPlan:
        """Builder ``index``'s plan: its model kind, the rule, its valuation of data, its call pricing."""
        spec, scenario = self.scenario.builders, self.scenario
        entry = spec.entry_round(index, scenario.rounds)

        def price_for(cost: int, upstream_bps: int) -> int:
            return call_price(scenario, cost, upstream_bps, entry)

        return BuildPlan(model=spec.model_for(index), rule=scenario.royalty.rule, royalty_bps=spec.royalty_bps,
                         price_per_call=spec.price_per_call_units, X_val=self.X_val, y_val=self.y_val,
                         seed=scenario.seed + index, valuation=valuation(scenario), price_for=price_for,
                         provenance=scenario.royalty.provenance)  # fmt: skip

    def build(self, index: int) -> None:
        """Builder ``index`` reads the catalog through its SDK client, buys by value for money, trains, sets
        royalties by the rule, prices, publishes and serves its model."""
        spec, world = self.scenario.builders, self.world
        party = world.party("builder", index, tusd=spec.budget_units)
        plan = self.plan(index)
        builder = BuilderAgent(party.wallet, plan, world.serve_model,
                               download_dir=world.work_dir / "downloads" / f"builder-{index}")  # fmt: skip
        built = builder.run()
        for parent in built.parents:
            self.license_paid[parent] += world.market.marketplace.asset(parent).price
            self.sold.add(parent)
        self.builders.append(party)
        self.models.append(PublishedModel(index=index, model_id=built.model_id, model=plan.model, rule=plan.rule,
                                          accuracy=built.validation_accuracy, parents=tuple(built.parents),
                                          shares_bps=tuple(built.shares_bps)))  # fmt: skip

    def ready_consumers(self) -> None:
        """Fund every consumer and give it its seeded policy brain."""
        spec_c = self.scenario.consumers
        for index in range(spec_c.count):
            self.consumers.append(self.world.party("consumer", index, tusd=spec_c.budget_units))
            self.brains.append(policy_brain(spec_c.brain, seed=self.scenario.seed * 1000 + index))

    def reprice(self) -> None:
        """Every producer sets its price for the next wave: the demand rule moves its factor
        (``producers.repricing = "demand"``, ``agents.economy.reprice``: up after a license sold since the
        last repricing, down after none), and ``value`` pricing reads the lineage signal of every model
        published so far; changed prices go on chain (:meth:`set_prices`)."""
        spec = self.scenario.producers
        if spec.repricing == "fixed" and spec.pricing != "value":
            return
        if spec.repricing == "demand":
            step, low, high = (Fraction(str(v)) for v in (spec.price_step, spec.price_floor, spec.price_cap))
            for asset_id in self.datasets:
                factor = self.price_factor.get(asset_id, Fraction(1))
                self.price_factor[asset_id] = reprice(factor, asset_id in self.sold, step=step, low=low, high=high)
        signal = model_signal(self.models, {a: s.rows for a, s in zip(self.datasets, self.shards, strict=True)})
        changes = []
        for index, asset_id in enumerate(self.datasets):
            price = self.listing_price(index, signal.get(asset_id))
            if price != self.prices[asset_id]:
                changes.append((index, asset_id, price))
                self.prices[asset_id] = price
        self.sold.clear()
        self.set_prices(changes)

    def set_prices(self, changes: list[tuple[int, int, int]]) -> None:
        """Each (producer identity, dataset id, new price) goes on chain: the owner's ``setPrice``."""
        for index, asset_id, price in changes:
            self.world.market.marketplace.set_price(self.producers[index].account, asset_id, price)  # type: ignore[attr-defined]

    def play_round(self, round_number: int) -> RoundFigures:
        """A wave of builders enters if it is due (:meth:`enter`), then every consumer classifies its share
        of this round's queries, paying per call."""
        self.enter(round_number)
        spec = self.scenario.consumers
        spent_before = sum(self.consumer_paid(i) for i in range(len(self.consumers)))
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
        figures = RoundFigures(round=round_number, answered=answered, correct=correct,
                               consumer_spend=sum(self.consumer_paid(i) for i in range(len(self.consumers)))
                               - spent_before)  # fmt: skip
        self.rounds.append(figures)
        return figures

    def _next_queries(self, count: int) -> np.ndarray:
        rows = (np.arange(count) + self.query_cursor) % len(self.y_test)
        self.query_cursor += count
        return rows

    def consumer_paid(self, index: int) -> int:
        """What consumer ``index`` paid for calls so far (vouchers; deposits still locked are not spent)."""
        return sum(amount for _asset, amount in self.vouchers(index))

    def vouchers(self, index: int) -> list[tuple[int, int]]:
        """Every call consumer ``index`` paid: (model id, price) in base units, from its wallet's audit ledger."""
        entries = self.consumers[index].wallet.ledger.entries()  # type: ignore[attr-defined]
        return [(e.asset_id, e.amount) for e in entries if e.kind == "voucher"]

    def builder_spend(self, index: int) -> int:
        """What builder ``index`` paid (licenses), from its wallet's audit ledger (base units)."""
        return self.builders[index].wallet.ledger.total()  # type: ignore[attr-defined]

    def settle(self) -> int:
        """The gateway's settler claims every voucher answered; returns the base units claimed."""
        return self.world.settle().claimed

    def close(self) -> None:
        """Nothing to let go of: the world closes the gateway."""

    def release_and_withdraw(self) -> int:
        """Royalties up every model's lineage, then every payee (and the treasury) claims; returns the
        protocol fee the treasury released (base units)."""
        payout = self.world.release_and_withdraw(
            models=[m.model_id for m in self.models],
            payees=self.producers + self.builders,
            assets=self.datasets + [m.model_id for m in self.models],
        )
        return payout.protocol_fee

    # ------------------------------------------------------------------ the ledger and the chain

    def expected(self) -> ExpectedLedger:
        """What every party should hold, from the payments made and the vault shares (floor at every hop)."""
        fee_bps = self.scenario.protocol.fee_bps
        fee_share, net = fee_bps * BPS, BPS - fee_bps
        model_paid = {m.model_id: 0 for m in self.models}
        for index in range(len(self.consumers)):
            for asset_id, amount in self.vouchers(index):
                model_paid[asset_id] += amount
        received = dict(self.license_paid)  # dataset vault inflows: licenses + royalties from models
        builder_revenue, fee = {}, 0
        for model in self.models:
            paid = model_paid[model.model_id]
            fee += _vault_split(paid, fee_share)
            for parent, bps in zip(model.parents, model.shares_bps, strict=True):
                if bps:
                    received[parent] += _vault_split(paid, bps * net)
            builder_revenue[model.index] = _vault_split(paid, (BPS - sum(model.shares_bps)) * net)
        producer_revenue = {}
        for index, asset_id in enumerate(self.datasets):
            fee += _vault_split(received[asset_id], fee_share)
            producer_revenue[index] = _vault_split(received[asset_id], BPS * net)
        return ExpectedLedger(producer=producer_revenue, builder=builder_revenue, fee=fee,
                              consumer_paid=sum(model_paid.values()), model_paid=model_paid)  # fmt: skip

    def ground_truth(self, model_paid: dict[int, int]) -> tuple[list[ModelTruth], list[float]]:
        """Every model's exact Shapley values of its parents on the test set, and every producer identity's
        ground-truth value in base units (``simulation.groundtruth``); ``model_paid`` by model id."""
        scenario = self.scenario
        games = TruthGames(self.shards, self.X_test, self.y_test, k=BuildPlan.k, seed=scenario.seed)
        parents = [[self.datasets.index(asset) for asset in model.parents] for model in self.models]
        truths = [games.truth(model.model, shards, seed=scenario.seed * 1000 + model.index)
                  for model, shards in zip(self.models, parents, strict=True)]  # fmt: skip
        net = (BPS - scenario.protocol.fee_bps) / BPS
        pools = [model_paid[m.model_id] * scenario.builders.royalty_bps / BPS * net**2 for m in self.models]
        return truths, producer_values(truths, parents, pools, len(self.shards))

    def result(self, channel_revenue_claimed: int, protocol_fee: int) -> RunResult:
        """The run's figures, each read back from the chain where the chain holds it."""
        world, scenario = self.world, self.scenario
        model_paid = {m.model_id: 0 for m in self.models}
        for index in range(len(self.consumers)):
            for asset_id, amount in self.vouchers(index):
                model_paid[asset_id] += amount
        truths, true_value = self.ground_truth(model_paid)
        net_share = BPS * (BPS - scenario.protocol.fee_bps)
        producers = []
        split = scenario.producers.split
        for i, party in enumerate(self.producers):
            revenue = world.balance(party.address)
            license_revenue = _vault_split(self.license_paid[self.datasets[i]], net_share)
            owner = self.owners[i]
            producers.append(ProducerResult(
                index=i, address=party.address, asset_id=self.datasets[i],
                label_noise=scenario.producers.label_noise[owner], duplicate_of=scenario.producers.duplicate_of(owner),
                rows=self.shards[i].rows, revenue=revenue, true_value=float(true_value[i]),
                # the rest of what reached a producer came from model calls, up the lineage
                license_revenue=license_revenue, royalty_revenue=revenue - license_revenue,
                owner=owner if split is not None else None,
            ))  # fmt: skip
        builders = []
        for model, party, truth in zip(self.models, self.builders, truths, strict=True):
            spend = self.builder_spend(model.index)
            revenue = world.balance(party.address) - (scenario.builders.budget_units - spend)
            builders.append(BuilderResult(index=model.index, address=party.address, model_id=model.model_id,
                                          model=model.model, rule=model.rule, spend=spend, revenue=revenue,
                                          accuracy=model.accuracy, parents=model.parents,
                                          shares_bps=model.shares_bps, call_revenue=model_paid[model.model_id],
                                          true_values=truth.values, true_stderr=truth.stderr,
                                          true_shares=truth.shares))  # fmt: skip
        consumers = tuple(
            ConsumerResult(index=i, address=p.address, spend=self.consumer_paid(i), answered=self.answered[i],
                           correct=self.correct[i], value=self.correct[i] * scenario.consumers.value_per_correct_units)
            for i, p in enumerate(self.consumers)
        )  # fmt: skip
        return RunResult(
            scenario=scenario.name, seed=scenario.seed, producers=tuple(producers), builders=tuple(builders),
            consumers=consumers, protocol_fee=protocol_fee, consumer_spend=sum(c.spend for c in consumers),
            rounds=tuple(self.rounds), channel_revenue_claimed=channel_revenue_claimed, chain=world.activity(),
            split_owner=split.owner if split is not None else None,
        )  # fmt: skip
