"""The agent runtime: observe → decide → act → record, until the task is done, the budget is spent,
the brain has nothing more to do, the step limit is reached, or the user presses Ctrl-C.

Every step is appended to a JSONL trace (what was seen, what was decided, what happened, the spend),
and a final ``stop`` line says why the run ended. Typed tool errors (over budget, bad arguments,
unknown tool, not found, payment refused) are outcomes the brain sees, not crashes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel

from agents.brains import Action, Brain, Observation, Outcome, PricedAsset
from agents.errors import AgentError
from agents.tools import TOOLS, Tool, ToolContext, run_tool
from agents.wallet import AgentWallet
from marketplace.client import MarketplaceClient


class Role(Protocol):
    """What an agent is for: the task text, the current work item, the offers, and how outcomes score."""

    task: str

    def query(self) -> Any:
        """The current work item (``None`` when there is none)."""
        ...

    def offers(self, agent: Agent) -> list[PricedAsset]:
        """What the agent may pay for now."""
        ...

    def record(self, outcomes: list[Outcome]) -> dict[int, float]:
        """Score a step's outcomes; returns the reward earned per asset id."""
        ...

    @property
    def done(self) -> bool:
        """True once the task is complete."""
        ...

    def summary(self) -> dict[str, Any]:
        """Task figures for the trace and the final report."""
        ...


class Idle:
    """A role with no task of its own (scripted brains carry their plan)."""

    task = "follow your script"
    done = False

    def query(self) -> Any:
        """No work item."""
        return None

    def offers(self, agent: Agent) -> list[PricedAsset]:
        """No offers."""
        return []

    def record(self, outcomes: list[Outcome]) -> dict[int, float]:
        """Nothing to score."""
        return {}

    def summary(self) -> dict[str, Any]:
        """Nothing to report."""
        return {}


@dataclass
class StepRecord:
    """One step of a run, as written to the trace."""

    step: int
    time: float
    query: Any
    actions: list[dict[str, Any]]
    outcomes: list[dict[str, Any]]
    rewards: dict[int, float]
    spent: int
    budget_left: int


@dataclass
class RunReport:
    """How a run ended."""

    reason: str  # task_complete | budget_exhausted | brain_finished | max_steps | interrupted
    steps: int
    spent: int
    budget_left: int
    task: dict[str, Any] = field(default_factory=dict)
    usage: dict[str, Any] = field(default_factory=dict)

    def raise_if_interrupted(self) -> RunReport:
        """Re-raise the Ctrl-C that stopped the run (after its trace was written), else return self."""
        if self.reason == "interrupted":
            raise KeyboardInterrupt
        return self


