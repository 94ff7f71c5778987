"""Helpers for simulation tests: a tiny scenario's overrides and a check of a figure's files."""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ElementTree
from pathlib import Path
from typing import Any

from simulation.results import RunResult

#: ``--param`` overrides that shrink the baseline to seconds: 3 producers, 1 builder, 2 consumers, 2 rounds.
TINY = ["rounds=2", "producers.count=3", "producers.shard_size=80", "builders.count=1", "builders.models=['logreg']",
        "consumers.count=2", "consumers.queries_per_round=4"]  # fmt: skip

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
#: Least resolution of a printable PNG (dots per inch).
MIN_DPI = 200


def png_dpi(data: bytes) -> tuple[float, float]:
    """The (x, y) resolution a PNG declares in its pHYs chunk, in dots per inch; (0, 0) without one."""
    position = 8
    while position + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[position : position + 8])
        if kind == b"pHYs":
            x, y, unit = struct.unpack(">IIB", data[position + 8 : position + 17])
            return (x * 0.0254, y * 0.0254) if unit == 1 else (0.0, 0.0)  # unit 1: per metre
        if kind == b"IDAT":
            break
        position += 12 + length
    return 0.0, 0.0


def assert_png(path: Path) -> None:
    """``path`` is a non-trivial PNG of at least ``MIN_DPI``, with the same figure beside it as an SVG that
    parses as XML and a PDF."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 5_000, path
    assert min(png_dpi(data)) >= MIN_DPI - 0.5, (path, png_dpi(data))
    svg = ElementTree.parse(path.with_suffix(".svg")).getroot()
    assert svg.tag == "{http://www.w3.org/2000/svg}svg", path
    assert path.with_suffix(".pdf").read_bytes()[:5] == b"%PDF-", path


TUSD = 1_000_000


def synthetic_data() -> dict[str, Any]:
    """Three producers (one noisy, one copying producer 0), two builders, two consumers; listed out of order."""
    return {
        "seed": 1,
        "channel_revenue_claimed": 5 * TUSD,
        "scenario": "synthetic",
        "producers": [
            {"index": 2, "address": "0xP2", "asset_id": 3, "label_noise": 0.0, "duplicate_of": 0, "rows": 100,
             "revenue": 4 * TUSD, "true_value": 0.0},
            {"index": 0, "address": "0xP0", "asset_id": 1, "label_noise": 0.0, "duplicate_of": None, "rows": 100,
             "revenue": 6 * TUSD, "true_value": 0.05},
            {"index": 1, "address": "0xP1", "asset_id": 2, "label_noise": 0.5, "duplicate_of": None, "rows": 100,
             "revenue": 2 * TUSD, "true_value": 0.01},
        ],
        "builders": [
            {"index": 0, "address": "0xB0", "model_id": 4, "model": "knn", "rule": "equal", "spend": 4 * TUSD,
             "revenue": 5 * TUSD, "accuracy": 0.9, "parents": [1, 3], "shares_bps": [2500, 2500]},
            {"index": 1, "address": "0xB1", "model_id": 5, "model": "logreg", "rule": "equal", "spend": 6 * TUSD,
             "revenue": 2_500_000, "accuracy": 0.8, "parents": [1, 2, 3], "shares_bps": [1667, 1667, 1666]},
        ],
        "consumers": [
            {"index": 0, "address": "0xC0", "spend": 3 * TUSD, "answered": 30, "correct": 25, "value": 5 * TUSD},
            {"index": 1, "address": "0xC1", "spend": 2 * TUSD, "answered": 20, "correct": 5, "value": 1 * TUSD},
        ],
        "protocol_fee": 150_000,
        "consumer_spend": 5 * TUSD,
        "rounds": [
            {"round": 2, "consumer_spend": 3 * TUSD, "answered": 30, "correct": 20},
            {"round": 1, "consumer_spend": 2 * TUSD, "answered": 20, "correct": 10},
        ],
        "chain": {"kind": "embedded", "chain_id": 131277322940537, "gas_used": 1_234_567, "tx_count": 89},
        "wall_time": 2.5,
        "onchain_actions": 50,
    }  # fmt: skip


def synthetic_result() -> RunResult:
    """``synthetic_data`` as the engine hands it over."""
    return RunResult.from_json(synthetic_data())


#: Scenario sizes for the engine agreement checks: one round, 4 queries per consumer; ``large`` shrunk further
#: (the full engine at its own size takes far longer).
ENGINE_CHECK = ["rounds=1", "consumers.queries_per_round=4"]
ENGINE_CHECK_SHRINK = {"large": ["producers.count=5", "producers.shard_size=100", "builders.count=2",
                                 "consumers.count=3"]}  # fmt: skip
#: Figures that may differ between engines: they count transactions, gas and time, not money.
NOT_ECONOMIC = {"gas_used", "tx_count", "timing", "onchain_actions", "wall_time", "chain"}


def assert_engines_agree(name: str, chain_target: str, tmp_path: Path) -> None:
    """Run packaged scenario ``name`` (shrunk) under the full and the fast engine on ``chain_target``: every
    metric and every field of the result but :data:`NOT_ECONOMIC` must be equal, something must have been paid."""
    from dataclasses import asdict

    from simulation.engine import run_simulation
    from simulation.metrics import summarize
    from simulation.scenario import load_scenario

    def economics(result: RunResult) -> tuple[dict[str, Any], dict[str, Any]]:
        metrics = {k: v for k, v in summarize(result).to_json().items() if k not in NOT_ECONOMIC}
        return metrics, {k: v for k, v in asdict(result).items() if k not in NOT_ECONOMIC}

    scenario = load_scenario(name, ENGINE_CHECK + ENGINE_CHECK_SHRINK.get(name, []))
    full = run_simulation(scenario, chain_target=chain_target, work_dir=tmp_path / "full", engine="full")
    fast = run_simulation(scenario, chain_target=chain_target, work_dir=tmp_path / "fast", engine="fast")
    assert economics(fast) == economics(full)
    assert full.consumer_spend > 0 and full.channel_revenue_claimed == full.consumer_spend  # something was paid
    assert fast.chain.gas_used > 0 and fast.chain.tx_count > 0
