"""Typed results of a simulation run: its parties, per-round figures, chain activity and metrics.

Every amount is an ``int`` in base units of the payment token (tUSD has 6 decimals); every record is a
frozen dataclass, sequences are tuples. ``RunResult.to_json`` is what ``result.json`` holds (everything but
wall-clock figures) and ``RunResult.from_json`` reads it back; ``RunMetrics.to_json`` is ``metrics.json``.
Metrics are computed from a ``RunResult`` by ``simulation.metrics.summarize``; an engine only has to fill
a ``RunResult``.

A metric that cannot be computed for a run (a correlation when every producer earned the same, a ratio over
nothing) is ``Undefined`` with its reason, written ``{"undefined": reason}`` in JSON and ``undefined`` in
CSVs, never a number, NaN or a blank. Over several seeds a metric is an ``Estimate`` (mean with a 95%
Student-t interval over the seeds), and two grid points compare by a ``Comparison`` (paired per seed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, is_dataclass
from typing import Any


@dataclass(frozen=True)
class Undefined:
    """A metric that has no value for a run, and why (e.g. ``every producer earned the same revenue``).

    JSON: ``{"undefined": reason}``; CSV cell: ``undefined``; tables: ``undefined (reason)``.
    """

    reason: str

    def to_json(self) -> dict[str, str]:
        """``{"undefined": reason}``."""
        return {"undefined": self.reason}


#: A scalar metric of one run: a number, or why it has none.
Value = float | int | Undefined


def _plain(value: Any) -> Any:
    """``value`` as plain JSON data, recursively: dataclasses as objects (``Undefined`` as ``{"undefined": …}``),
    tuples as lists (a JSON array either way; equal to what JSON reads back)."""
    if isinstance(value, Undefined):
        return value.to_json()
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: _plain(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def value_from_json(data: Any) -> Any:
    """A metric value read back from JSON: ``{"undefined": reason}`` as ``Undefined``, anything else as is."""
    if isinstance(data, dict) and set(data) == {"undefined"}:
        return Undefined(str(data["undefined"]))
    return data


@dataclass(frozen=True)
class ProducerResult:
    """A data producer: its published shard and what reached it.

    ``revenue`` is its token balance at the end (it starts with none). ``license_revenue`` and
    ``royalty_revenue`` split it into license sales and model royalties when the engine knows the split
    (None otherwise); ``true_value`` is the shard's ground-truth value in base units (a float): what it would
    have earned in royalties had every model built on it split its royalty pool by its parents' exact Shapley
    values on the test set (``simulation.groundtruth``). ``owner`` is
    the scenario's producer index behind this identity when the scenario splits a producer (Sybil identities
    share their owner; None otherwise); ``label_noise`` and ``duplicate_of`` are the owner's.
    """

    index: int
    address: str
    asset_id: int
    label_noise: float
    duplicate_of: int | None
    rows: int
    revenue: int
    true_value: float
    license_revenue: int | None = None
    royalty_revenue: int | None = None
    owner: int | None = None

    def to_json(self) -> dict[str, Any]:
        """A JSON object; the revenue split and the owner only where known."""
        data = asdict(self)
        for name in ("license_revenue", "royalty_revenue", "owner"):
            if data[name] is None:
                del data[name]
        return _plain(data)


@dataclass(frozen=True)
class BuilderResult:
    """A model builder: the model it published, what it spent on licenses and what it earned from calls.

    ``parents`` are the dataset ids it trained on and ``shares_bps`` their royalty shares in basis points
    (of 10,000), in the same order. ``call_revenue`` is what consumers paid for calls to the model (base
    units). The ground truth (``simulation.groundtruth``), per parent in the same order: ``true_values`` the
    Shapley values (test-accuracy points), ``true_stderr`` their standard errors (0 when exact) and
    ``true_shares`` the values clipped at 0 and normalised. Each is None where the engine did not compute it.
    """

    index: int
    address: str
    model_id: int
    model: str
    rule: str
    spend: int
    revenue: int
    accuracy: float
    parents: tuple[int, ...]
    shares_bps: tuple[int, ...]
    call_revenue: int | None = None
    true_values: tuple[float, ...] | None = None
    true_stderr: tuple[float, ...] | None = None
    true_shares: tuple[float, ...] | None = None

    @property
    def profit(self) -> int:
        """Revenue minus spend (base units; negative for a loss)."""
        return self.revenue - self.spend


@dataclass(frozen=True)
class ConsumerResult:
    """A consumer: what it paid for model calls, how many rows it had answered and how many were right.

    ``value`` is what the right answers were worth to it (base units).
    """

    index: int
    address: str
    spend: int
    answered: int
    correct: int
    value: int

    @property
    def surplus(self) -> int:
        """Value minus spend (base units)."""
        return self.value - self.spend


@dataclass(frozen=True)
class RoundFigures:
    """One round: what consumers paid for calls in it, rows answered and rows answered right."""

    round: int
    consumer_spend: int
    answered: int
    correct: int


@dataclass(frozen=True)
class ChainActivity:
    """The chain a run used and what the run did on it: gas and transactions summed over its blocks."""

    kind: str
    chain_id: int
    gas_used: int
    tx_count: int


#: ``BuilderResult`` fields that are tuples (JSON arrays).
_BUILDER_TUPLES = ("parents", "shares_bps", "true_values", "true_stderr", "true_shares")


@dataclass(frozen=True)
class RunResult:
    """Everything a run produced. ``wall_time`` (seconds) and ``onchain_actions`` vary between identical
    runs and are not part of ``to_json``. ``split_owner`` is the producer a Sybil scenario splits (None
    otherwise, and then absent from ``to_json``)."""

    scenario: str
    seed: int
    producers: tuple[ProducerResult, ...]
    builders: tuple[BuilderResult, ...]
    consumers: tuple[ConsumerResult, ...]
    protocol_fee: int
    consumer_spend: int
    rounds: tuple[RoundFigures, ...]
    channel_revenue_claimed: int
    chain: ChainActivity
    wall_time: float = 0.0
    onchain_actions: int = 0
    split_owner: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``result.json`` (no wall-clock figures)."""
        data = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("wall_time", "onchain_actions")}
        if self.split_owner is None:
            del data["split_owner"]
        data["producers"] = [p.to_json() for p in self.producers]
        for name in ("builders", "consumers", "rounds"):
            data[name] = [asdict(row) for row in data[name]]
        data["chain"] = asdict(self.chain)
        return _plain(data)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunResult:
        """A result from the object ``to_json`` gives (as read from ``result.json``); ``wall_time`` and
        ``onchain_actions`` are read when present. Raises ``KeyError``/``TypeError`` on a missing or unknown field."""
        return cls(
            scenario=data["scenario"],
            seed=data["seed"],
            producers=tuple(ProducerResult(**row) for row in data["producers"]),
            builders=tuple(
                BuilderResult(
                    **{**row, **{name: tuple(row[name]) for name in _BUILDER_TUPLES if row.get(name) is not None}}
                )
                for row in data["builders"]
            ),
            consumers=tuple(ConsumerResult(**row) for row in data["consumers"]),
            protocol_fee=data["protocol_fee"],
            consumer_spend=data["consumer_spend"],
            rounds=tuple(RoundFigures(**row) for row in data["rounds"]),
            channel_revenue_claimed=data["channel_revenue_claimed"],
            chain=ChainActivity(**data["chain"]),
            wall_time=data.get("wall_time", 0.0),
            onchain_actions=data.get("onchain_actions", 0),
            split_owner=data.get("split_owner"),
        )


