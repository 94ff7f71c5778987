"""The three roles of the marketplace, each an ``Agent`` with a brain suited to it.

- ``ProviderAgent`` publishes dataset shards (content uploaded, hash on chain) and withdraws earnings.
- ``BuilderAgent`` buys datasets, downloads and verifies them, trains a real scikit-learn model on
  them, sets its parents' royalty shares with a data-value rule, publishes the model with those
  upstream shares, and serves it through the server's model endpoint.
- ``BuyerAgent`` answers a stream of classification queries by paying for model calls (any brain:
  a policy or an LLM); its utility is measured by real correctness against held-out labels.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from agents.brains import Action, Brain, Outcome, PricedAsset, ScriptedBrain
from agents.datavalue import RULES, RoyaltyInputs, to_bps
from agents.economy import DatasetOffer, DataValuation, choose_parents, lineage_signal
from agents.errors import AgentError
from agents.learning import Shard, accuracy, decode_shard, encode_shard, predictor, train_model
from agents.runtime import Agent, Idle, RunReport
from agents.wallet import AgentWallet

#: Attaches an inference handler to a served model id (e.g. on an in-process server).
ServeModel = Callable[[int, Callable[[Any], Any]], None]


def _require(outcomes: list[Outcome], what: str) -> list[Any]:
    """The results of a scripted step, or an ``AgentError`` naming the first failure."""
    for outcome in outcomes:
        if not outcome.ok:
            assert outcome.error is not None
            raise AgentError(f"{what} failed: {outcome.error['type']}: {outcome.error['message']}")
    return [o.result for o in outcomes]


def _nothing() -> Generator[list[Action], list[Outcome], None]:
    yield from ()


# ---------------------------------------------------------------------- provider


@dataclass(frozen=True)
class Listing:
    """A dataset a provider sells: its rows, its license price, and a name for the catalog (published as
    :func:`listing_uri`, which states the rows)."""

    shard: Shard
    price: int
    name: str


class ProviderAgent:
    """Publishes datasets, then withdraws what their vaults earned."""

    def __init__(self, wallet: AgentWallet, *, trace_path: Path | None = None) -> None:
        self.published: list[int] = []
        self.agent = Agent(None, wallet, ScriptedBrain(_nothing()), trace_path=trace_path)

    def publish(self, listings: list[Listing]) -> list[int]:
        """Publish every listing all or nothing (on chain unlisted, content uploaded, then listed: the
        ``publish_asset`` tool over ``MarketplaceClient.publish``); returns the new asset ids. Raises
        ``AgentError`` naming the first failure (an asset left unlisted is named with its state)."""

        def script() -> Generator[list[Action], list[Outcome], None]:
            actions = [
                Action("publish_asset", {"content": encode_shard(item.shard).decode(), "price": item.price,
                                         "kind": "dataset", "uri": listing_uri(item.name, item.shard.rows)})
                for item in listings
            ]  # fmt: skip
            outcomes = yield actions
            self.published += [result["asset_id"] for result in _require(outcomes, "publishing")]

        self.agent.brain = ScriptedBrain(script())
        self.agent.run(max_steps=2).raise_if_interrupted()
        return self.published[-len(listings) :]

    def withdraw(self) -> dict[int, int]:
        """Release everything this provider can claim; returns the amount per asset."""
        return self.agent.client.withdraw()


# ---------------------------------------------------------------------- builder


@dataclass
class BuildPlan:
    """What a builder makes: model type, the rule for its parents' shares, and how it sells the model."""

    model: Literal["knn", "logreg"]
    rule: str
    royalty_bps: int  # the part of every payment to the model that goes up to its parents
    price_per_call: int
    X_val: np.ndarray
    y_val: np.ndarray
    parents: list[int] | None = None  # None: chosen from the catalog by ``valuation`` (``choose_parents``)
    valuation: DataValuation = field(default_factory=lambda: DataValuation(value=50_000_000, saturation_rows=500))
    # The price per call from (license cost, bps passed up) once the parents and shares are known; None:
    # ``price_per_call``.
    price_for: Callable[[int, int], int] | None = None
    k: int = 5
    seed: int = 0
    # Every dataset trained on stays in the on-chain lineage: a parent the rule values at zero still gets
    # this many bps (taken from the largest shares), unless the rule is ``none`` or the royalty is 0.
    min_parent_bps: int = 1
    # Credit rows found in several parents to the parent published first (``agents.datavalue``, provenance).
    provenance: bool = False

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise AgentError(f"unknown royalty rule {self.rule!r}; choose one of: {', '.join(RULES)}")
        if not 0 <= self.royalty_bps <= 9_900:
            raise AgentError(f"royalty_bps must be within 0..9900, not {self.royalty_bps}")


