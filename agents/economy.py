"""The economic decisions of the simulated market, in one place both simulation engines call.

- :func:`choose_parents`: which datasets a builder buys, by expected value for money within its budget;
- :func:`lineage_signal`: the quality signal a builder (or a value-priced producer) can read honestly
  from the chain before buying: the royalty shares earlier models published for each dataset;
- :func:`cost_recovery_price`: a builder's price per call that repays its licenses once royalties and the
  protocol fee are taken from every call;
- :func:`license_price` and :func:`reprice`: the license pricing mechanisms (``flat``, ``per_row``,
  ``value``) and the producers' demand-following price rule over waves of builders.

Amounts are base units of the payment token; shares are basis points (out of ``BPS`` = 10,000).
Everything here is deterministic (exact fractions where two engines must agree to the unit).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction

BPS = 10_000

#: License pricing mechanisms: ``flat`` (one price per shard, whatever its rows), ``per_row`` (rows * a
#: per-row price: splitting a shard across identities earns the same) and ``value`` (per-row, times the
#: dataset's lineage signal once models trained on it are published).
LICENSE_PRICING = ("flat", "per_row", "value")
#: Producer repricing between waves: ``fixed`` (never) or ``demand`` (up after a sale, down after none).
REPRICING = ("fixed", "demand")
#: A value-priced dataset's signal is clipped to this range (a factor on its per-row price).
SIGNAL_BOUNDS = (Fraction(1, 4), Fraction(4))


@dataclass(frozen=True)
class DatasetOffer:
    """A dataset as a builder sees it before buying: its price (base units), its rows (as the listing
    states them: ``listing_uri``) and its lineage signal (``lineage_signal``; None when no model trained
    on it has been published)."""

    asset_id: int
    price: int
    rows: int
    signal: Fraction | None = None


@dataclass(frozen=True)
class DataValuation:
    """What a builder expects a training set to be worth: ``value`` (base units) for a model trained on
    unlimited data, reached with diminishing returns in the (signal-weighted) rows ``n``:
    ``value * (1 - exp(-n / saturation_rows))``. It buys a shard while its marginal value is at least
    ``min_ratio`` times its price."""

    value: int
    saturation_rows: int
    min_ratio: float = 1.0

    def worth(self, rows: float) -> float:
        """The expected value (base units) of a training set of ``rows`` effective rows."""
        return self.value * -math.expm1(-rows / self.saturation_rows)


def effective_rows(offer: DatasetOffer) -> float:
    """``offer.rows`` weighted by its per-row signal (1 when unknown, clipped to ``SIGNAL_BOUNDS``)."""
    return offer.rows * float(_clip(offer.signal) if offer.signal is not None else 1)


def choose_parents(offers: Sequence[DatasetOffer], budget: int, valuation: DataValuation) -> list[int]:
    """The datasets a builder buys (asset ids, in buying order): greedily the offer with the highest
    marginal value per unit price (``valuation.worth`` of the rows so far plus its effective rows, less
    the worth so far), ties to the cheaper then the lower id, while that ratio is at least
    ``valuation.min_ratio`` and its price fits what is left of ``budget``. No cap on the count: the budget
    and the diminishing returns stop it. A free dataset with any value is always bought."""
    left, rows, chosen = budget, 0.0, []
    remaining = sorted(offers, key=lambda o: (o.price, o.asset_id))
    while True:
        best, best_ratio = None, -1.0
        for offer in remaining:
            if offer.price > left:
                continue
            gain = valuation.worth(rows + effective_rows(offer)) - valuation.worth(rows)
            ratio = math.inf if offer.price == 0 and gain > 0 else gain / max(offer.price, 1)
            if ratio > best_ratio:
                best, best_ratio = offer, ratio
        if best is None or best_ratio < valuation.min_ratio:
            return chosen
        chosen.append(best.asset_id)
        remaining.remove(best)
        left -= best.price
        rows += effective_rows(best)


def lineage_signal(
    models: Iterable[tuple[Sequence[int], Sequence[int]]], rows: Mapping[int, int]
) -> dict[int, Fraction]:
    """Each dataset's royalty share per row relative to the average row of the model, averaged over the
    published models trained on it: the value of its rows as earlier builders' rules judged them.

    ``models``: (parent asset ids, their shares) per model, the shares in any unit common to one model
    (bps, or the vault's shares: the ratio is the same); ``rows``: each dataset's rows (as its listing
    states them). A parent's signal in one model is ``(share / rows) / (total shares / total rows)``: 1 = its
    rows earned as much as the model's average row, 0 = valued at nothing; a split shard's pieces keep the
    signal of the whole. Models that pass nothing up (rule ``none``, royalty 0) or have a parent of unknown
    rows say nothing and are skipped. Exact fractions, so engines agree.
    """
    seen: dict[int, list[Fraction]] = {}
    for parents, shares in models:
        total = sum(shares)
        if total <= 0 or any(rows.get(p, 0) <= 0 for p in parents):
            continue
        all_rows = sum(rows[p] for p in parents)
        for parent, share in zip(parents, shares, strict=True):
            seen.setdefault(parent, []).append(Fraction(share * all_rows, total * rows[parent]))
    return {parent: sum(values, Fraction(0)) / len(values) for parent, values in seen.items()}


def cost_recovery_price(license_cost: int, *, margin: float, calls: int, upstream_bps: int, fee_bps: int,
                        floor: int) -> int:  # fmt: skip
    """The price per call (base units) at which ``calls`` calls repay ``license_cost`` plus ``margin``
    (a fraction) with what the builder keeps of each call: ``(1 - upstream_bps/BPS) * (1 - fee_bps/BPS)``
    (the protocol fee is taken first, then the royalties go up). Never below ``floor``. Raises
    ``ValueError`` when the builder keeps nothing of a call (``upstream_bps`` or ``fee_bps`` = ``BPS``)."""
    keep = Fraction(BPS - upstream_bps, BPS) * Fraction(BPS - fee_bps, BPS)
    if keep <= 0:
        raise ValueError(f"a builder passing {upstream_bps} bps up after a {fee_bps} bps fee keeps nothing")
    needed = Fraction(license_cost) * Fraction(str(margin)) + license_cost
    return max(math.ceil(needed / (max(calls, 1) * keep)), floor)


def license_price(mechanism: str, asked: int, rows: int, owner_rows: int, signal: Fraction | None = None) -> int:
    """A dataset's license price (base units) under ``mechanism`` for an identity holding ``rows`` of its
    owner's ``owner_rows``, the owner asking ``asked`` for all of them: ``flat`` -> ``asked`` (each identity
    of a split owner asks the full price), ``per_row`` -> ``asked * rows / owner_rows`` (floor: splitting
    earns no more), ``value`` -> the per-row price times the lineage ``signal`` (the value of its rows
    relative to the average row, :func:`lineage_signal`, clipped to ``SIGNAL_BOUNDS``; unchanged while there
    is none). At least 1 base unit. Raises ``ValueError`` for another mechanism."""
    if mechanism == "flat":
        return asked
    if mechanism not in LICENSE_PRICING:
        raise ValueError(f"unknown license pricing {mechanism!r}; allowed: {', '.join(LICENSE_PRICING)}")
    price = Fraction(asked * rows, owner_rows)
    if mechanism == "value" and signal is not None:
        price *= _clip(signal)
    return max(1, math.floor(price))


def reprice(factor: Fraction, sold: bool, *, step: Fraction, low: Fraction, high: Fraction) -> Fraction:
    """The demand-following rule a producer applies to its price factor after a wave of builders: up by
    ``step`` (a fraction, e.g. 1/10) after it sold at least one license, down by ``step`` after none,
    kept within ``[low, high]`` (factors of the starting price). A simple derivative-free form of the
    adaptive sellers of Kephart, Hanson & Greenwald, "Dynamic pricing by software agents" (Computer
    Networks 32(6), 2000): exact fractions, so both engines move prices identically."""
    moved = factor * (1 + step) if sold else factor * (1 - step)
    return min(max(moved, low), high)


def _clip(signal: Fraction) -> Fraction:
    low, high = SIGNAL_BOUNDS
    return min(max(signal, low), high)


__all__ = [
    "LICENSE_PRICING",
    "REPRICING",
    "DataValuation",
    "DatasetOffer",
    "choose_parents",
    "cost_recovery_price",
    "effective_rows",
    "license_price",
    "lineage_signal",
    "reprice",
]