# --------------------------------------------------------------------------------------------------
# Metrics


@dataclass(frozen=True)
class Correlation:
    """Correlation between producer revenue and true data value; ``Undefined`` with the reason where it has none
    (fewer than two producers, or every producer earned the same / has the same value)."""

    pearson: float | Undefined
    spearman: float | Undefined


@dataclass(frozen=True)
class ProducerShare:
    """Where the market's money went to producers: producer revenue over everything spent in the market
    (builders' license purchases plus consumers' model calls), split into license sales and royalties
    (``license + royalty == total``). ``Undefined`` where nothing was spent, or where the engine did not
    split license from royalty revenue (the parts only)."""

    total: float | Undefined
    license: float | Undefined
    royalty: float | Undefined


@dataclass(frozen=True)
class DefectiveShare:
    """How much royalty reached producers whose data is defective (label noise, or rows copied from another
    producer: ``duplicate_of`` set): their share of all royalties paid (``royalty``), their share of the
    ground-truth value (``truth``) and the excess ``royalty - truth`` (positive: defective data was overpaid
    against the ground truth). ``Undefined`` with the reason where a part has no value."""

    royalty: float | Undefined
    truth: float | Undefined
    excess: float | Undefined


@dataclass(frozen=True)
class BuilderProfit:
    """Each builder's profit, by builder index, and their total (base units)."""

    per_builder: tuple[int, ...]
    total: int


@dataclass(frozen=True)
class ConsumerSurplus:
    """Each consumer's surplus, by consumer index, and their total (base units)."""

    per_consumer: tuple[int, ...]
    total: int


