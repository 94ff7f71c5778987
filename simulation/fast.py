"""The fast engine: the same run as ``simulation.engine``'s full stack, without HTTP, the SDK or web3 per call.

Every payment still executes on the real contracts, on the same chain; what changes is how it gets there
(``simulate --engine fast``, see ``simulation.engine.choose_engine`` for the default):

- parties are the same seeded accounts; their transactions (funding, publishing, licenses, channel
  deposits, claims, releases) are pre-encoded with eth_abi, signed with coincurve, their nonces counted
  here, and sent in batches with every receipt checked (:mod:`marketplace.chain.rawtx`): a failed
  transaction stops the run with the contract's error;
- a round's decisions are taken first — each consumer's brain (the same seeded policy brains), budget guard
  (the wallet's ``BudgetGuard``) and task (``ClassificationTask``) step as ``agents.runtime.Agent.run``
  steps them, and a model answers with its estimator's prediction for the row, computed once per model
  for every held-out row (the same labels as the served predictor, which predicts row by row) — then the
  channels they opened go on chain in one batch (per consumer one approval of its deposits, then its opens),
  then every call's voucher is signed (coincurve, ``VoucherHasher``) and checked by the gateway's own
  ``ChannelGate`` against a ``VoucherLedger``, in process, and committed in batches: a voucher the gate
  refuses stops the run;
- at the end the settler's claims (``claim(channelId, highest voucher, debited, signature)`` for every
  ledger entry with unclaimed calls), the royalty releases up the lineage (``plan_release``), every payee's
  withdrawal (``plan_withdrawal``) and the treasury's fee releases go out in batches.

So the economic results — every payment, revenue, spend and metric — equal the full engine's for the same
scenario and seed (``tests/test_fast_engine.py``); gas and transaction counts differ (no ``setListed``
after an upload, one approval per consumer and round instead of one per channel). Reconciliation with the
run's own ledger is ``simulation.engine``'s.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from eth_account.signers.local import LocalAccount

from agents.brains import Action, Observation, Outcome, PricedAsset, policy_brain
from agents.economy import DatasetOffer, choose_parents
from agents.errors import AgentError
from agents.learning import encode_shard
from agents.roles import CATALOG_PAGE, ClassificationTask, design_model, listing_uri
from agents.wallet import Budget, BudgetGuard, ChannelState
from marketplace.chain.lineage import Lineage, Release, VaultNode, VaultReads, plan_release, plan_withdrawal
from marketplace.chain.rawtx import BatchSender, Calldata, topic_id
from marketplace.chain.records import AssetKind, Channel
from marketplace.chain.units import BPS
from marketplace.payments.channels import ChannelGate, VoucherLedger
from marketplace.protocol.vouchers import VoucherHasher
from simulation.engine import PublishedModel, _Run, model_signal
from simulation.results import ChainActivity, RoundFigures, RunResult
from simulation.scenario import Scenario
from simulation.world import GAS_ETH, World, derived_account

#: Gas limits (generous: the gas used is what the chain reports, exactly).
GAS = {"eth": 21_000, "mint": 200_000, "approve": 100_000, "publish": 3_000_000, "buy": 1_000_000,
       "open": 400_000, "claim": 400_000, "release": 400_000}  # fmt: skip
#: ``ChannelArgs.ttl_seconds``'s default: how long a consumer's channels run.
CHANNEL_TTL = 3600
#: Answered calls per group commit of the voucher ledger (``ChannelGate.commit_many``).
COMMIT_BATCH = 2_000


@dataclass(frozen=True)
class FastParty:
    """A party of a fast run: its role, index and seeded account (the same as the full engine's)."""

    role: str
    index: int
    account: LocalAccount

    @property
    def address(self) -> str:
        """The party's checksummed address."""
        return self.account.address


@dataclass
class _Consumer:
    """What a consumer's wallet would hold: its guard, its channels (by local id) and the calls it paid."""

    guard: BudgetGuard
    channels: dict[int, ChannelState] = field(default_factory=dict)
    vouchers: list[tuple[int, int]] = field(default_factory=list)  # (model id, price)
    paid: int = 0


@dataclass(frozen=True)
class _Open:
    consumer: int
    local_id: int
    model_id: int
    deposit: int


@dataclass(frozen=True)
class _Call:
    consumer: int
    local_id: int
    model_id: int
    price: int
    ceiling: int


class _PrefetchedGate(ChannelGate):
    """The gateway's ``ChannelGate``, unchanged, except that channels it has not seen yet are read in one
    batch right after they were opened (``prefetch``) instead of one ``eth_call`` each on first use."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.prefetched: dict[int, Channel] = {}

    def _read_channel(self, channel_id: int) -> Channel | None:
        channel = self.prefetched.pop(channel_id, None)
        return channel if channel is not None else super()._read_channel(channel_id)


class FastRun(_Run):
    """A run whose parties call the contracts directly (see the module); same steps as the full engine's."""

    def __init__(self, scenario: Scenario, world: World) -> None:
        super().__init__(scenario, world)
        chain, market = world.chain, world.market
        self.sender = BatchSender(chain)
        self.token = Calldata(market.token.contract.abi)
        self.market_abi = Calldata(market.marketplace.contract.abi)
        self.channels_abi = Calldata(market.channels.contract.abi)
        self.vault_abi = Calldata(chain.contract("RevenueVault", market.token.address).abi)
        events = market.marketplace.contract.events
        self.asset_published = bytes.fromhex(events.AssetPublished().topic.removeprefix("0x"))  # type: ignore[attr-defined]
        self.channel_opened = bytes.fromhex(market.channels.contract.events.ChannelOpened().topic.removeprefix("0x"))  # type: ignore[attr-defined]
        self.relayer = world.relayer
        self.ledger = VoucherLedger(world.work_dir / "server" / "vouchers.sqlite", synchronous="normal")
        # Nothing reprices or delists during a run: the gate reads each model's asset once.
        self.gate = _PrefetchedGate(market, self.ledger, receiver_authorizer=self.relayer.address,
                                    asset_max_age=float("inf"))  # fmt: skip
        self.hasher = VoucherHasher(market.channels.domain)
        self.first_block = world.first_block
        self.licenses: dict[int, int] = {}  # builder index -> spent on licenses
        self.state: list[_Consumer] = []
        self.chain_channel: dict[int, int] = {}  # local channel id -> on-chain id
        self.next_local = 1
        self.answers: dict[int, np.ndarray] = {}  # model id -> its label for every held-out row
        self.model_price: dict[int, int] = {}

    # ------------------------------------------------------------------ set-up

    def publish_shards(self) -> None:
        """Fund every party (gas and tUSD), then each producer publishes its shard, listed, in order."""
        self._fund_everyone()
        token = self.world.market.token.address
        for index, shard in enumerate(self.shards):
            party = self._party("producer", index)
            content_hash = hashlib.sha256(encode_shard(shard)).digest()
            price = self.listing_price(index)
            uri = listing_uri(f"{self.scenario.name}-producer-{index}", shard.rows)
            data = self.market_abi.encode("publish", int(AssetKind.DATASET), content_hash, uri, price, token, 0,
                                          [party.address], [BPS], [], [], True)  # fmt: skip
            asset_id = self._publish(party, data, f"producer {index}'s dataset")
            self.producers.append(party)
            self.datasets.append(asset_id)
            self.license_paid[asset_id] = 0
            self.prices[asset_id] = price

    def _fund_everyone(self) -> None:
        """ETH for gas and each role's tUSD budget, in one batch from the deployer (as ``World.fund``)."""
        deployer, token = self.world.deployer, self.world.market.token.address
        scenario = self.scenario
        for role, count, tusd in (("producer", len(self.owners), 0),  # every identity (a split owner has several)
                                  ("builder", scenario.builders.count, scenario.builders.budget_units),
                                  ("consumer", scenario.consumers.count, scenario.consumers.budget_units)):  # fmt: skip
            for index in range(count):
                address = derived_account(scenario.seed, role, index).address
                self.sender.fresh(address)
                self.sender.queue(deployer, address, gas=GAS["eth"], value=GAS_ETH, label=f"gas for {role} {index}")
                if tusd:
                    self.sender.queue(deployer, token, self.token.encode("mint", address, tusd), gas=GAS["mint"],
                                      label=f"{tusd} tUSD for {role} {index}")  # fmt: skip
                self.world.names[address] = role
        self.sender.flush()

    def _party(self, role: str, index: int) -> FastParty:
        return FastParty(role, index, derived_account(self.scenario.seed, role, index))

    def _publish(self, owner: FastParty, data: bytes, label: str) -> int:
        """Publish (one flush: asset ids follow the order of publication, as in the full engine)."""
        self.sender.queue(owner.account, self.world.market.marketplace.address, data, gas=GAS["publish"],
                          label=f"publishing {label}")  # fmt: skip
        (receipt,) = self.sender.flush().receipts
        (asset_id,) = topic_id(receipt, self.world.market.marketplace.address, self.asset_published)
        return asset_id

    def offers(self) -> list[DatasetOffer]:
        """What a builder's catalog read gives (``agents.roles.catalog_offers``), from the same facts: the first
        page of datasets by id at their current prices with their stated rows, and the lineage signal of the
        first page of models."""
        page = sorted(self.datasets)[:CATALOG_PAGE]
        rows = {asset: shard.rows for asset, shard in zip(self.datasets, self.shards, strict=True) if asset in page}
        signal = model_signal(sorted(self.models, key=lambda m: m.model_id)[:CATALOG_PAGE], rows)
        return [DatasetOffer(a, self.prices[a], rows[a], signal.get(a)) for a in page]

    def build(self, index: int) -> None:
        """Builder ``index`` buys by value for money, trains, sets royalties by the rule, prices, publishes."""
        spec, market = self.scenario.builders, self.world.market
        party = self._party("builder", index)
        plan = self.plan(index)
        guard = BudgetGuard(Budget(spec.budget_units, spec.budget_units, spec.budget_units))
        parents = choose_parents(self.offers(), guard.remaining, plan.valuation)
        if not parents:
            raise AgentError("no dataset to build on: none listed within the budget")
        for parent in parents:
            price = self.prices[parent]
            guard.check(parent, price, price)
            guard.commit(parent, price)
            self.sender.queue(party.account, market.token.address,
                              self.token.encode("approve", market.marketplace.address, price),
                              gas=GAS["approve"], label=f"builder {index} approves {price}")  # fmt: skip
            self.sender.queue(party.account, market.marketplace.address,
                              self.market_abi.encode("buy", parent, price), gas=GAS["buy"],
                              label=f"builder {index} buys a license to {parent}")  # fmt: skip
            self.license_paid[parent] += price
            self.sold.add(parent)
        self.sender.flush()
        self.licenses[index] = guard.spent
        shards = [self.shards[self.datasets.index(p)] for p in parents]
        _X, _y, estimator, score, _weights, shares = design_model(plan, shards, parents)
        assert plan.price_for is not None
        call_price = plan.price_for(guard.spent, sum(shares))
        royalties = [(p, s) for p, s in zip(parents, shares, strict=True) if s > 0]
        uri = f"model:{plan.model}:{plan.rule}"
        data = self.market_abi.encode("publish", int(AssetKind.MODEL), hashlib.sha256(uri.encode()).digest(), uri,
                                      call_price, market.token.address, 0, [party.address],
                                      [BPS - sum(s for _, s in royalties)], [p for p, _ in royalties],
                                      [s for _, s in royalties], True)  # fmt: skip
        model_id = self._publish(party, data, f"builder {index}'s model")
        self.answers[model_id] = np.asarray([int(label) for label in estimator.predict(self.X_test)])
        self.model_price[model_id] = call_price
        self.builders.append(party)
        self.models.append(PublishedModel(index=index, model_id=model_id, model=plan.model, rule=plan.rule,
                                          accuracy=score, parents=tuple(parents),
                                          shares_bps=tuple(shares)))  # fmt: skip

    def ready_consumers(self) -> None:
        """Every consumer's seeded policy brain and budget guard (funded with everyone at the start)."""
        spec_c = self.scenario.consumers
        for index in range(spec_c.count):
            self.consumers.append(self._party("consumer", index))
            self.brains.append(policy_brain(spec_c.brain, seed=self.scenario.seed * 1000 + index))
            self.state.append(_Consumer(BudgetGuard(Budget(spec_c.budget_units, spec_c.budget_units,
                                                           spec_c.budget_units))))  # fmt: skip

    def set_prices(self, changes: list[tuple[int, int, int]]) -> None:
        """Each (producer identity, dataset id, new price) as the owner's ``setPrice``, in one batch."""
        address = self.world.market.marketplace.address
        for index, asset_id, price in changes:
            self.sender.queue(self._party("producer", index).account, address,
                              self.market_abi.encode("setPrice", asset_id, price), gas=GAS["buy"],
                              label=f"producer {index} reprices {asset_id} to {price}")  # fmt: skip
        self.sender.flush()

    # ------------------------------------------------------------------ rounds

    def play_round(self, round_number: int) -> RoundFigures:
        """A wave of builders enters if due (``_Run.enter``); then decide every consumer's calls, open the
        channels they need on chain, then check every voucher."""
        self.enter(round_number)
        spec = self.scenario.consumers
        spent_before = sum(c.paid for c in self.state)
        offers = [
            PricedAsset(m.model_id, "model", self._price(m.model_id), None)
            for m in sorted(self.models, key=lambda m: m.model_id)
        ]
        opens: list[_Open] = []
        calls: list[_Call] = []
        answered = correct = 0
        for index in range(len(self.consumers)):
            rows = self._next_queries(spec.queries_per_round)
            task = ClassificationTask(
                self.X_test[rows], self.y_test[rows], value_per_success=spec.value_per_correct_units
            )
            self._consume(index, task, rows, offers, opens, calls, max_steps=2 * spec.queries_per_round)
            self.answered[index] += task.index
            self.correct[index] += task.correct
            answered, correct = answered + task.index, correct + task.correct
        self._open_channels(opens)
        self._pay_calls(calls)
        figures = RoundFigures(round=round_number, answered=answered, correct=correct,
                               consumer_spend=sum(c.paid for c in self.state) - spent_before)  # fmt: skip
        self.rounds.append(figures)
        return figures

    def _consume(self, index: int, task: ClassificationTask, rows: np.ndarray, offers: list[PricedAsset],
                 opens: list[_Open], calls: list[_Call], *, max_steps: int) -> None:  # fmt: skip
        """One consumer's errand, stepped as ``Agent.run`` steps a ``BuyerAgent`` (observe, decide, act, record)."""
        brain, state = self.brains[index], self.state[index]
        outcomes: list[Outcome] = []
        rewards: dict[int, float] = {}
        for step in range(max_steps):
            if task.done:
                break
            credit: dict[int, int] = {}
            for channel in state.channels.values():
                credit[channel.asset_id] = max(credit.get(channel.asset_id, 0), channel.deposit - channel.drawn)
            observation = Observation(step=step, task=task.task, budget_left=state.guard.remaining,
                                      balance=self.scenario.consumers.budget_units - state.guard.spent + 0,
                                      offers=offers, query=task.query(), outcomes=outcomes, rewards=rewards,
                                      open_channels=credit, value_per_success=task.value_per_success)  # fmt: skip
            actions = brain.decide(observation)
            if not actions:
                break
            row = int(rows[task.index])
            outcomes = [self._act(index, action, row, opens, calls) for action in actions]
            rewards = task.record(outcomes)

    def _act(self, index: int, action: Action, row: int, opens: list[_Open], calls: list[_Call]) -> Outcome:
        """What the wallet and the gateway would do with one of a brain's actions (a policy brain sends only
        ``open_channel`` and ``invoke_model``); a typed agent error becomes the outcome's error, as in ``Agent.act``."""
        state, args = self.state[index], action.arguments
        assert isinstance(args, dict)
        try:
            if action.tool == "open_channel":
                model_id, deposit = int(args["asset_id"]), int(args["deposit"])
                state.guard.check(model_id, deposit, self._price(model_id))
                state.guard.commit(model_id, deposit)
                local_id, self.next_local = self.next_local, self.next_local + 1
                state.channels[local_id] = ChannelState(model_id, deposit)
                opens.append(_Open(index, local_id, model_id, deposit))
                return Outcome(action, result={"asset_id": model_id, "amount": deposit, "channel_id": local_id})
            if action.tool == "invoke_model":
                model_id = int(args["model_id"])
                open_ones = [(c.deposit - c.drawn, cid) for cid, c in state.channels.items() if c.asset_id == model_id]
                if not open_ones:
                    raise AgentError(f"no open channel for model {model_id}; call open_channel first")
                local_id = max(open_ones)[1]
                channel, price = state.channels[local_id], self._price(model_id)
                state.guard.check_draw(model_id, price, channel.deposit, channel.drawn)
                channel.drawn += price
                calls.append(_Call(index, local_id, model_id, price, channel.drawn))
                state.vouchers.append((model_id, price))
                state.paid += price
                label = int(self.answers[model_id][row])
                return Outcome(action, result={"model_id": model_id, "channel_id": local_id,
                                               "output": {"labels": [label]}, "paid": price,
                                               "channel_remaining": channel.deposit - channel.drawn})  # fmt: skip
        except AgentError as exc:
            return Outcome(action, error={"type": type(exc).__name__, "message": str(exc)})
        raise AgentError(f"the fast engine runs policy brains only: it cannot act on {action.tool!r}")

    def _open_channels(self, opens: list[_Open]) -> None:
        """Open every channel of the round in one batch — per consumer one ``approve`` of the sum of its deposits
        (which its opens then use up exactly, as one approval per open would), then its ``open``s — learn their
        ids from the receipts, and read them for the gate in one batch of calls."""
        if not opens:
            return
        market = self.world.market
        expiry = self.world.chain.timestamp() + CHANNEL_TTL
        by_consumer: dict[int, list[_Open]] = {}
        for item in opens:
            by_consumer.setdefault(item.consumer, []).append(item)
        ordered: list[_Open] = []
        at: list[int] = []  # where each open's receipt is among the batch's
        queued = self.sender.pending
        for consumer, items in by_consumer.items():
            payer, who, total = self.consumers[consumer], f"consumer {consumer}", sum(i.deposit for i in items)
            self.sender.queue(payer.account, market.token.address,  # type: ignore[attr-defined]
                              self.token.encode("approve", market.channels.address, total),
                              gas=GAS["approve"], label=f"{who} approves deposits of {total}")  # fmt: skip
            queued += 1
            for item in items:
                self.sender.queue(payer.account, market.channels.address,  # type: ignore[attr-defined]
                                  self.channels_abi.encode("open", item.model_id, market.token.address, item.deposit,
                                                           expiry, payer.address, self.relayer.address),
                                  gas=GAS["open"], label=f"{who} opens a channel to model {item.model_id}")  # fmt: skip
                ordered.append(item)
                at.append(queued)
                queued += 1
        receipts = self.sender.flush().receipts
        ids = []
        for item, index in zip(ordered, at, strict=True):
            (channel_id,) = topic_id(receipts[index], market.channels.address, self.channel_opened)
            self.chain_channel[item.local_id] = channel_id
            ids.append(channel_id)
        answers = self.sender.call_many([(market.channels.address, self.channels_abi.encode("getChannel", c))
                                         for c in ids])  # fmt: skip
        for channel_id, data in zip(ids, answers, strict=True):
            self.gate.prefetched[channel_id] = Channel(channel_id, *self.channels_abi.decode("getChannel", data)[0])

    def _pay_calls(self, calls: list[_Call]) -> None:
        """Every call's voucher, signed by its consumer and checked by the gateway's gate (``reserve_voucher``:
        ``reserve`` without the header's base64 JSON, which nothing carries in process), then committed
        :data:`COMMIT_BATCH` at a time (``commit_many``: one ledger write each, the same rows as one commit per
        call). A voucher the gate refuses raises its refusal and stops the run."""
        reserve, consumers, chain_channel = self.gate.reserve_voucher, self.consumers, self.chain_channel
        sign = self.hasher.voucher
        for start in range(0, len(calls), COMMIT_BATCH):
            reservations = []
            for call in calls[start : start + COMMIT_BATCH]:
                signer = consumers[call.consumer].account  # type: ignore[attr-defined]
                voucher = sign(signer, chain_channel[call.local_id], call.ceiling)
                reservations.append(reserve(voucher, call.price, asset_id=call.model_id))
            self.gate.commit_many(reservations)

    # ------------------------------------------------------------------ the end

    def settle(self) -> int:
        """The settler's claims — ``debited`` under the highest voucher, per channel — in one batch from the
        relayer; returns what they claimed (base units)."""
        entries = self.ledger.claimable()
        channels = self.world.market.channels.address
        for entry in entries:
            self.sender.queue(self.relayer, channels, self.channels_abi.encode("claim", entry.channel_id, entry.ceiling,
                                                                               entry.debited, entry.signature),
                              gas=GAS["claim"], label=f"the claim of channel {entry.channel_id}")  # fmt: skip
        self.sender.flush()
        self.ledger.mark_claimed_many([(entry.channel_id, entry.debited) for entry in entries])
        return sum(entry.debited for entry in entries)

    def release_and_withdraw(self) -> int:
        """Royalties up every model's lineage, then every payee's withdrawal, then the treasury's fee from every
        asset's vault (as ``World.release_and_withdraw``); returns the protocol fee released (base units)."""
        chain, market, deployer = self.world.chain, self.world.market, self.world.deployer
        lineage = self._lineage()
        reads = self._vault_reads(lineage)
        for model in self.models:
            self._release(deployer, plan_release(chain, lineage, model.model_id, reads=reads).releases)
        self.sender.flush()
        reads = self._vault_reads(lineage)
        for party in [*self.producers, *self.builders]:
            plan = plan_withdrawal(chain, lineage, party.address, reads=reads)
            self._release(party.account, plan.releases)  # type: ignore[attr-defined]
        self.sender.flush()
        token, treasury = market.token.address, deployer.address
        vaults = [lineage.node(a).vault for a in [*self.datasets, *(m.model_id for m in self.models)]]
        claimable = self.sender.call_many([(v, self.vault_abi.encode("claimable", token, treasury)) for v in vaults])
        for vault, data in zip(vaults, claimable, strict=True):
            if self.vault_abi.decode("claimable", data)[0] > 0:
                self.sender.queue(deployer, vault, self.vault_abi.encode("release", token, treasury),
                                  gas=GAS["release"], label=f"the fee release of vault {vault}")  # fmt: skip
        self.sender.flush()
        released = self.sender.call_many([(v, self.vault_abi.encode("released", token, treasury)) for v in vaults])
        return sum(self.vault_abi.decode("released", data)[0] for data in released)

    def _lineage(self) -> Lineage:
        """The royalty graph of every asset, read in two batches (``paymentTerms``, then each vault's ``payees``)
        instead of two calls per asset."""
        market = self.world.market
        assets = [*self.datasets, *(m.model_id for m in self.models)]
        terms = self.sender.call_many([(market.marketplace.address, self.market_abi.encode("paymentTerms", a))
                                       for a in assets])  # fmt: skip
        tokens_vaults = [self.market_abi.decode("paymentTerms", data) for data in terms]
        payees = self.sender.call_many([(vault, self.vault_abi.encode("payees")) for _token, vault in tokens_vaults])
        nodes = []
        for asset_id, (token, vault), data in zip(assets, tokens_vaults, payees, strict=True):
            accounts, shares = self.vault_abi.decode("payees", data)
            nodes.append(VaultNode(asset_id, vault, token, tuple(zip(accounts, shares, strict=True))))
        return Lineage(nodes)

    def _vault_reads(self, lineage: Lineage) -> VaultReads:
        """Every vault's ``totalReceived`` and every payee's ``released`` now, in one batch of calls (what the
        plans would read one call at a time)."""
        nodes = [lineage.node(a) for a in range(1, lineage.asset_count + 1)]
        received_keys = [(node.vault, node.token) for node in nodes]
        released_keys = [(node.vault, node.token, payee) for node in nodes for payee, _shares in node.payees]
        block = self.world.chain.block_number()
        answers = self.sender.call_many(
            [(v, self.vault_abi.encode("totalReceived", t)) for v, t in received_keys]
            + [(v, self.vault_abi.encode("released", t, p)) for v, t, p in released_keys]
        )
        values = [self.vault_abi.decode(name, data)[0] for name, data in
                  zip(["totalReceived"] * len(received_keys) + ["released"] * len(released_keys), answers,
                      strict=True)]  # fmt: skip
        return VaultReads(block, dict(zip(received_keys, values, strict=False)),
                          dict(zip(released_keys, values[len(received_keys) :], strict=True)))  # fmt: skip

    def _release(self, caller: LocalAccount, releases: tuple[Release, ...]) -> None:
        for step in releases:
            self.sender.queue(caller, step.vault, self.vault_abi.encode("release", step.token, step.payee),
                              gas=GAS["release"], label=f"release: {step.describe()}")  # fmt: skip

    def result(self, channel_revenue_claimed: int, protocol_fee: int) -> RunResult:
        """The run's figures (``_Run.result``), with gas and transactions summed from the blocks in batches."""
        result = super().result(channel_revenue_claimed, protocol_fee)
        chain = self.world.chain
        blocks = self.sender.blocks(self.first_block, chain.block_number())
        activity = ChainActivity(kind=chain.kind, chain_id=chain.chain_id, gas_used=sum(g for g, _ in blocks),
                                 tx_count=sum(n for _, n in blocks))  # fmt: skip
        return replace(result, chain=activity)

    # ------------------------------------------------------------------ the ledger

    def vouchers(self, index: int) -> list[tuple[int, int]]:
        """Every call consumer ``index`` paid: (model id, price)."""
        return self.state[index].vouchers

    def consumer_paid(self, index: int) -> int:
        """What consumer ``index`` paid for calls so far (base units)."""
        return self.state[index].paid if index < len(self.state) else 0

    def builder_spend(self, index: int) -> int:
        """What builder ``index`` paid for licenses (base units)."""
        return self.licenses[index]

    def close(self) -> None:
        """Close the voucher ledger."""
        self.ledger.close()

    # ------------------------------------------------------------------ helpers

    def _price(self, model_id: int) -> int:
        """A model's per-call price (base units), as published (nothing reprices during a run)."""
        return self.model_price[model_id]
