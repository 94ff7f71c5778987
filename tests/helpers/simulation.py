"""Helpers for simulation tests: a tiny scenario's overrides and a check of a figure's files."""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ElementTree
from pathlib import Path

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
