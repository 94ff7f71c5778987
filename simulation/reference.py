"""An independent model of a run's economics, in pure Python: who earns what from the decisions a run made.

The engines move every payment through the contracts and read each party's revenue back from the chain.
This module recomputes those revenues from the run's *decisions* alone — which datasets each builder
licensed and at what price, the royalty shares it set, and how many calls each consumer paid each model for
(``vouchers.csv``) — with the contracts' arithmetic: a vault pays a payee holding ``s`` of its
``TOTAL_SHARES`` shares ``floor(received · s / TOTAL_SHARES)`` (``RevenueVault.claimable``), the protocol
treasury holds ``fee_bps · BPS`` shares of every vault, a model vault's royalty payees are its parents'
dataset vaults (``shares_bps · (BPS - fee_bps)`` shares each) and its builder holds the rest of the net.
A test (``tests/simulation/test_data_products.py``) checks it against chain-backed runs to the unit.
Licenses count in the round they were bought in and calls in the round they were paid in, so prices that change
over rounds are followed as paid.

:func:`split_revenue` is the arithmetic; :func:`recompute` applies it to a run's files; :class:`MarketModel`
replays the same decisions as a `Mesa <https://mesa.readthedocs.io>`_ 3 agent-based model (``pip install
'agentmarket[mesa]'``), its ``DataCollector`` recording every party's revenue after each round — the
standard tool researchers know, as an alternative to the simulator's own bookkeeping.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from marketplace.chain.units import BPS, TOTAL_SHARES


@dataclass(frozen=True)
class ModelTerms:
    """A published model as the economics see it: its asset id, the builder (index) that owns it, the dataset
    asset ids it pays royalties to and their shares in basis points (of 10,000), in the same order."""

    model_id: int
    builder: int
    parents: tuple[int, ...]
    shares_bps: tuple[int, ...]


@dataclass(frozen=True)
class Revenue:
    """What every party can withdraw (base units): ``producer`` by dataset asset id, ``producer_license``
    the part of it from license sales, ``builder`` by builder index, ``fee`` the protocol treasury's."""

    producer: dict[int, int]
    producer_license: dict[int, int]
    builder: dict[int, int]
    fee: int

    @property
    def total(self) -> int:
        """Everything paid out (base units)."""
        return sum(self.producer.values()) + sum(self.builder.values()) + self.fee


def _claimable(received: int, shares: int) -> int:
    """What a payee holding ``shares`` of a vault's ``TOTAL_SHARES`` can withdraw of ``received`` (floor)."""
    return received * shares // TOTAL_SHARES


def split_revenue(
    fee_bps: int, license_paid: Mapping[int, int], models: Sequence[ModelTerms], model_paid: Mapping[int, int]
) -> Revenue:
    """Every party's revenue once everything is released: ``license_paid`` (dataset id -> licenses paid into its
    vault), ``model_paid`` (model id -> calls paid into its vault, claimed), ``fee_bps`` the protocol fee.

    A model vault pays ``floor(paid · shares_bps · (BPS - fee_bps) / TOTAL_SHARES)`` into each parent's
    dataset vault and the builder ``floor(paid · (BPS - Σ shares_bps) · (BPS - fee_bps) / TOTAL_SHARES)``;
    a dataset vault pays its producer ``floor(received · BPS · (BPS - fee_bps) / TOTAL_SHARES)``; the fee is
    ``floor(x · fee_bps · BPS / TOTAL_SHARES)`` of every vault's ``x``. Raises ``KeyError`` for a parent
    that is not in ``license_paid``."""
    if not 0 <= fee_bps <= BPS:
        raise ValueError(f"fee_bps must be between 0 and {BPS}, got {fee_bps}")
    fee_shares, net = fee_bps * BPS, BPS - fee_bps
    received = dict(license_paid)
    builder: dict[int, int] = defaultdict(int)
    fee = 0
    for model in models:
        paid = model_paid.get(model.model_id, 0)
        fee += _claimable(paid, fee_shares)
        for parent, bps in zip(model.parents, model.shares_bps, strict=True):
            if bps:
                received[parent] += _claimable(paid, bps * net)
        builder[model.builder] += _claimable(paid, (BPS - sum(model.shares_bps)) * net)
    producer = {asset: _claimable(amount, BPS * net) for asset, amount in received.items()}
    licenses = {asset: _claimable(amount, BPS * net) for asset, amount in license_paid.items()}
    fee += sum(_claimable(amount, fee_shares) for amount in received.values())
    return Revenue(producer=producer, producer_license=licenses, builder=dict(builder), fee=fee)