@dataclass
class BuiltModel:
    """What the builder published."""

    model_id: int
    parents: list[int]
    weights: list[float]
    shares_bps: list[int]
    validation_accuracy: float
    rows: int
    estimator: Any = field(repr=False)
    price: int = 0  # per call, base units, as published


class BuilderAgent:
    """Buys data, trains on it, publishes the model with upstream royalties, and serves it."""

    def __init__(
        self,
        wallet: AgentWallet,
        plan: BuildPlan,
        serve: ServeModel,
        *,
        trace_path: Path | None = None,
        download_dir: Path | None = None,
    ) -> None:
        self.plan, self.serve = plan, serve
        self.built: BuiltModel | None = None
        self.agent = Agent(None, wallet, ScriptedBrain(self._script()), trace_path=trace_path,
                           download_dir=download_dir)  # fmt: skip

    def run(self) -> BuiltModel:
        """Carry out the plan; raises ``AgentError`` naming the step that failed."""
        report = self.agent.run(max_steps=5).raise_if_interrupted()
        if self.built is None:
            raise AgentError(f"the builder stopped before publishing ({report.reason})")
        return self.built

    def _choose_parents(self) -> tuple[list[int], int]:
        """The parents to buy and what their licenses cost (base units, at the catalog's prices)."""
        offers = {o.asset_id: o for o in catalog_offers(self.agent.client)}
        if self.plan.parents is not None:
            parents = list(self.plan.parents)
            return parents, sum(offers[p].price if p in offers else self.agent.client.asset(p).price for p in parents)
        parents = choose_parents(list(offers.values()), self.agent.wallet.guard.remaining, self.plan.valuation)
        return parents, sum(offers[p].price for p in parents)

    def _script(self) -> Generator[list[Action], list[Outcome], None]:
        plan = self.plan
        parents, cost = self._choose_parents()
        if not parents:
            raise AgentError("no dataset to build on: none listed within the budget")
        _require((yield [Action("buy_license", {"asset_id": p}) for p in parents]), "buying licenses")
        downloaded = _require((yield [Action("download", {"asset_id": p}) for p in parents]), "downloading")
        shards = [decode_shard(Path(result["path"]).read_bytes()) for result in downloaded]
        X, y, estimator, score, weights, shares = design_model(plan, shards, parents)
        price = plan.price_per_call if plan.price_for is None else plan.price_for(cost, sum(shares))
        card = {
            "type": "model-card", "estimator": plan.model, "features": int(X.shape[1]),
            "classes": sorted(int(c) for c in np.unique(y)), "trained_on": parents, "rows": len(y),
            "validation_accuracy": round(score, 6), "royalty_rule": plan.rule,
            "input": {"features": [[0.0] * int(X.shape[1])]}, "output": {"labels": [0]},
        }  # fmt: skip
        royalties = [{"asset_id": p, "share_bps": s} for p, s in zip(parents, shares, strict=True) if s > 0]
        publish = Action("publish_asset", {"content": json.dumps(card, sort_keys=True), "kind": "model",
                                           "price": price, "uri": f"model:{plan.model}:{plan.rule}",
                                           "parents": royalties})  # fmt: skip
        (published,) = _require((yield [publish]), "publishing the model")
        self.serve(published["asset_id"], predictor(estimator))
        self.built = BuiltModel(published["asset_id"], parents, weights, shares, score, len(y), estimator, price)


#: How many datasets (and models) a builder sees in the catalog (one page of ``GET /v1/assets``, by asset id).
CATALOG_PAGE = 50


def listing_uri(name: str, rows: int) -> str:
    """A dataset listing's URI stating its rows (``"<name>:rows=<rows>"``): what a builder knows of its size
    before buying (checked after download: the content hash is on chain)."""
    return f"{name}:rows={rows}"


def rows_of(uri: str) -> int | None:
    """The rows a listing URI states (:func:`listing_uri`), or None if it states none."""
    _, sep, rows = uri.rpartition(":rows=")
    return int(rows) if sep and rows.isdigit() else None


