"""Scenario files: what a simulation runs, as TOML validated by pydantic.

A scenario names its data source, producers (shards, price, quality defects), builders (budget, model
kinds, royalty share), the royalty rule, consumers (budget, queries, value of a correct answer, brain),
the protocol fee, the number of rounds and the seed. Amounts are tUSD (strings or numbers in the file);
the ``*_units`` properties give base units. Per-producer lists (``shard_size``, ``label_noise``) may be
written as one number for all producers.

Every problem raises ``ScenarioError`` naming the file, the dotted key and what is allowed. Overrides
(``royalty.rule=equal``) and sweep grids (``parse_sweep``) go through the same validation.
"""

from __future__ import annotations

import copy
import itertools
import math
import re
import tomllib
import types
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal, InvalidOperation
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, get_args

import numpy as np
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from agents.brains import POLICIES
from agents.datavalue import RULES
from agents.economy import LICENSE_PRICING, REPRICING
from agents.errors import BadDataset
from agents.learning import MODEL_KINDS, SOURCES, SYNTHETIC_ROWS, load_csv, load_source
from marketplace.chain.units import BPS, DECIMALS, to_units
from marketplace.errors import AgentmarketError

#: A dotted key path such as ``royalty.rule`` or ``producers.count``.
_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*(\.[A-Za-z_][A-Za-z0-9_-]*)*")

DEFAULT_SHARD_SIZE = 150
DEFAULT_PRODUCERS = 4
MAX_PRODUCERS = 200


class ScenarioError(AgentmarketError):
    """A scenario file, override or sweep parameter is invalid; the message says where and what is allowed."""


# --------------------------------------------------------------------------------------------------
# Field types


def _problem(message: str, key: str | None = None) -> PydanticCustomError:
    """A validation error with our own message; ``key`` (dotted) extends the error's location."""
    context = {"message": message} if key is None else {"message": message, "key": key}
    return PydanticCustomError("scenario", "{message}", context)


def _between(low: float, high: float) -> AfterValidator:
    """Accept numbers in ``low..high`` (inclusive); the error states the range."""

    def check(value: float) -> float:
        if not low <= value <= high:
            raise _problem(f"{value} is out of range; must be between {low} and {high}")
        return value

    return AfterValidator(check)


def _one_of(allowed: Sequence[str], what: str) -> AfterValidator:
    """Accept one of ``allowed``; the error lists them."""

    def check(value: str) -> str:
        if value not in allowed:
            raise _problem(f"unknown {what} {value!r}; allowed: {', '.join(allowed)}")
        return value

    return AfterValidator(check)


def _amount(value: Any) -> str:
    """A tUSD amount (string or number) as a canonical string; checked with ``to_units``."""
    usage = f'must be a tUSD amount >= 0 with at most {DECIMALS} decimals, like "2.5"'
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise _problem(f"{usage}, got {value!r}")
    text = str(value).strip()
    try:
        finite = Decimal(text).is_finite()
    except InvalidOperation:
        finite = False
    if not finite:
        raise _problem(f"{usage}, got {value!r}")
    try:
        to_units(text)
    except AgentmarketError:
        raise _problem(f"{usage}, got {value!r}") from None
    return text


def _non_empty(value: str) -> str:
    """Reject blank strings."""
    if not value.strip():
        raise _problem("must not be empty")
    return value


Amount = Annotated[str, BeforeValidator(_amount)]
PRICING_POLICIES = ("fixed", "cost_recovery")
Bps = Annotated[int, _between(0, BPS)]
Rate = Annotated[float, _between(0.0, 1.0)]