@dataclass(frozen=True)
class Decisions:
    """What a run decided, everything the economics need: the fee, the datasets (asset ids by producer identity),
    the licenses bought per round (``licenses[r]`` maps dataset id to what was paid for its licenses in round
    ``r``; round 0 is the set-up), the models' terms, and the calls paid per round (``calls[r]`` maps (consumer,
    model id) to (calls, amount) in round ``r + 1``)."""

    fee_bps: int
    datasets: tuple[int, ...]
    licenses: tuple[dict[int, int], ...]
    models: tuple[ModelTerms, ...]
    calls: tuple[dict[tuple[int, int], tuple[int, int]], ...]

    def license_paid(self, through_round: int | None = None) -> dict[int, int]:
        """Licenses paid per dataset id in rounds 0 to ``through_round`` (None: all; base units)."""
        paid = dict.fromkeys(self.datasets, 0)
        for round_licenses in self.licenses[: None if through_round is None else through_round + 1]:
            for asset, amount in round_licenses.items():
                paid[asset] += amount
        return paid

    def model_paid(self, through_round: int | None = None) -> dict[int, int]:
        """Calls paid per model id in rounds 1 to ``through_round`` (None: all; base units)."""
        paid: dict[int, int] = defaultdict(int)
        for round_calls in self.calls[:through_round]:
            for (_consumer, model_id), (_count, amount) in round_calls.items():
                paid[model_id] += amount
        return dict(paid)

    def revenue(self, through_round: int | None = None) -> Revenue:
        """Every party's revenue had the run stopped after round ``through_round`` (None: all rounds) and
        everything been released then (round 0: the set-up's licenses only)."""
        return split_revenue(self.fee_bps, self.license_paid(through_round), self.models,
                             self.model_paid(through_round))  # fmt: skip


def decisions_of(
    fee_bps: int,
    datasets: Sequence[int],
    builders: Iterable[Any],
    licenses: Iterable[tuple[int, int, int]],
    voucher_rows: Iterable[Mapping[str, Any]],
    rounds: int,
) -> Decisions:
    """A run's decisions from its parts: ``datasets`` (asset ids by producer identity), ``builders`` (objects with
    ``index``, ``model_id``, ``parents``, ``shares_bps``: ``BuilderResult``), ``licenses`` ((round, dataset id,
    amount) for every license bought; a round past ``rounds`` counts in the last), ``voucher_rows`` (rows of
    ``vouchers.csv``: round, consumer, model_id, calls, amount) over ``rounds`` rounds."""
    bought: list[dict[int, int]] = [defaultdict(int) for _ in range(rounds + 1)]
    for number, asset, amount in licenses:
        bought[min(number, rounds)][asset] += amount
    models = tuple(ModelTerms(int(b.model_id), int(b.index), tuple(b.parents), tuple(b.shares_bps)) for b in builders)
    calls: list[dict[tuple[int, int], tuple[int, int]]] = [{} for _ in range(rounds)]
    for row in voucher_rows:
        key = (int(row["consumer"]), int(row["model_id"]))
        count, amount = calls[int(row["round"]) - 1].get(key, (0, 0))
        calls[int(row["round"]) - 1][key] = (count + int(row["calls"]), amount + int(row["amount"]))
    return Decisions(fee_bps=fee_bps, datasets=tuple(datasets), licenses=tuple(dict(r) for r in bought),
                     models=models, calls=tuple(calls))  # fmt: skip