def catalog_offers(client: Any) -> list[DatasetOffer]:
    """What a builder sees before buying, read through its SDK client: every listed dataset of the catalog's
    first page that states its rows, at its current price, with the lineage signal of the first page of
    models (each model's on-chain royalty shares to its parents' vaults and the parents' stated rows,
    :func:`agents.economy.lineage_signal`)."""
    page = client.assets(kind="dataset", limit=CATALOG_PAGE).items
    rows = {item.asset_id: n for item in page if (n := rows_of(item.uri)) is not None}
    models = client.assets(kind="model", limit=CATALOG_PAGE).items
    signal = {}
    if models:
        lineage = client.lineage()
        shares = [(m.parents, [lineage.node(m.asset_id).shares_of(lineage.node(p).vault) for p in m.parents])
                  for m in models]  # fmt: skip
        signal = lineage_signal(shares, rows)
    return [
        DatasetOffer(item.asset_id, item.price, rows[item.asset_id], signal.get(item.asset_id))
        for item in page
        if item.listed and item.asset_id in rows
    ]


def design_model(plan: BuildPlan, shards: list[Shard], parents: Sequence[int] | None = None) -> tuple[
        np.ndarray, np.ndarray, Any, float, list[float], list[int]]:  # fmt: skip
    """Train ``plan.model`` on the parents' ``shards`` and value them by ``plan.rule``; returns (X, y, the
    estimator, its validation accuracy, the rule's weights, the parents' shares in bps with the floor).
    ``parents`` are the shards' asset ids (needed by ``plan.provenance``; ``ValueError`` without them)."""
    X = np.concatenate([s.X for s in shards])
    y = np.concatenate([s.y for s in shards])
    estimator = train_model(plan.model, X, y, seed=plan.seed, k=plan.k)
    score = accuracy(estimator, plan.X_val, plan.y_val)
    inputs = RoyaltyInputs(parents=shards, X_val=plan.X_val, y_val=plan.y_val, model=plan.model, k=plan.k,
                           seed=plan.seed, parent_ids=None if parents is None else list(parents),
                           provenance=plan.provenance)  # fmt: skip
    weights = [float(w) for w in RULES[plan.rule](inputs)]
    shares = _with_floor(to_bps(weights, plan.royalty_bps), plan.min_parent_bps)
    return X, y, estimator, score, weights, shares


# ---------------------------------------------------------------------- open-ended errands


class Catalog:
    """What a role puts on offer: the listed assets (of ``kind``, if given), re-read every ``refresh_every``
    steps; ``with_ratings`` adds each asset's average rating (one more read per asset)."""

    def __init__(self, *, kind: str | None = None, with_ratings: bool = False, refresh_every: int = 10) -> None:
        self.kind, self.with_ratings, self.refresh_every = kind, with_ratings, refresh_every
        self._offers: list[PricedAsset] = []
        self._fetched_at = -1

    def offers(self, agent: Agent) -> list[PricedAsset]:
        """The offers, from the server's catalog (cached between refreshes)."""
        if self._fetched_at < 0 or agent.steps - self._fetched_at >= self.refresh_every:
            items = [i for i in agent.client.assets(kind=self.kind, limit=50).items if i.listed]
            self._offers = [
                PricedAsset(i.asset_id, i.kind, i.price,
                      agent.client.asset(i.asset_id).rating.average if self.with_ratings else None)
                for i in items
            ]  # fmt: skip
            self._fetched_at = agent.steps
        return self._offers


class Errand:
    """A free-form task for an LLM agent, with the whole listed catalog on offer; the brain says when it is done."""

    done = False

    def __init__(self, task: str, *, refresh_every: int = 10) -> None:
        self.task = task
        self.catalog = Catalog(refresh_every=refresh_every)

    def query(self) -> Any:
        """No work item: the task is the prompt."""
        return None

    def offers(self, agent: Agent) -> list[PricedAsset]:
        """Every listed asset."""
        return self.catalog.offers(agent)

    def record(self, outcomes: list[Outcome]) -> dict[int, float]:
        """Nothing to score."""
        return {}

    def summary(self) -> dict[str, Any]:
        """Nothing to report."""
        return {}