class _Section(BaseModel):
    """Strict, immutable, no unknown keys."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


# --------------------------------------------------------------------------------------------------
# Sections


#: ``data.source`` values: the bundled and synthetic sources of ``agents.learning``, or ``csv`` (your own file).
DATA_SOURCES = (*SOURCES, "csv")


def _absolute(value: str) -> str:
    """A data file's path made absolute (against the working directory; ``load_scenario`` has already made a
    path written in a scenario file relative to that file absolute)."""
    if not value.strip():
        raise _problem("must name a CSV file")
    return str(Path(value).expanduser().absolute())


class DataSpec(_Section):
    """Where rows come from, split into producers' shards and a held-out set (half the builders' validation
    data, half consumers' queries and the true-value test set).

    ``source``: a bundled scikit-learn set, ``make_classification`` (seeded, ``rows`` rows: as many distinct
    rows as a large scenario needs), or ``csv``: your own file at ``path`` (relative to the scenario file), every
    column a numeric feature but ``label`` (``agents.learning.load_csv``)."""

    source: Annotated[str, _one_of(DATA_SOURCES, "data source")] = "digits"
    test_fraction: Annotated[float, _between(0.05, 0.95)] = 0.3
    path: Annotated[str, AfterValidator(_absolute)] | None = None
    label: Annotated[str, AfterValidator(_non_empty)] = "label"
    rows: Annotated[int, _between(100, 1_000_000)] = SYNTHETIC_ROWS

    @model_validator(mode="after")
    def _check_file(self) -> DataSpec:
        """``csv`` names a readable file with the label column and numbers elsewhere; no other source has a path."""
        if self.source == "csv":
            if self.path is None:
                raise _problem('data.source = "csv" needs data.path, the CSV file to read', "path")
            try:
                load_csv(self.path, self.label)
            except BadDataset as exc:
                raise _problem(str(exc), "path") from None
        elif self.path is not None:
            raise _problem(f'only data.source = "csv" reads a file, not {self.source!r}; set source = "csv" or '
                           "remove data.path", "path")  # fmt: skip
        return self

    def load(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """Features (float64) and labels (int64): the file's for ``csv``, else the named source's (``seed``
        and ``rows`` for ``make_classification``). Both engines read their data through this."""
        if self.source == "csv":
            assert self.path is not None  # checked by the validator
            return load_csv(self.path, self.label)
        return load_source(self.source, seed=seed, rows=self.rows)

    def row_count(self) -> int:
        """How many rows the source has."""
        if self.source == "csv":
            return len(self.load(0)[1])
        return source_rows(self.source, self.rows if self.source == "make_classification" else 0)

    def train_rows(self) -> int:
        """Rows left for producers' shards after holding out ``test_fraction`` (as scikit-learn rounds it)."""
        total = self.row_count()
        return total - math.ceil(self.test_fraction * total)

    def query_rows(self) -> int:
        """Distinct held-out rows consumers' queries cycle through (half the held-out rows, rounded up)."""
        held = self.row_count() - self.train_rows()
        return held - held // 2


class ProtocolSpec(_Section):
    """Marketplace settings: the protocol fee in basis points of every payment."""

    fee_bps: Bps = 100


class DuplicateSpec(_Section):
    """Free riding: producer ``producer`` replaces ``rate`` of its rows with copies of producer ``source``'s rows.

    ``price`` (tUSD) is what the copier asks for its license; a strategic free rider undercuts the original
    (builders buy the cheapest shards first). Unset: ``producers.price``, like everyone else.
    """

    producer: Annotated[int, _between(0, MAX_PRODUCERS - 1)]
    source: Annotated[int, _between(0, MAX_PRODUCERS - 1)]
    rate: Rate = 1.0
    price: Amount | None = None


class SplitSpec(_Section):
    """A Sybil producer: owner ``owner`` (a producer index) publishes its one shard split into ``identities``
    near-equal shards, each under its own address and at the full license price. ``identities = 1`` is the
    same owner unsplit (the control for the Sybil gain)."""

    owner: Annotated[int, _between(0, MAX_PRODUCERS - 1)]
    identities: Annotated[int, _between(1, MAX_PRODUCERS)] = 2


class PoisonSpec(_Section):
    """Data poisoning: producer ``producer`` relabels ``rate`` of its rows of class ``source_class`` as
    ``target_class`` (a targeted label-flipping attack, as in Xiao, Xiao & Eckert, "Adversarial label flips
    attack on support vector machines", ECAI 2012), and publishes them as honest data."""

    producer: Annotated[int, _between(0, MAX_PRODUCERS - 1)]
    source_class: Annotated[int, _between(0, 1_000)]
    target_class: Annotated[int, _between(0, 1_000)]
    rate: Rate = 1.0