class Agent:
    """An agent: an on-chain identity, a wallet with caps (and the client it pays with), a brain, and the tools
    it may use."""

    def __init__(
        self,
        identity: int | None,
        wallet: AgentWallet,
        brain: Brain,
        tools: dict[str, Tool] | None = None,
        *,
        role: Role | None = None,
        trace_path: Path | None = None,
        download_dir: Path | None = None,
        on_step: Callable[[StepRecord], None] | None = None,
    ) -> None:
        self.identity = identity
        self.wallet = wallet
        self.brain = brain
        self.tools = dict(TOOLS if tools is None else tools)
        self.role: Role = role or Idle()
        self.trace_path = trace_path
        self.on_step = on_step
        self.context = ToolContext(wallet, download_dir or Path(".agentmarket") / "downloads")
        self.steps = 0

    @property
    def client(self) -> MarketplaceClient:
        """The wallet's client (reads and non-paying actions; payments go through the wallet)."""
        return self.wallet.client

    # ------------------------------------------------------------------ acting

    def act(self, actions: list[Action]) -> list[Outcome]:
        """Run ``actions`` in order; a typed agent error becomes that action's error outcome."""
        outcomes = []
        for action in actions:
            try:
                result = run_tool(self.context, action.tool, action.arguments, tools=self.tools)
            except AgentError as exc:
                outcomes.append(Outcome(action, error={"type": type(exc).__name__, "message": str(exc)}))
                continue
            outcomes.append(Outcome(action, result=_jsonable(result)))
        return outcomes

    def observe(self, outcomes: list[Outcome], rewards: dict[int, float]) -> Observation:
        """What the brain sees now."""
        return Observation(
            step=self.steps,
            task=self.role.task,
            budget_left=self.wallet.guard.remaining,
            balance=self.client.market.token.balance_of(self.wallet.address),
            offers=self.role.offers(self),
            query=self.role.query(),
            outcomes=outcomes,
            rewards=rewards,
            open_channels=self.channel_credit(),
            value_per_success=getattr(self.role, "value_per_success", 0),
        )

    def channel_credit(self) -> dict[int, int]:
        """Per model, the most credit left in one of this run's channels (a call draws from one channel)."""
        credit: dict[int, int] = {}
        for channel in self.wallet.channels.values():
            credit[channel.asset_id] = max(credit.get(channel.asset_id, 0), channel.deposit - channel.drawn)
        return credit

    # ------------------------------------------------------------------ the loop

    def run(self, max_steps: int = 100) -> RunReport:
        """Run until the task is done, the budget is spent, the brain stops, ``max_steps``, or Ctrl-C."""
        outcomes: list[Outcome] = []
        rewards: dict[int, float] = {}
        reason = "max_steps"
        try:
            for _ in range(max_steps):
                if self.role.done:
                    reason = "task_complete"
                    break
                observation = self.observe(outcomes, rewards)
                actions = self.brain.decide(observation)
                if not actions:
                    reason = "budget_exhausted" if _cannot_afford(observation) else "brain_finished"
                    break
                query = observation.query
                outcomes = self.act(actions)
                rewards = self.role.record(outcomes)
                self.steps += 1
                self._record(StepRecord(
                    step=self.steps, time=time.time(), query=query,
                    actions=[{"tool": a.tool, "arguments": a.arguments} for a in actions],
                    outcomes=[o.to_json() for o in outcomes], rewards=rewards,
                    spent=self.wallet.guard.spent, budget_left=self.wallet.guard.remaining,
                ))  # fmt: skip
            else:
                reason = "task_complete" if self.role.done else "max_steps"
        except KeyboardInterrupt:
            reason = "interrupted"
        usage = getattr(self.brain, "usage", None)
        report = RunReport(
            reason=reason, steps=self.steps, spent=self.wallet.guard.spent, budget_left=self.wallet.guard.remaining,
            task=self.role.summary(), usage=dict(vars(usage)) if usage is not None else {},
        )  # fmt: skip
        self._write({"event": "stop", **vars(report)})
        return report

    # ------------------------------------------------------------------ trace

    def _record(self, record: StepRecord) -> None:
        self._write({"event": "step", **vars(record)})
        if self.on_step:
            self.on_step(record)

    def _write(self, line: dict[str, Any]) -> None:
        if self.trace_path is None:
            return
        self.trace_path.parent.mkdir(parents=True, exist_ok=True)
        with self.trace_path.open("a") as handle:
            handle.write(json.dumps(line, default=str) + "\n")


def read_trace(path: Path) -> Iterator[dict[str, Any]]:
    """The lines of a JSONL trace, oldest first."""
    with path.open() as handle:
        for line in handle:
            if line.strip():
                yield json.loads(line)


def _cannot_afford(observation: Observation) -> bool:
    prices = [o.price for o in observation.offers]
    if not prices:
        return observation.budget_left <= 0
    credit = max(observation.open_channels.values(), default=0)
    return observation.budget_left < min(prices) and credit < min(prices)


def _jsonable(result: BaseModel | dict[str, Any]) -> Any:
    return result.model_dump(mode="json") if isinstance(result, BaseModel) else result
