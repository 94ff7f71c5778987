"""Brains decide what an agent does next. One protocol: ``decide(observation) -> actions``.

- ``LLMBrain`` asks any OpenAI-compatible chat-completions server (Ollama, vLLM, llama.cpp server,
  OpenAI) through the ``openai`` SDK, offering the marketplace tools as functions. The outcome of every
  tool call, including refusals (bad arguments, unknown tool, over budget), is sent back to the model
  as the tool's reply in the next decision.
- Policy brains for simulations and offline demos choose among the models on offer for the current
  query: ``GreedyBrain`` (value per price), ``EpsilonGreedyBrain`` and ``UCBBrain`` (bandits over
  sellers, learning from the rewards the role reports) and ``RandomBrain``. All are seeded.

An empty action list means the brain has nothing more to do.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any, Protocol

from agents.errors import AgentError
from agents.tools import openai_tools


@dataclass(frozen=True)
class Action:
    """One tool call: ``arguments`` as the brain produced them (a dict, or a JSON string from an LLM; an
    empty string and the JSON ``null`` that small models send for a tool without parameters mean none)."""

    tool: str
    arguments: dict[str, Any] | str
    call_id: str = ""


@dataclass(frozen=True)
class Outcome:
    """What happened when an action ran: a JSON-able ``result``, or an ``error`` (type and message)."""

    action: Action
    result: Any = None
    error: dict[str, str] | None = None

    @property
    def ok(self) -> bool:
        """True if the tool returned a result."""
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        """The outcome as a JSON-able dict (for traces and for the LLM)."""
        if self.error is not None:
            return {"ok": False, "error": self.error}
        return {"ok": True, "result": self.result}


@dataclass(frozen=True)
class PricedAsset:
    """A model (or dataset) the agent could pay for, with what the agent knows of it."""

    asset_id: int
    kind: str
    price: int
    rating: float | None = None  # 0-100 average from the reputation registry, if any


@dataclass
class Observation:
    """What a brain sees at one step."""

    step: int
    task: str
    budget_left: int
    balance: int
    offers: list[PricedAsset] = field(default_factory=list)
    query: Any = None  # the role's current work item (e.g. features to classify), if any
    outcomes: list[Outcome] = field(default_factory=list)  # results of the previous step's actions
    rewards: dict[int, float] = field(default_factory=dict)  # reward per asset id earned last step
    open_channels: dict[int, int] = field(default_factory=dict)  # asset id -> credit left in its channel
    value_per_success: int = 0  # what a good answer is worth to the agent (base units), if the role says


class Brain(Protocol):
    """Decides the next actions from an observation; ``[]`` means done."""

    def decide(self, observation: Observation) -> list[Action]:
        """The actions to take next."""
        ...


# ---------------------------------------------------------------------- LLM


@dataclass
class Usage:
    """Token and cost accounting over a run."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0  # in the currency of the configured per-token prices


SYSTEM_PROMPT = """You are an autonomous agent trading on agentmarket, a marketplace of datasets and models
paid in tUSD (1 tUSD = 1,000,000 base units; every amount below is in base units).
Your task: {task}
Budget left this run: {budget_left}. Wallet balance: {balance}.
Models and datasets on offer (id, kind, price per license or per call, rating 0-100):
{offers}
Channels you hold (model id: credit left): {channels}
Use the tools to act. Never try to spend more than the budget left: such calls are refused.
To call a model you need an open payment channel for it (open_channel once, then invoke_model).
When the task is done, reply with a short final answer and no tool call."""


class LLMBrain:
    """A brain backed by an OpenAI-compatible chat-completions endpoint with tool calling."""

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str = "not-needed",
        max_actions_per_decision: int = 4,
        temperature: float = 0.0,
        price_per_1k_prompt: float = 0.0,
        price_per_1k_completion: float = 0.0,
        timeout: float = 120,
        client: Any = None,
    ) -> None:
        from openai import OpenAI

        self.model = model
        self.client = client or OpenAI(base_url=base_url, api_key=api_key, timeout=timeout, max_retries=1)
        self.max_actions = max_actions_per_decision
        self.temperature = temperature
        self.prices = (price_per_1k_prompt, price_per_1k_completion)
        self.usage = Usage()
        self.messages: list[dict[str, Any]] = []
        self.final_answer: str | None = None
        self._shown_query: Any = None
        self._tools = openai_tools()

    def decide(self, observation: Observation) -> list[Action]:
        """Send the observation (and the previous tool results) to the model; its tool calls are the actions."""
        from openai import OpenAIError

        system = {"role": "system", "content": _system_prompt(observation)}
        if not self.messages:
            self.messages = [system, {"role": "user", "content": _user_prompt(observation)}]
        else:
            self.messages[0] = system
            self.messages += [_tool_reply(outcome) for outcome in observation.outcomes]
            if observation.query is not None and observation.query != self._shown_query:
                self.messages.append({"role": "user", "content": _user_prompt(observation)})
        self._shown_query = observation.query
        try:
            response = self.client.chat.completions.create(
                model=self.model, messages=self.messages, tools=self._tools, temperature=self.temperature
            )
        except OpenAIError as exc:
            raise AgentError(f"the LLM endpoint failed: {exc}") from None
        self._account(response)
        if not response.choices:
            raise AgentError("the LLM endpoint returned no choices")
        message = response.choices[0].message
        calls = list(message.tool_calls or [])
        self.messages.append(_assistant_message(message.content, calls))
        if not calls:
            self.final_answer = message.content or ""
            return []
        actions = [Action(c.function.name, c.function.arguments or "{}", c.id) for c in calls[: self.max_actions]]
        for extra in calls[self.max_actions :]:
            # Refused without running: the model hears why in the tool reply.
            self.messages.append(
                _tool_reply(
                    Outcome(
                        Action(extra.function.name, extra.function.arguments or "{}", extra.id),
                        error={"type": "TooManyCalls", "message": f"at most {self.max_actions} tool calls a turn"},
                    )
                )
            )
        return actions

    def _account(self, response: Any) -> None:
        self.usage.requests += 1
        usage = getattr(response, "usage", None)
        if usage is None:
            return
        prompt, completion = usage.prompt_tokens or 0, usage.completion_tokens or 0
        self.usage.prompt_tokens += prompt
        self.usage.completion_tokens += completion
        self.usage.cost += prompt / 1000 * self.prices[0] + completion / 1000 * self.prices[1]