@dataclass(frozen=True)
class Timing:
    """Wall-clock figures: the only ones that differ between identical runs (``timing.json``)."""

    wall_time: float
    onchain_actions: int
    actions_per_second: float | None


#: The default of a metric a ``SweepMetrics`` was built without.
_NOT_COMPUTED = Undefined("not computed for this run")


@dataclass(frozen=True)
class SweepMetrics:
    """The scalar metrics a sweep compares across its grid (one ``sweep.csv`` column each, in this order).

    Against the ground truth (``simulation.metrics``): ``truth_distance`` (the headline: how far the royalty
    splits were from the exact Shapley shares, 0 to 1, lower is better), ``royalty_value_pearson`` /
    ``_spearman`` (royalty-only revenue against ground-truth value), ``defective_royalty_share`` /
    ``defective_truth_share`` / ``defective_excess`` (royalty reaching noisy or copied data).
    """

    revenue_value_pearson: float | Undefined
    revenue_value_spearman: float | Undefined
    gini_producer_revenue: float | Undefined
    producer_share: float | Undefined
    producer_share_license: float | Undefined
    producer_share_royalty: float | Undefined
    producer_revenue_total: int
    builder_profit_total: int
    consumer_surplus_total: int
    protocol_fee: int
    consumer_spend: int
    accuracy: float | Undefined
    gas_used: int
    tx_count: int
    truth_distance: float | Undefined = _NOT_COMPUTED
    royalty_value_pearson: float | Undefined = _NOT_COMPUTED
    royalty_value_spearman: float | Undefined = _NOT_COMPUTED
    defective_royalty_share: float | Undefined = _NOT_COMPUTED
    defective_truth_share: float | Undefined = _NOT_COMPUTED
    defective_excess: float | Undefined = _NOT_COMPUTED
    split_identities: int | None = None
    split_owner_revenue: int | None = None
    sybil_gain: float | None = None
    copier_revenue: int | None = None
    copied_revenue: int | None = None


#: Figures of strategic producers, None (and left out of JSON and CSV) unless the scenario has them: a split
#: (Sybil) owner's identity count and revenue, its ``sybil_gain`` over the unsplit control of a sweep, and the
#: total revenue of free riders (``copier_revenue``) and of the producers they copy (``copied_revenue``).
STRATEGY_METRICS = ("owner_revenue", "split_identities", "split_owner_revenue", "sybil_gain", "copier_revenue",
                    "copied_revenue")  # fmt: skip


