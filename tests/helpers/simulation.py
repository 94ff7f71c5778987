"""Helpers for simulation tests: a tiny scenario's overrides and a PNG check."""

from __future__ import annotations

from pathlib import Path

#: ``--param`` overrides that shrink the baseline to seconds: 3 producers, 1 builder, 2 consumers, 2 rounds.
TINY = ["rounds=2", "producers.count=3", "producers.shard_size=80", "builders.count=1", "builders.models=['logreg']",
        "consumers.count=2", "consumers.queries_per_round=4"]  # fmt: skip

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path) -> None:
    """``path`` is a non-trivial PNG file."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, path
    assert len(data) > 5_000, path