class ProducersSpec(_Section):
    """Data producers: one shard each (``shard_size`` rows, ``label_noise`` of labels flipped), sold at ``price``.

    ``pricing`` is the license pricing mechanism (``agents.economy.license_price``): ``flat`` (``price`` per
    shard, each identity of a split owner too), ``per_row`` (``price * rows / shard_size``: splitting earns the
    same), ``value`` (per-row, times the value of the dataset's rows relative to the average row as the royalty
    shares of the models trained on it say, once one is published).
    ``repricing = "demand"``: before each wave of builders after the first, every producer moves its price
    factor up by ``price_step`` if it sold a license in the last wave, down if not, within
    ``[price_floor, price_cap]`` times its starting price (``agents.economy.reprice``); repricing goes on chain.
    """

    count: Annotated[int, _between(1, MAX_PRODUCERS)] = DEFAULT_PRODUCERS
    shard_size: list[Annotated[int, _between(1, 1_000_000)]]
    price: Amount = "2"
    label_noise: list[Rate]
    duplicates: list[DuplicateSpec] = Field(default_factory=list)
    split: SplitSpec | None = None
    poison: list[PoisonSpec] = Field(default_factory=list)
    pricing: Annotated[str, _one_of(LICENSE_PRICING, "license pricing")] = "flat"
    repricing: Annotated[str, _one_of(REPRICING, "repricing rule")] = "fixed"
    price_step: Annotated[float, _between(0.0, 0.9)] = 0.1
    price_floor: Annotated[float, _between(0.01, 1.0)] = 0.25
    price_cap: Annotated[float, _between(1.0, 100.0)] = 4.0

    @model_validator(mode="before")
    @classmethod
    def _broadcast(cls, data: Any) -> Any:
        """One number for ``shard_size`` / ``label_noise`` means the same value for every producer."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        count = data.get("count", DEFAULT_PRODUCERS)
        valid_count = isinstance(count, int) and not isinstance(count, bool) and 1 <= count <= MAX_PRODUCERS
        for key, default in (("shard_size", DEFAULT_SHARD_SIZE), ("label_noise", 0.0)):
            value = data.get(key, default)
            if isinstance(value, int | float) and not isinstance(value, bool):
                data[key] = [value] * (count if valid_count else 1)
        return data

    @model_validator(mode="after")
    def _check_consistency(self) -> ProducersSpec:
        """Per-producer lists match ``count``; duplicates name distinct, original producers."""
        for key in ("shard_size", "label_noise"):
            values = getattr(self, key)
            if len(values) != self.count:
                raise _problem(
                    f"has {len(values)} entries but producers.count is {self.count}; "
                    "give one value per producer or a single number for all",
                    key,
                )
        copiers: set[int] = set()
        for position, duplicate in enumerate(self.duplicates):
            for field in ("producer", "source"):
                self._check_index(getattr(duplicate, field), f"duplicates.{position}.{field}")
            if duplicate.producer == duplicate.source:
                raise _problem("a producer cannot duplicate its own rows", f"duplicates.{position}.source")
            if duplicate.producer in copiers:
                raise _problem(
                    f"producer {duplicate.producer} is listed twice; one entry per producer",
                    f"duplicates.{position}.producer",
                )
            copiers.add(duplicate.producer)
        for position, duplicate in enumerate(self.duplicates):
            if duplicate.source in copiers:
                raise _problem(
                    f"producer {duplicate.source} resells duplicates itself; the source must be an original producer",
                    f"duplicates.{position}.source",
                )
        for position, poison in enumerate(self.poison):
            self._check_index(poison.producer, f"poison.{position}.producer")
            if poison.source_class == poison.target_class:
                raise _problem("relabelling a class as itself poisons nothing", f"poison.{position}.target_class")
        if self.split is not None:
            self._check_split(self.split)
        return self

    def _check_index(self, index: int, key: str) -> None:
        """Raise a scenario problem at ``key`` unless ``index`` is one of the producers."""
        if index >= self.count:
            raise _problem(
                f"{index} is not a producer index; must be between 0 and {self.count - 1} "
                f"(producers.count is {self.count})",
                key,
            )

    def _check_split(self, split: SplitSpec) -> None:
        """The split names a producer, gives each identity at least one row, and fits ``MAX_PRODUCERS``."""
        if split.owner >= self.count:
            raise _problem(
                f"{split.owner} is not a producer index; must be between 0 and {self.count - 1} "
                f"(producers.count is {self.count})",
                "split.owner",
            )
        rows = self.shard_size[split.owner]
        if split.identities > rows:
            raise _problem(
                f"{split.identities} identities cannot share producer {split.owner}'s {rows} rows; "
                f"at most {rows} (one row each)",
                "split.identities",
            )
        if self.count + split.identities - 1 > MAX_PRODUCERS:
            raise _problem(
                f"{self.count} producers with {split.identities} identities for one make "
                f"{self.count + split.identities - 1} on chain; at most {MAX_PRODUCERS}",
                "split.identities",
            )

    @property
    def price_units(self) -> int:
        """Price of one shard's license in base units."""
        return to_units(self.price)

    def price_of(self, index: int) -> int:
        """License price of producer ``index``'s shard (each of its identities' when split), in base units."""
        asked = next((d.price for d in self.duplicates if d.producer == index and d.price is not None), None)
        return to_units(asked) if asked is not None else self.price_units

    def identities(self) -> list[int]:
        """The owner (producer index) of every identity that publishes a shard, in publishing order: each
        producer once, the split owner ``split.identities`` times in its place (``[0, 0, 0, 1, 2]``)."""
        owners = []
        for index in range(self.count):
            repeat = self.split.identities if self.split is not None and self.split.owner == index else 1
            owners += [index] * repeat
        return owners

    def duplicate_of(self, index: int) -> int | None:
        """The producer whose rows producer ``index`` copies, or None."""
        return next((d.source for d in self.duplicates if d.producer == index), None)

    def duplicate_rate(self, index: int) -> float:
        """Fraction of producer ``index``'s rows copied from another producer (0.0 if none)."""
        return next((d.rate for d in self.duplicates if d.producer == index), 0.0)