@dataclass(frozen=True)
class RunMetrics:
    """The figures a researcher compares for one run (amounts in base units; see ``simulation.metrics``).

    ``producer_true_value`` is each producer's ground-truth value (base units, ``simulation.groundtruth``);
    ``producer_royalty_revenue`` what reached it from model royalties alone, ``royalty_value_correlation``
    the two's correlation, ``truth_distance`` the royalty-weighted distance between the rule's splits and the
    ground-truth shares, ``defective`` the royalty reaching noisy or copied data (``simulation.metrics``).

    ``owner_revenue`` is revenue per real owner (scenario producer index; a split owner's identities summed)
    when the scenario splits a producer; ``split_identities``/``split_owner_revenue`` that owner's identity
    count and revenue. ``copier_revenue`` is what free riders (producers with ``duplicate_of``) earned in
    total, ``copied_revenue`` what the producers they copy earned. Each is None without such producers.
    """

    producer_revenue: tuple[int, ...]
    producer_revenue_total: int
    producer_true_value: tuple[float, ...]
    revenue_value_correlation: Correlation
    gini_producer_revenue: float | Undefined
    producer_share: ProducerShare
    builder_profit: BuilderProfit
    consumer_surplus: ConsumerSurplus
    consumer_spend: int
    protocol_fee: int
    answered: int
    correct: int
    accuracy: float | Undefined
    builder_accuracy: tuple[float, ...]
    gas_used: int
    tx_count: int
    timing: Timing
    producer_royalty_revenue: tuple[int, ...] | Undefined = _NOT_COMPUTED
    royalty_value_correlation: Correlation = Correlation(_NOT_COMPUTED, _NOT_COMPUTED)
    truth_distance: float | Undefined = _NOT_COMPUTED
    defective: DefectiveShare = DefectiveShare(_NOT_COMPUTED, _NOT_COMPUTED, _NOT_COMPUTED)
    owner_revenue: tuple[int, ...] | None = None
    split_identities: int | None = None
    split_owner_revenue: int | None = None
    copier_revenue: int | None = None
    copied_revenue: int | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``metrics.json``: everything but ``timing``, and the strategy figures
        (``STRATEGY_METRICS``) only where the scenario has such producers."""
        data = _plain(self)
        del data["timing"]
        for name in STRATEGY_METRICS:
            if name in data and data[name] is None:
                del data[name]
        return data

    def sweep_metrics(self) -> SweepMetrics:
        """The scalar metrics, for sweep tables and plots."""
        return SweepMetrics(
            revenue_value_pearson=self.revenue_value_correlation.pearson,
            revenue_value_spearman=self.revenue_value_correlation.spearman,
            gini_producer_revenue=self.gini_producer_revenue,
            producer_share=self.producer_share.total,
            producer_share_license=self.producer_share.license,
            producer_share_royalty=self.producer_share.royalty,
            producer_revenue_total=self.producer_revenue_total,
            builder_profit_total=self.builder_profit.total,
            consumer_surplus_total=self.consumer_surplus.total,
            protocol_fee=self.protocol_fee,
            consumer_spend=self.consumer_spend,
            accuracy=self.accuracy,
            gas_used=self.gas_used,
            tx_count=self.tx_count,
            truth_distance=self.truth_distance,
            royalty_value_pearson=self.royalty_value_correlation.pearson,
            royalty_value_spearman=self.royalty_value_correlation.spearman,
            defective_royalty_share=self.defective.royalty,
            defective_truth_share=self.defective.truth,
            defective_excess=self.defective.excess,
            split_identities=self.split_identities,
            split_owner_revenue=self.split_owner_revenue,
            copier_revenue=self.copier_revenue,
            copied_revenue=self.copied_revenue,
        )


@dataclass(frozen=True)
class SweepRow:
    """One grid point of a sweep: its parameter overrides (dotted key -> value) and its metrics."""

    params: dict[str, str]
    metrics: SweepMetrics

    def to_json(self) -> dict[str, Any]:
        """The JSON object of one ``sweep.json`` entry (strategy figures only where set)."""
        metrics = {k: v for k, v in _plain(self.metrics).items() if v is not None or k not in STRATEGY_METRICS}
        return {"params": dict(self.params), "metrics": metrics}


# --------------------------------------------------------------------------------------------------
# Over seeds


@dataclass(frozen=True)
class Estimate:
    """A metric over ``n`` seeds: its ``mean``, the 95% Student-t interval ``[low, high]`` of that mean
    (``mean ± t(0.975, n - 1) · sd / √n``) and the sample standard deviation ``sd`` (n - 1 in the denominator).
    ``n`` counts the seeds where the metric was defined (at least 2)."""

    mean: float
    low: float
    high: float
    n: int
    sd: float

    def contains(self, value: float = 0.0) -> bool:
        """Whether ``value`` lies in the interval (for a difference: whether it is within noise)."""
        return self.low <= value <= self.high


#: A metric summarized over seeds: an estimate, or why there is none.
Summary = Estimate | Undefined


@dataclass(frozen=True)
class SeededMetrics:
    """A scenario (or one grid point) run over several seeds: its parameter overrides, the seeds, each seed's
    scalar metrics (``runs[i]`` is seed ``seeds[i]``) and every metric of ``SweepMetrics`` summarized over them
    (``estimates``, in ``SweepMetrics`` field order). ``to_json`` is its ``metrics.json``."""

    params: dict[str, str]
    seeds: tuple[int, ...]
    runs: tuple[SweepMetrics, ...]
    estimates: dict[str, Summary]

    def to_json(self) -> dict[str, Any]:
        """``{"params", "seeds", "metrics": {name: {"mean","low","high","n","sd"} or {"undefined": reason}}}``."""
        return {"params": dict(self.params), "seeds": list(self.seeds), "metrics": _plain(self.estimates)}


@dataclass(frozen=True)
class Comparison:
    """One metric of grid point ``point`` against the reference point ``reference``: the mean of the per-seed
    differences (point - reference, the same seeds under both) with its 95% Student-t interval, or why there is
    none. The difference is within noise when its interval contains 0."""

    metric: str
    point: dict[str, str]
    reference: dict[str, str]
    difference: Summary

    @property
    def within_noise(self) -> bool | None:
        """True when the interval contains 0; None when the difference is undefined."""
        return None if isinstance(self.difference, Undefined) else self.difference.contains(0.0)

    def to_json(self) -> dict[str, Any]:
        """A JSON object: the metric, both points' parameters, the difference and ``within_noise``."""
        return {
            "metric": self.metric,
            "point": dict(self.point),
            "reference": dict(self.reference),
            "difference": _plain(self.difference),
            "within_noise": self.within_noise,
        }