def _system_prompt(observation: Observation) -> str:
    offers = "\n".join(
        f"- {o.asset_id} {o.kind} price {o.price}" + (f" rating {o.rating:.0f}" if o.rating is not None else "")
        for o in observation.offers
    )
    channels = ", ".join(f"{k}: {v}" for k, v in observation.open_channels.items()) or "none"
    return SYSTEM_PROMPT.format(
        task=observation.task,
        budget_left=observation.budget_left,
        balance=observation.balance,
        offers=offers or "(none)",
        channels=channels,
    )


def _user_prompt(observation: Observation) -> str:
    if observation.query is None:
        return "Begin."
    return f"Step {observation.step}. Work item: {json.dumps(observation.query)}"


def _assistant_message(content: str | None, calls: list[Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": content or ""}
    if calls:
        message["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.function.name, "arguments": c.function.arguments}}
            for c in calls
        ]
    return message


def _tool_reply(outcome: Outcome) -> dict[str, Any]:
    return {"role": "tool", "tool_call_id": outcome.action.call_id, "content": json.dumps(outcome.to_json())}


# ---------------------------------------------------------------------- policies


class PolicyBrain:
    """Base of the seeded policy brains: pick an offer for the current query, then pay for a call to it.

    Opens a channel (``deposit_calls`` calls' worth) the first time a model is chosen, and again when its
    credit runs out. Rewards reported by the role update per-offer statistics. When the role says what a
    success is worth, only offers expected to pay are considered (:meth:`worth_paying`: expected value
    P(correct) * value - price >= 0); with none left the brain stops (it abstains rather than overpay).
    """

    name = "policy"

    def __init__(self, *, seed: int = 0, deposit_calls: int = 10) -> None:
        self.rng = random.Random(seed)
        self.deposit_calls = deposit_calls
        self.pulls: dict[int, int] = {}
        self.reward_sum: dict[int, float] = {}
        self.value = 0
        self.t = 0

    def decide(self, observation: Observation) -> list[Action]:
        """Choose a model for ``observation.query``; ``[]`` when there is no query or nothing affordable."""
        for asset_id, reward in observation.rewards.items():
            self.pulls[asset_id] = self.pulls.get(asset_id, 0) + 1
            self.reward_sum[asset_id] = self.reward_sum.get(asset_id, 0.0) + reward
        self.value = observation.value_per_success
        if observation.query is None:
            return []
        offers = [
            o
            for o in observation.offers
            if o.kind == "model"
            and (o.price <= observation.budget_left or observation.open_channels.get(o.asset_id, 0) >= o.price)
            and self.worth_paying(o)
        ]
        if not offers:
            return []
        self.t += 1
        choice = self.choose(sorted(offers, key=lambda o: o.asset_id))
        actions = []
        if observation.open_channels.get(choice.asset_id, 0) < choice.price:
            deposit = min(choice.price * self.deposit_calls, observation.budget_left)
            actions.append(Action("open_channel", {"asset_id": choice.asset_id, "deposit": max(deposit, choice.price)}))
        actions.append(Action("invoke_model", {"model_id": choice.asset_id, "input": observation.query}))
        return actions

    def worth_paying(self, offer: PricedAsset) -> bool:
        """Whether a call to ``offer`` is expected to pay: P(correct) * value >= price, with P(correct) the
        posterior mean of a uniform Beta(1, 1) prior updated by this brain's own outcomes with it
        (``(successes + 1) / (calls + 2)``). Always True when the role gives no value per success."""
        if not self.value:
            return True
        pulls = self.pulls.get(offer.asset_id, 0)
        successes = self.reward_sum.get(offer.asset_id, 0.0)
        return (successes + 1) / (pulls + 2) * self.value >= offer.price

    def mean(self, offer: PricedAsset) -> float:
        """Average reward observed for ``offer`` (0 if never tried)."""
        pulls = self.pulls.get(offer.asset_id, 0)
        return self.reward_sum.get(offer.asset_id, 0.0) / pulls if pulls else 0.0

    def net(self, offer: PricedAsset) -> float:
        """Mean reward less the price, in units of a success's value (just the mean if no value is known)."""
        return self.mean(offer) - (offer.price / self.value if self.value else 0.0)

    def choose(self, offers: list[PricedAsset]) -> PricedAsset:
        """The offer to pay for next."""
        raise NotImplementedError


class RandomBrain(PolicyBrain):
    """Uniformly random among affordable models."""

    name = "random"

    def choose(self, offers: list[PricedAsset]) -> PricedAsset:
        """A random offer."""
        return self.rng.choice(offers)


class GreedyBrain(PolicyBrain):
    """Highest estimated value per price: observed mean reward once tried, else the rating as a prior."""

    name = "greedy"

    def choose(self, offers: list[PricedAsset]) -> PricedAsset:
        """The offer with the best value per unit price (ties broken by the seeded RNG)."""

        def value(offer: PricedAsset) -> float:
            if self.pulls.get(offer.asset_id):
                estimate = self.mean(offer)
            else:
                estimate = (offer.rating if offer.rating is not None else 50.0) / 100
            return estimate / max(offer.price, 1)

        best = max(value(o) for o in offers)
        return self.rng.choice([o for o in offers if value(o) == best])


class EpsilonGreedyBrain(PolicyBrain):
    """With probability ``epsilon`` a random model, otherwise the best mean reward (less price) so far."""

    name = "epsilon-greedy"

    def __init__(self, *, epsilon: float = 0.1, **options: Any) -> None:
        super().__init__(**options)
        if not 0 <= epsilon <= 1:
            raise ValueError(f"epsilon must be within [0, 1], not {epsilon}")
        self.epsilon = epsilon

    def choose(self, offers: list[PricedAsset]) -> PricedAsset:
        """Explore with probability epsilon (and until every offer was tried once), else exploit."""
        untried = [o for o in offers if not self.pulls.get(o.asset_id)]
        if untried or self.rng.random() < self.epsilon:
            return self.rng.choice(untried or offers)
        best = max(self.net(o) for o in offers)
        return self.rng.choice([o for o in offers if self.net(o) == best])


class UCBBrain(PolicyBrain):
    """UCB1: mean reward (less price) plus ``c * sqrt(ln t / pulls)``; every offer is tried once first."""

    name = "ucb"

    def __init__(self, *, c: float = 1.0, **options: Any) -> None:
        super().__init__(**options)
        self.c = c

    def choose(self, offers: list[PricedAsset]) -> PricedAsset:
        """The offer with the highest upper confidence bound."""
        untried = [o for o in offers if not self.pulls.get(o.asset_id)]
        if untried:
            return self.rng.choice(untried)
        total = max(sum(self.pulls.get(o.asset_id, 0) for o in offers), 1)

        def bound(offer: PricedAsset) -> float:
            return self.net(offer) + self.c * math.sqrt(math.log(total) / self.pulls[offer.asset_id])

        best = max(bound(o) for o in offers)
        return self.rng.choice([o for o in offers if bound(o) == best])


class ScriptedBrain:
    """A fixed plan as a generator: it yields lists of actions and receives each list's outcomes back.

    Roles with a workflow (a provider publishing, a builder buying, training and publishing) use it, so
    their steps go through the same runtime, budget guard and trace as any other brain.
    """

    def __init__(self, script: Generator[list[Action], list[Outcome], None]) -> None:
        self.script = script
        self.started = False

    def decide(self, observation: Observation) -> list[Action]:
        """The script's next actions (it is sent the previous step's outcomes); ``[]`` when it ends."""
        try:
            if not self.started:
                self.started = True
                return next(self.script)
            return self.script.send(observation.outcomes)
        except StopIteration:
            return []


POLICIES: dict[str, type[PolicyBrain]] = {
    "greedy": GreedyBrain,
    "bandit": UCBBrain,
    "ucb": UCBBrain,
    "epsilon-greedy": EpsilonGreedyBrain,
    "random": RandomBrain,
}


def policy_brain(name: str, *, seed: int = 0, **options: Any) -> PolicyBrain:
    """The seeded policy brain called ``name`` (greedy, bandit/ucb, epsilon-greedy, random)."""
    try:
        cls = POLICIES[name]
    except KeyError:
        raise AgentError(f"unknown brain {name!r}; choose one of: llm, {', '.join(POLICIES)}") from None
    return cls(seed=seed, **options)


__all__ = [
    "Action",
    "Brain",
    "EpsilonGreedyBrain",
    "GreedyBrain",
    "LLMBrain",
    "Observation",
    "Outcome",
    "PolicyBrain",
    "PricedAsset",
    "RandomBrain",
    "ScriptedBrain",
    "UCBBrain",
    "Usage",
    "policy_brain",
]