class BuildersSpec(_Section):
    """Model builders: buy shards within ``budget``, train ``models[i % len(models)]``, sell calls."""

    count: Annotated[int, _between(1, 100)] = 2
    budget: Amount = "20"
    models: Annotated[list[Annotated[str, _one_of(MODEL_KINDS, "model")]], Field(min_length=1)] = Field(
        default_factory=lambda: list(MODEL_KINDS)
    )
    royalty_bps: Bps = 5000
    price_per_call: Amount = "0.02"
    # "fixed": every call costs price_per_call. "cost_recovery": a builder prices a call so that the
    # calls it expects (all consumers' queries from its entry on, spread evenly over the builders) repay
    # its license spend plus ``margin`` with what it keeps of a call after the protocol fee and the
    # royalties it passes up, never below price_per_call (agents.economy.cost_recovery_price).
    pricing: Annotated[str, _one_of(PRICING_POLICIES, "pricing policy")] = "fixed"
    margin: Annotated[float, _between(0.0, 10.0)] = 0.2
    # Which shards a builder buys (agents.economy.choose_parents): the best marginal value per unit price
    # first, while it is at least ``min_value_ratio`` and the budget lasts, no cap on the count. A model
    # trained on n rows is worth data_value * (1 - exp(-n / saturation_rows)) to the builder.
    data_value: Amount = "50"
    saturation_rows: Annotated[int, _between(1, 10_000_000)] = 500
    min_value_ratio: Annotated[float, _between(0.0, 1_000.0)] = 1.0
    # Builders enter in this many waves spread over the rounds (wave w before round 1 + w·rounds // waves),
    # each buying licenses at the then-current prices; 1: all before the first round.
    waves: Annotated[int, _between(1, 100)] = 1

    @property
    def budget_units(self) -> int:
        """Each builder's budget in base units."""
        return to_units(self.budget)

    @property
    def price_per_call_units(self) -> int:
        """Price of one model call in base units."""
        return to_units(self.price_per_call)

    @property
    def data_value_units(self) -> int:
        """What a model trained on unlimited data is worth to a builder, in base units."""
        return to_units(self.data_value)

    def entry_round(self, index: int, rounds: int) -> int:
        """The round before which builder ``index`` enters (buys, trains, publishes): wave
        ``index · waves // count`` enters before round ``1 + wave · rounds // waves``."""
        wave = index * self.waves // self.count
        return 1 + wave * rounds // self.waves

    def model_for(self, index: int) -> str:
        """Model kind builder ``index`` trains (``models`` cycled over builders)."""
        return self.models[index % len(self.models)]