def run_decisions(run_dir: Path) -> Decisions:
    """The decisions of the run written into ``run_dir`` (by ``simulation.runner.simulate``), from its files only:
    the scenario as run (``scenario.toml``: the fee, the rounds), ``result.json`` (dataset ids, each builder's
    parents and shares), the licenses bought (``transactions.csv``'s ``license`` rows: which dataset, what was
    paid, in which round) and the calls paid (``vouchers.csv``: per round, consumer and model)."""
    from simulation.results import RunResult
    from simulation.scenario import load_scenario

    scenario = load_scenario(run_dir / "scenario.toml")
    result = RunResult.from_json(json.loads((run_dir / "result.json").read_text(encoding="utf-8")))
    producers = sorted(result.producers, key=lambda p: p.index)
    vault_of = {f"producer {p.index}'s dataset vault": p.asset_id for p in producers}
    licenses = [(int(row["round"]), vault_of[row["payee_name"]], int(row["amount"]))
                for row in _rows(run_dir / "transactions.csv") if row["kind"] == "license"]  # fmt: skip
    return decisions_of(scenario.protocol.fee_bps, [p.asset_id for p in producers],
                        sorted(result.builders, key=lambda b: b.index), licenses, _rows(run_dir / "vouchers.csv"),
                        scenario.rounds)  # fmt: skip


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def recompute(run_dir: Path) -> Revenue:
    """Every party's revenue recomputed from the decisions of the run in ``run_dir`` (:func:`run_decisions`)."""
    return run_decisions(run_dir).revenue()


# --------------------------------------------------------------------------------------------------
# The same economics as a Mesa model


def mesa_model(decisions: Decisions) -> Any:
    """A :class:`MarketModel` (Mesa 3) replaying ``decisions``; raises ``ImportError`` naming the extra when
    Mesa is not installed."""
    try:
        import mesa
    except ImportError:
        raise ImportError("the Mesa model needs mesa: pip install 'agentmarket[mesa]'") from None

    class Party(mesa.Agent):
        """A party of the market: its role, index, and what it may withdraw after the last step."""

        def __init__(self, model: mesa.Model, role: str, index: int) -> None:
            super().__init__(model)
            self.role, self.index, self.revenue = role, index, 0

        def step(self) -> None:
            """Read this party's revenue from the model's books (the vaults settle at the model level)."""
            books: Revenue = self.model.books  # type: ignore[attr-defined]
            if self.role == "producer":
                self.revenue = books.producer.get(self.index, 0)
            elif self.role == "builder":
                self.revenue = books.builder.get(self.index, 0)
            else:
                self.revenue = books.fee

    class MarketModel(mesa.Model):
        """Rounds of paid calls over fixed licenses (round 0); ``datacollector`` records every party's revenue so
        far after every step, as agent variables and in its ``revenue`` table (:meth:`revenue_table`)."""

        def __init__(self) -> None:
            super().__init__()
            self.running = True  # Mesa's flag: False once the last round was played
            self.decisions, self.round = decisions, 0
            self.books = decisions.revenue(0)
            for asset in decisions.datasets:
                Party(self, "producer", asset)
            for terms in decisions.models:
                Party(self, "builder", terms.builder)
            Party(self, "protocol", 0)
            self.datacollector = mesa.DataCollector(
                agent_reporters={"role": "role", "index": "index", "revenue": "revenue"},
                tables={"revenue": ["round", "role", "index", "revenue"]},
            )
            self._collect()

        def step(self) -> None:
            """One round: its calls paid, every vault released, every party's revenue read."""
            self.round += 1
            self.books = self.decisions.revenue(self.round)
            self._collect()
            if self.round >= len(self.decisions.calls):
                self.running = False

        def _collect(self) -> None:
            self.agents.do("step")
            self.datacollector.collect(self)
            for party in self.agents:
                row = {"round": self.round, "role": party.role, "index": party.index, "revenue": party.revenue}
                self.datacollector.add_table_row("revenue", row)

        def revenue_table(self) -> list[tuple[int, str, int, int]]:
            """(round, role, index, revenue so far) for every party after every step (producers by dataset id)."""
            table = self.datacollector.tables["revenue"]
            return list(zip(table["round"], table["role"], table["index"], table["revenue"], strict=True))

    return MarketModel()