def _with_floor(shares: list[int], floor: int) -> list[int]:
    """``shares`` with every zero raised to ``floor``, paid for by the largest shares (sum unchanged)."""
    shares = list(shares)
    if not any(shares) or floor <= 0:
        return shares
    for index, share in enumerate(shares):
        if share == 0:
            donor = max(range(len(shares)), key=lambda i: (shares[i], -i))
            if shares[donor] <= floor:
                break
            shares[donor] -= floor
            shares[index] = floor
    return shares


# ---------------------------------------------------------------------- buyer


class ClassificationTask:
    """Classify a stream of held-out rows by paying for model calls; a right answer is worth ``value_per_success``."""

    def __init__(self, X: np.ndarray, y: np.ndarray, *, value_per_success: int, refresh_every: int = 25) -> None:
        self.X, self.y = X, y
        self.value_per_success = value_per_success
        self.catalog = Catalog(kind="model", with_ratings=True, refresh_every=refresh_every)
        self.index = 0
        self.correct = 0
        self.paid_calls = 0
        self.per_model: dict[int, list[int]] = {}  # model id -> [calls, correct]
        self.task = (
            f"Classify {len(y)} rows, one per step. For each work item, call invoke_model on a model with "
            f'input {{"features": [[...the row...]]}}; the model answers {{"labels": [label]}}. Each right '
            f"answer is worth {value_per_success} base units to you: prefer models that are accurate for their price."
        )

    @property
    def done(self) -> bool:
        """True once every row was answered."""
        return self.index >= len(self.y)

    def query(self) -> Any:
        """The next row to classify, as a model input."""
        return None if self.done else {"features": [self.X[self.index].tolist()]}

    def offers(self, agent: Agent) -> list[PricedAsset]:
        """The listed models and their ratings."""
        return self.catalog.offers(agent)

    def record(self, outcomes: list[Outcome]) -> dict[int, float]:
        """Score the step's model answer (the last successful call) against the true label. A model that
        refused the row (it serves another task; the call cost nothing) scores 0 and the row stays."""
        answers = [o for o in outcomes if o.ok and o.action.tool == "invoke_model"]
        if not answers or self.done:
            refused = [
                o.action.arguments.get("model_id")
                for o in outcomes
                if o.action.tool == "invoke_model" and o.error and o.error.get("type") == "ActionRefused"
            ]
            return {model: 0.0 for model in refused if isinstance(model, int)}
        self.paid_calls += len(answers)
        result = answers[-1].result
        try:
            label = int(result["output"]["labels"][0])
        except (KeyError, IndexError, TypeError, ValueError):
            label = None
        right = label == int(self.y[self.index])
        self.index += 1
        self.correct += right
        stats = self.per_model.setdefault(result["model_id"], [0, 0])
        stats[0] += 1
        stats[1] += right
        return {result["model_id"]: 1.0 if right else 0.0}

    def summary(self) -> dict[str, Any]:
        """Answers, accuracy and the value they earned."""
        return {
            "answered": self.index, "correct": self.correct, "paid_calls": self.paid_calls,
            "accuracy": self.correct / self.index if self.index else 0.0,
            "value_earned": self.correct * self.value_per_success,
            "per_model": {str(k): {"calls": v[0], "correct": v[1]} for k, v in self.per_model.items()},
        }  # fmt: skip


class BuyerAgent:
    """Pays for model calls to get a task done, with any brain; stops when done or out of budget."""

    def __init__(
        self,
        wallet: AgentWallet,
        brain: Brain,
        task: ClassificationTask,
        *,
        identity: int | None = None,
        trace_path: Path | None = None,
        on_step: Callable[[Any], None] | None = None,
    ) -> None:
        self.task = task
        self.agent = Agent(identity, wallet, brain, role=task, trace_path=trace_path,
                           on_step=on_step)  # fmt: skip

    def run(self, max_steps: int = 1_000) -> RunReport:
        """Work through the task; the report says why it stopped and how well it did."""
        return self.agent.run(max_steps=max_steps)

    def utility(self) -> int:
        """Value of the right answers less what was paid (deposits still locked in channels not counted)."""
        wallet = self.agent.wallet
        return self.task.correct * self.task.value_per_success - (wallet.guard.spent - wallet.locked)


__all__ = [
    "BuildPlan",
    "BuilderAgent",
    "BuiltModel",
    "BuyerAgent",
    "ClassificationTask",
    "Errand",
    "Idle",
    "Listing",
    "ProviderAgent",
]