class RoyaltySpec(_Section):
    """How builders set their parents' royalty shares (a rule of ``agents.datavalue.RULES``), with or without
    ``provenance`` (``agents.datavalue``: copied rows credited to their first publisher)."""

    rule: Annotated[str, _one_of(tuple(RULES), "royalty rule")] = "knn_shapley"
    # Credit a row found in several of a model's parents (matched by content) to the parent published first
    # (lowest asset id) before the rule runs: a copier earns nothing for the rows it copied.
    provenance: bool = False


class ConsumersSpec(_Section):
    """Consumers: each round ask ``queries_per_round`` held-out rows; a right answer is worth ``value_per_correct``."""

    count: Annotated[int, _between(1, 1000)] = 3
    budget: Amount = "5"
    queries_per_round: Annotated[int, _between(1, 10_000)] = 8
    value_per_correct: Amount = "0.1"
    brain: Annotated[str, _one_of(tuple(POLICIES), "brain")] = "ucb"

    @property
    def budget_units(self) -> int:
        """Each consumer's budget in base units."""
        return to_units(self.budget)

    @property
    def value_per_correct_units(self) -> int:
        """Value of one correct answer in base units."""
        return to_units(self.value_per_correct)


@cache
def source_rows(source: str, rows: int = 0) -> int:
    """Number of rows in the named data source ``source`` (``rows`` for ``make_classification``)."""
    return rows if source == "make_classification" and rows else len(load_source(source)[1])


def train_rows(source: str, test_fraction: float, rows: int = 0) -> int:
    """Rows of the named ``source`` left for producers' shards after holding out ``test_fraction`` (as
    scikit-learn rounds it); ``DataSpec.train_rows`` also knows CSV files."""
    total = source_rows(source, rows)
    return total - math.ceil(test_fraction * total)


class Scenario(_Section):
    """A whole simulation: sections plus ``name``, ``seed`` and ``rounds``."""

    name: Annotated[str, AfterValidator(_non_empty)]
    seed: Annotated[int, _between(0, 2**32 - 1)] = 0
    rounds: Annotated[int, _between(1, 10_000)] = 5
    #: ``full`` (gateway, SDK, agent wallets), ``fast`` (contracts directly, vouchers checked in process) or
    #: ``auto`` (fast from ``simulation.engine.FAST_FROM_CALLS`` paid calls up); the economics are the same.
    engine: Annotated[str, _one_of(("auto", "fast", "full"), "engine")] = "auto"
    data: DataSpec = Field(default_factory=DataSpec)
    protocol: ProtocolSpec = Field(default_factory=ProtocolSpec)
    producers: ProducersSpec = Field(default_factory=ProducersSpec)
    builders: BuildersSpec = Field(default_factory=BuildersSpec)
    royalty: RoyaltySpec = Field(default_factory=RoyaltySpec)
    consumers: ConsumersSpec = Field(default_factory=ConsumersSpec)

    _raw: dict[str, Any] = PrivateAttr(default_factory=dict)
    _label: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _check_data_fits(self) -> Scenario:
        """The producers' shards fit in the training part of the data source."""
        needed = sum(self.producers.shard_size)
        available = self.data.train_rows()
        if needed > available:
            total = self.data.row_count()
            raise _problem(
                f"the shards need {needed} rows in total but data source {self.data.source!r} has only "
                f"{available} training rows ({total} rows minus {total - available} held out by "
                f"data.test_fraction = {self.data.test_fraction}); lower producers.shard_size or producers.count, "
                "or pick a larger data.source",
                "producers.shard_size",
            )
        return self

    @property
    def label(self) -> str:
        """Where this scenario came from (its file), for messages."""
        return self._label or f"scenario {self.name!r}"

    def with_overrides(self, overrides: Mapping[str, Any]) -> Scenario:
        """A new scenario with dotted-key ``overrides`` applied (string values parsed as TOML values)."""
        raw = self._raw or self.model_dump(mode="json")
        return _build(raw, dict(overrides), self.label)


# --------------------------------------------------------------------------------------------------
# Loading, overrides, sweeps


