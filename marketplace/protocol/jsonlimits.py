"""Bounded JSON: parse what a peer sent without letting it choose how deep or how large it is. No I/O.

Python's C JSON decoder recurses once per level of nesting. Once an imported library (``py_ecc``,
pulled in by eth-account) has raised the recursion limit to 100,000, deeply nested input such as
``[[[…100,000 levels…]]]`` (200 KB) overflows the C stack instead of raising ``RecursionError``: the
process dies. So every JSON document that comes from a peer — a request body or header at the
gateway (:mod:`marketplace.api.limits`), a response body or header in the SDK
(:mod:`marketplace.client.sdk`) — is measured first by :func:`too_deep`, a non-recursive scan, and
parsed only when it is shallow enough: :func:`loads` does both, and bounds the size too.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from itertools import accumulate
from typing import Any

__all__ = ["JsonLimitError", "JsonTooDeep", "JsonTooLarge", "header_too_deep", "loads", "too_deep"]

#: A JSON string, or an unterminated one running to the end of the input. It matches wherever a
#: quote starts (so the scan never backtracks: linear time on any input).
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKETS = re.compile(r"[^\[\]{}]+")
_RUN = 64 * 1024
_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


class JsonLimitError(ValueError):
    """A JSON document broke a limit before it was parsed (a ``ValueError``, as ``json.loads`` raises)."""


class JsonTooDeep(JsonLimitError):
    """Arrays and objects nest deeper than ``limit`` levels."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"JSON nested deeper than {limit} levels")
        self.limit = limit


class JsonTooLarge(JsonLimitError):
    """The document is longer than ``limit`` bytes (or characters, for text)."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__(f"JSON of {size} bytes, more than the limit of {limit}")
        self.size, self.limit = size, limit


def too_deep(document: bytes | str, limit: int) -> bool:
    """True if arrays and objects nest more than ``limit`` levels deep in ``document``; no parsing,
    no recursion.

    ``document`` is JSON text, or bytes in any encoding ``json.loads`` accepts (UTF-8, -16 or -32,
    detected the same way). Brackets inside strings do not count. Invalid JSON is measured too, as
    far as its brackets outside strings go: ``json.loads`` recurses into a valid prefix before it
    finds an error, and on a valid prefix this scan and the JSON grammar agree. (A parser that decodes
    bytes as UTF-8 whatever their encoding reads the same text, or fails at its first character.)
    Cost: one byte count when the document holds at most ``limit`` opening brackets (its depth cannot
    be more), else linear in its length (no backtracking on any input).
    """
    if isinstance(document, bytes | bytearray | memoryview):
        document = bytes(document)
        # '[' and '{' are these bytes in every encoding json accepts, whatever surrounds them.
        if document.count(b"[") + document.count(b"{") <= limit:
            return False
        try:
            document = document.decode(json.detect_encoding(document), "surrogatepass")
        except (UnicodeDecodeError, LookupError):
            return False  # json.loads refuses it before parsing anything
    elif document.count("[") + document.count("{") <= limit:
        return False
    brackets = _NOT_BRACKETS.sub("", _STRING.sub("", document)).encode("ascii")
    depth = 0
    for start in range(0, len(brackets), _RUN):  # in runs, to stop at the first run that goes too deep
        levels = list(accumulate(map(_STEP.__getitem__, brackets[start : start + _RUN]), initial=depth))
        if max(levels) > limit:
            return True
        depth = levels[-1]
    return False


def header_too_deep(value: bytes | str, limit: int) -> bool:
    """True if a reader could decode JSON nested more than ``limit`` deep from a header ``value``:
    read as raw JSON, as standard base64 (lenient: other characters skipped, as the x402 SDK
    decodes) or as URL-safe base64 with optional padding (as the channel voucher parser decodes)."""
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogateescape")
    if len(value) <= limit:
        return False  # n bytes nest at most n deep, and the base64 readings are shorter
    readings = [value, value]
    if b"-" in value or b"_" in value:  # (else both base64 readings are the same bytes)
        readings.append(value.replace(b"-", b"+").replace(b"_", b"/"))
    for index in range(1, len(readings)):
        text = readings[index]
        try:
            readings[index] = base64.b64decode(text + b"=" * (-len(text) % 4), validate=False)
        except (binascii.Error, ValueError):
            readings[index] = b""
    return any(too_deep(reading, limit) for reading in readings)


def loads(document: bytes | str, *, max_depth: int, max_bytes: int | None = None) -> Any:
    """``json.loads(document)`` once it is at most ``max_bytes`` long (bytes; characters for text) and
    nests at most ``max_depth`` levels; strict JSON (``NaN`` and ``Infinity`` are refused).

    Raises :class:`JsonTooLarge`, :class:`JsonTooDeep`, or ``ValueError`` for a document that is not
    JSON (``json.JSONDecodeError``, ``UnicodeDecodeError``); all are ``ValueError``.
    """
    if max_bytes is not None and len(document) > max_bytes:
        raise JsonTooLarge(len(document), max_bytes)
    if too_deep(document, max_depth):
        raise JsonTooDeep(max_depth)
    return json.loads(document, parse_constant=_no_constant)


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON (RFC 8259 numbers are finite)")
