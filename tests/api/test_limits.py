"""The gateway's limits without a chain: the JSON depth scan and the limit settings.

The non-recursive depth scan runs before any ``json.loads`` (marketplace/api/limits.py). It must
agree with the nesting ``json.loads`` really builds, for any document and any encoding json accepts;
never be fooled by brackets inside strings or escaped quotes; and stay linear on inputs built to
make a regex backtrack. The limits are settings: a bad ``AGENTMARKET_*`` value stops ``serve`` with
one line. (The limits against a live server: tests/payments/test_gateway_limits.py.)
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketplace.protocol.jsonlimits import header_too_deep, too_deep
from tests.helpers.cli import assert_one_line_error, run_cli

TRICKY_TEXT = st.text(alphabet='[]{}"\\,:ab \u00e9\U0001f600', max_size=12)
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | TRICKY_TEXT,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(TRICKY_TEXT, children, max_size=3),
    max_leaves=40,
)
ENCODINGS = ["utf-8", "utf-8-sig", "utf-16-le", "utf-16-be", "utf-16", "utf-32-le", "utf-32-be", "utf-32"]


def depth(value: Any) -> int:
    if isinstance(value, list):
        return 1 + max(map(depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(depth, value.values()), default=0)
    return 0


@settings(max_examples=300, deadline=None)
@given(value=JSON_VALUES, limit=st.integers(min_value=0, max_value=8), encoding=st.sampled_from(ENCODINGS),
       ascii_only=st.booleans())  # fmt: skip
def test_the_scan_agrees_with_what_json_loads_builds(value: Any, limit: int, encoding: str, ascii_only: bool):
    text = json.dumps(value, ensure_ascii=ascii_only)
    document = text.encode(encoding)
    assert depth(json.loads(document)) == depth(value)
    assert too_deep(document, limit) == (depth(value) > limit)
    assert too_deep(text, limit) == (depth(value) > limit)


@settings(max_examples=300, deadline=None)
@given(prefix=JSON_VALUES, levels=st.integers(min_value=1, max_value=30), tail=st.text(max_size=8))
def test_an_invalid_document_is_measured_as_deep_as_its_valid_prefix_goes(prefix: Any, levels: int, tail: str):
    """json.loads recurses into ``[[[…`` before it meets the garbage at the end: the scan counts it."""
    document = b"[" * levels + json.dumps(prefix).encode() + tail.encode()
    assert too_deep(document, levels + depth(prefix) - 1)


@pytest.mark.parametrize(
    ("document", "deep"),
    [
        (b'"[[[[[[[[[["', False),  # brackets in a string
        (b'["\\"[[[[[[[[[[", 1]', False),  # an escaped quote does not end the string
        (b'["\\\\", [[[[[[[[[[]]]]]]]]]]]', True),  # an escaped backslash does
        (b'"unterminated [[[[[[[[[[', False),
        (b"[" * 11, True),
        (b"\xef\xbb\xbf" + b"[" * 11, True),  # UTF-8 BOM
        (b"[" * 11 + b"\xff", False),  # not UTF-8: json.loads refuses to decode it, so never recurses
    ],
)
def test_strings_escapes_and_encodings(document: bytes, deep: bool):
    assert too_deep(document, 10) is deep


@pytest.mark.parametrize(
    "document",
    [
        b"[" * 1_000_000,
        b"[]" * 500_000,
        b'"' + b'\\"' * 500_000,  # would make a naive string regex backtrack quadratically
        b'"[",' * 250_000,
        b"[" * 64 + b'"' + b"\\" * 999_000,
    ],
)
def test_a_megabyte_of_hostile_input_is_scanned_quickly(document: bytes):
    started = time.perf_counter()
    too_deep(document, 64)
    assert time.perf_counter() - started < 1.0


def test_header_readings_cover_what_each_parser_decodes():
    deep = b"[" * 100 + b"]" * 100
    assert header_too_deep(base64.b64encode(deep), 64)
    assert header_too_deep(base64.urlsafe_b64encode(deep).rstrip(b"="), 64)  # the voucher parser's reading
    spaced = b"!".join(bytes([c]) for c in base64.b64encode(deep))  # the x402 SDK skips non-base64 characters
    assert header_too_deep(spaced, 64)
    assert header_too_deep(deep, 64)  # raw JSON
    shallow = base64.b64encode(
        json.dumps({"channelId": 1, "cumulativeAmount": "5", "signature": "0x" + "ab" * 65}).encode()
    )
    assert not header_too_deep(shallow, 64)
    assert not header_too_deep(b"not base64 at all \xe9\xff" * 10, 64)


def test_without_the_scan_deep_json_kills_a_process_that_imports_the_server():
    """Why the scan exists: once the server's imports have raised the recursion limit (py_ecc sets
    100,000), ``json.loads`` of 100,000 nested arrays overflows the C stack instead of raising."""
    script = (
        "import sys, json, marketplace.api.app\n"
        "assert sys.getrecursionlimit() >= 100_000, sys.getrecursionlimit()\n"
        "json.loads('[' * 100_000 + ']' * 100_000)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=False)
    assert "AssertionError" not in result.stderr, result.stderr
    assert result.returncode < 0 or "RecursionError" in result.stderr  # killed by a signal (SIGSEGV here)
    assert too_deep(b"[" * 100_000 + b"]" * 100_000, 64)


@pytest.mark.parametrize(
    ("variable", "value", "fragment"),
    [
        ("AGENTMARKET_HEAD_TIMEOUT", "soon", "setting head_timeout (AGENTMARKET_HEAD_TIMEOUT) is invalid"),
        ("AGENTMARKET_MAX_CONNECTIONS", "0", "AGENTMARKET_MAX_CONNECTIONS) is invalid: Input should be greater"),
        ("AGENTMARKET_MAX_BODY_BYTES", "-1", "AGENTMARKET_MAX_BODY_BYTES"),
    ],
)
def test_a_bad_limit_stops_serve_with_one_line(tmp_path, variable: str, value: str, fragment: str):
    result = run_cli("serve", "--rpc", "http://127.0.0.1:9", "--manifest", str(tmp_path / "none.json"),
                     env={variable: value})  # fmt: skip
    assert_one_line_error(result, fragment)
    assert "soon" not in result.stderr  # values are not echoed (some settings are secrets)