def parse_value(text: str) -> Any:
    """``text`` as a TOML value (``3``, ``0.5``, ``[0, 0.4]``, ``true``, ``"x"``), else the string itself."""
    try:
        return tomllib.loads(f"value = {text}")["value"]
    except tomllib.TOMLDecodeError:
        return text


def parse_override(text: str) -> tuple[str, Any]:
    """``"royalty.rule=equal"`` → ``("royalty.rule", "equal")``; the value parsed with ``parse_value``."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not _KEY.fullmatch(key):
        raise ScenarioError(f"override {text!r} must look like key.path=value (for example royalty.rule=equal)")
    return key, parse_value(value.strip())


def packaged_scenarios() -> list[str]:
    """Names of the scenarios shipped inside the package (``simulation/scenarios/*.toml``), sorted."""
    folder = resources.files("simulation") / "scenarios"
    return sorted(item.name.removesuffix(".toml") for item in folder.iterdir() if item.name.endswith(".toml"))


def resolve_scenario(path: str | Path) -> Path:
    """The scenario file ``path`` names: the file itself if it exists, else, for a bare name such as
    ``baseline`` (or ``baseline.toml``), the packaged scenario of that name.

    Raises ``ScenarioError`` naming the packaged scenarios when neither exists.
    """
    path = Path(path)
    if path.is_file() or path.parent != Path("."):
        return path
    name = path.name.removesuffix(".toml")
    packaged = resources.files("simulation") / "scenarios" / f"{name}.toml"
    if packaged.is_file():
        return Path(str(packaged))
    raise ScenarioError(
        f"scenario {str(path)!r} is neither a file nor a packaged scenario ({', '.join(packaged_scenarios())})"
    )


def load_scenario(path: str | Path, overrides: Sequence[str] = (), seed: int | None = None) -> Scenario:
    """Read and validate the scenario ``path`` (a TOML file, or the name of a packaged scenario such as
    ``baseline``; see :func:`resolve_scenario`), apply ``overrides`` (``key.path=value``) and ``seed``."""
    path = resolve_scenario(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ScenarioError(f"scenario file {path} not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ScenarioError(f"cannot read scenario file {path}: {exc}") from None
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(f"{path}: not valid TOML: {exc}") from None
    data = raw.get("data")
    if isinstance(data, dict) and isinstance(data.get("path"), str) and data["path"].strip():
        data["path"] = str(path.parent / Path(data["path"]).expanduser())  # a file's path is relative to the file
    parsed = dict(parse_override(item) for item in overrides)
    if seed is not None:
        parsed["seed"] = seed
    return _build(raw, parsed, str(path))


def parse_sweep(params: Sequence[str]) -> list[dict[str, str]]:
    """The grid of override dicts for ``["royalty.rule=none,equal", "producers.count=3,5"]``.

    Cartesian product in the order given (the first parameter varies slowest). Commas inside brackets or
    quotes do not split values (``producers.label_noise=[0,0.5],[0,0]``). No parameters → ``[{}]``.
    """
    axes: list[tuple[str, list[str]]] = []
    for param in params:
        key, sep, values = param.partition("=")
        key = key.strip()
        if not sep or not _KEY.fullmatch(key):
            raise ScenarioError(
                f"sweep parameter {param!r} must look like key.path=value1,value2 (for example royalty.rule=none,equal)"
            )
        if any(key == seen for seen, _ in axes):
            raise ScenarioError(f"sweep parameter {key} is given twice; list all its values in one parameter")
        items = _split_values(values)
        if not items or not all(items):
            raise ScenarioError(f"sweep parameter {key} needs non-empty values separated by commas, got {values!r}")
        axes.append((key, items))
    keys = [key for key, _ in axes]
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(items for _, items in axes))]


def sweep_scenarios(scenario: Scenario, params: Sequence[str]) -> list[tuple[dict[str, str], Scenario]]:
    """Every grid point of ``params`` with its validated scenario (so a bad point fails before any run)."""
    return [(point, scenario.with_overrides(point)) for point in parse_sweep(params)]


def _split_values(text: str) -> list[str]:
    """Split on commas that are not inside brackets or quotes; strip each item."""
    items, current, depth, quote = [], [], 0, ""
    for char in text:
        if quote:
            quote = "" if char == quote else quote
        elif char in "\"'":
            quote = char
        elif char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        elif char == "," and depth == 0:
            items.append("".join(current).strip())
            current = []
            continue
        current.append(char)
    items.append("".join(current).strip())
    return items


def _apply(raw: Mapping[str, Any], overrides: Mapping[str, Any], label: str) -> dict[str, Any]:
    """A deep copy of ``raw`` with each dotted-key override set (string values parsed as TOML values)."""
    merged = copy.deepcopy(dict(raw))
    for key, value in overrides.items():
        if not isinstance(key, str) or not _KEY.fullmatch(key):
            raise ScenarioError(f"{label}: override key {key!r} must be a dotted key path like royalty.rule")
        parts = key.split(".")
        node = merged
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                prefix = ".".join(parts[: depth + 1])
                raise ScenarioError(f"{label}: cannot set {key}: {prefix} is not a table")
            node = child
        node[parts[-1]] = parse_value(value) if isinstance(value, str) else value
    return merged


def _build(raw: Mapping[str, Any], overrides: Mapping[str, Any], label: str) -> Scenario:
    """Validate ``raw`` + ``overrides`` into a Scenario, or raise ``ScenarioError`` describing every problem."""
    merged = _apply(raw, overrides, label)
    try:
        scenario = Scenario.model_validate(merged)
    except ValidationError as exc:
        problems = [_describe(error, overrides) for error in exc.errors()]
        head = label if len(problems) == 1 else f"{label}: {len(problems)} problems"
        raise ScenarioError(f"{head}: {'; '.join(problems)}") from None
    scenario._raw = merged
    scenario._label = label
    return scenario


def _dotted(loc: Sequence[str | int]) -> str:
    """``("producers", "duplicates", 0, "rate")`` → ``producers.duplicates[0].rate``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _model_at(loc: Sequence[str | int]) -> type[BaseModel] | None:
    """The model class that validates the table at ``loc`` (None if ``loc`` is not a table)."""
    current: Any = Scenario
    for part in loc:
        if isinstance(part, int):
            args = get_args(current)
            current = args[0] if args else None
        elif isinstance(current, type) and issubclass(current, BaseModel) and part in current.model_fields:
            current = current.model_fields[part].annotation
            # an optional table (``SplitSpec | None``) is validated by its model
            if isinstance(current, types.UnionType):
                current = next((a for a in get_args(current) if isinstance(a, type) and issubclass(a, BaseModel)), None)
        else:
            return None
    return current if isinstance(current, type) and issubclass(current, BaseModel) else None


def _describe(error: Mapping[str, Any], overrides: Mapping[str, Any]) -> str:
    """One problem as a sentence naming the dotted key and what is allowed."""
    loc: list[str | int] = list(error["loc"])
    context = error.get("ctx") or {}
    kind = error["type"]
    if kind == "scenario" and "key" in context:
        loc += [int(part) if part.isdigit() else part for part in context["key"].split(".")]
    key = _dotted(loc)
    describers: dict[str, Callable[[], str]] = {
        "scenario": lambda: f"{key}: {context['message']}" if key else context["message"],
        "extra_forbidden": lambda: _unknown_key(loc),
        "missing": lambda: f"{key} is required",
        "model_type": lambda: f"{key} must be a table ([{key}] section)",
        "model_attributes_type": lambda: f"{key} must be a table ([{key}] section)",
    }
    default = error["msg"][:1].lower() + error["msg"][1:]
    text = describers.get(kind, lambda: f"{key}: {default}, got {error.get('input')!r}")()
    for override in overrides:
        if key == override or key.startswith((f"{override}.", f"{override}[")) or override.startswith(f"{key}."):
            return f"{text} (set by override {override}={overrides[override]!r})"
    return text


def _unknown_key(loc: Sequence[str | int]) -> str:
    """The unknown-key message, listing the keys allowed at that level."""
    parent = loc[:-1]
    model = _model_at(parent)
    allowed = ", ".join(model.model_fields) if model else "(none)"
    where = f"in [{_dotted(parent)}]" if parent else "at the top level"
    return f"unknown key {_dotted(loc)!r}; allowed keys {where}: {allowed}"
