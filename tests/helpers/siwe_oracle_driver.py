"""Run by ``tests/api/test_siwe.py`` inside its throwaway environment that holds PyPI ``siwe`` (never in ours).

Reads a JSON list of texts on stdin; writes, for each, what ``siwe.SiweMessage.from_message`` (its
ABNF parser, then its field validation) made of it: ``{"ok": true, "fields": {...}}`` or
``{"ok": false, "error": "..."}``.
"""

from __future__ import annotations

import json
import sys

from siwe import SiweMessage

FIELDS = ("scheme", "domain", "address", "statement", "uri", "version", "chain_id", "nonce", "issued_at",
          "expiration_time", "not_before", "request_id", "resources")  # fmt: skip


def _plain(name: str, value: object) -> object:
    if value is None or name == "chain_id":
        return value
    if name == "resources":
        return [str(resource) for resource in value]  # type: ignore[attr-defined]
    return str(getattr(value, "value", value))  # the version is an Enum


def main() -> None:
    verdicts = []
    for text in json.load(sys.stdin):
        try:
            message = SiweMessage.from_message(text, abnf=True)
        except Exception as exc:  # the library raises ValueError and pydantic's ValidationError
            verdicts.append({"ok": False, "error": f"{type(exc).__name__}: {str(exc)[:300]}"})
            continue
        verdicts.append({"ok": True, "fields": {name: _plain(name, getattr(message, name)) for name in FIELDS}})
    json.dump(verdicts, sys.stdout)


if __name__ == "__main__":
    main()
