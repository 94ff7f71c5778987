"""A server follows one deployment on one chain: another chain's state is archived at start, never served.

A local chain started again (``agentmarket node`` restarted) keeps chain id 31337 and the contract
addresses; only its genesis block hash is new (:mod:`marketplace.chain.identity`). So at start
:func:`prepare_data_dir` (run by :func:`marketplace.api.app.build_services`) compares what the data
directory holds — the voucher ledger's binding, the read model's scope, the content store's chain
scopes — with the chain the RPC URL answers for and the manifest's deployment, and moves the state
of any other one into ``<data dir>/archive/<old chain>-<UTC time>/`` (nothing is ever deleted)::

    archive/eip155-31337-genesis-1a2b3c4d5e6f-20261129T221600Z/
        ARCHIVE.json       what was archived: from which chain, for which, when, what stayed unclaimed
        channels.sqlite3   the old voucher ledger (a complete ledger)
        index.sqlite3      the old read model's rows
        content/           the old chain's uploads, with a copy of the at-rest key (secret.key)

A ledger holding answered calls that were never claimed is refused instead (:class:`UnclaimedCalls`,
naming the amount and the channels): claim them by serving the old chain if it still runs, or
archive them anyway with ``reset=True`` (``agentmarket serve --reset``).

While the server runs, the chain watcher and the indexer notice a replaced chain; from then on
:class:`ChainGuard` answers every request but the API's documentation with 503 ``chain_replaced``
naming what to do, the channel gate refuses vouchers and the settler claims nothing.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Engine
from starlette.types import ASGIApp, Receive, Scope, Send

from marketplace.api.errors import error_body
from marketplace.chain.deployment import Deployment
from marketplace.chain.identity import ChainIdentity
from marketplace.chain.market import Market
from marketplace.chain.units import format_units
from marketplace.content import archive_scopes, chain_scope, stored_scopes
from marketplace.errors import AgentmarketError
from marketplace.indexer.indexer import archive_read_model, read_model_scope, stored_scope
from marketplace.payments.settler import chain_identity
from marketplace.payments.voucher_ledger import Outstanding, Synchronous, VoucherLedger

#: Where, under the data directory, the state of other chains goes.
ARCHIVE_DIR = "archive"
#: The voucher ledger's file in the data directory.
LEDGER_FILE = "channels.sqlite3"
#: The content store's directory in the data directory.
CONTENT_DIR = "content"


class UnclaimedCalls(AgentmarketError):
    """The data directory belongs to another chain and its ledger holds answered calls never claimed."""

    def __init__(self, detail: str, outstanding: Outstanding) -> None:
        super().__init__(detail)
        self.outstanding = outstanding


@dataclass(frozen=True)
class Archived:
    """What :func:`prepare_data_dir` moved into ``path``.

    ``old`` is the chain the archived state belonged to (None if no part named one), ``new`` the chain
    served now; ``parts`` says what moved; ``unclaimed`` what the archived ledger left unclaimed (base
    units; only with ``reset``).
    """

    path: Path
    old: ChainIdentity | None
    new: ChainIdentity
    parts: list[str]
    unclaimed: Outstanding | None = None
    details: dict[str, Any] = field(default_factory=dict)

    def describe(self, rpc_url: str | None) -> str:
        """One line for the operator: what changed, what moved where, what stays unclaimed."""
        moved = " and ".join([", ".join(self.parts[:-1]), self.parts[-1]] if len(self.parts) > 1 else self.parts)
        line = f"{_what_changed(self.old, self.new, rpc_url)}: archived the old {moved} into {self.path}"
        if self.unclaimed is not None and self.unclaimed.amount:
            line += f"; {_owed(self.unclaimed)} stay unclaimed there (--reset)"
        return line


def prepare_data_dir(
    data_dir: Path,
    deployment: Deployment,
    market: Market,
    engine: Engine,
    identity: ChainIdentity,
    *,
    reset: bool = False,
    rpc_url: str | None = None,
    voucher_sync: Synchronous = "full",
) -> Archived | None:
    """Archive what ``data_dir`` (and the read model in ``engine``) holds of any other chain or deployment.

    ``identity`` is the chain served now, ``deployment``/``market`` its contracts. Returns what was
    archived, or None when everything already follows this deployment. Raises :class:`UnclaimedCalls`
    (nothing moved) when the old ledger holds answered calls never claimed and ``reset`` is False,
    and ``VoucherLedgerError`` when another process uses the ledger.
    """
    ledger_path = data_dir / LEDGER_FILE
    content_root = data_dir / CONTENT_DIR
    binding = chain_identity(market)
    read_scope = read_model_scope(identity, deployment)
    content_scope = chain_scope(market.chain, deployment.address("Marketplace"))
    ledger = VoucherLedger(ledger_path, synchronous=voucher_sync) if ledger_path.exists() else None
    try:
        bound = ledger.bound_to() if ledger is not None else None
        old_ledger = bound if bound is not None and bound != binding else None
        indexed = stored_scope(engine)
        old_read_model = indexed if indexed is not None and indexed != read_scope else None
        old_content = [scope for scope in stored_scopes(content_root) if scope != content_scope]
        if old_ledger is None and old_read_model is None and not old_content:
            return None
        old = ChainIdentity.parse(old_ledger or old_read_model or old_content[0])
        owed = ledger.outstanding() if ledger is not None and old_ledger is not None else None
        if owed is not None and owed.amount and not reset:
            raise UnclaimedCalls(
                f"{_what_changed(old, identity, rpc_url)}, and its voucher ledger holds answered calls never claimed: "
                f"{_owed(owed)}. To claim them, serve the old one (its --rpc and --manifest) if it still runs; to "
                "archive them (unclaimed) with the old read model and content and serve this one: agentmarket serve "
                "--reset",
                owed,
            )
        archive = _new_archive(data_dir / ARCHIVE_DIR, old)
        parts: list[str] = []
        details: dict[str, Any] = {}
        if old_ledger is not None and ledger is not None:
            ledger.archive_to(archive)
            ledger = None
            parts.append("voucher ledger")
            details["voucher_ledger"] = {"bound_to": old_ledger, "file": LEDGER_FILE}
        if old_read_model is not None:
            rows = archive_read_model(engine, archive / "index.sqlite3")
            parts.append("read model")
            details["read_model"] = {"scope": old_read_model, "file": "index.sqlite3", "rows": rows}
        if old_content:
            moved = archive_scopes(content_root, content_scope, archive / CONTENT_DIR)
            parts.append("content")
            details["content"] = {"scopes": moved, "directory": CONTENT_DIR}
        archived = Archived(archive, old, identity, parts, owed, details)
        _write_record(archived, rpc_url, deployment)
        return archived
    finally:
        if ledger is not None:
            ledger.close()


class ChainGuard:
    """ASGI middleware: once the chain was replaced under the server, every HTTP request but the API's
    documentation gets 503 ``chain_replaced`` (what happened and what to do), before any route runs.

    It reads ``app.state.services.watcher.replaced`` (set by the chain watcher).
    """

    #: Paths still answered: the API's description does not depend on the chain.
    OPEN_PATHS = ("/openapi.json", "/docs", "/redoc")

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer 503 when the chain was replaced; otherwise pass the request on."""
        if scope["type"] == "http" and not scope["path"].startswith(self.OPEN_PATHS):
            services = getattr(scope["app"].state, "services", None) if "app" in scope else None
            replaced = services.watcher.replaced if services is not None else None
            if replaced is not None:
                body = error_body("chain_replaced", replaced.detail)
                await send({"type": "http.response.start", "status": 503, "headers": [
                    (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})  # fmt: skip
                await send({"type": "http.response.body", "body": body})
                return
        await self.app(scope, receive, send)


# ---------------------------------------------------------------------- internal


def _what_changed(old: ChainIdentity | None, new: ChainIdentity, rpc_url: str | None) -> str:
    where = rpc_url or "the chain"
    if old is None:
        return f"{where} is {new.short}, which this data directory did not follow"
    if old == new:
        return f"{where} runs a new deployment on {new.short}"
    was = f"genesis {old.genesis[:10]}…" if old.chain_id == new.chain_id else old.short
    return f"{where} is a new chain ({new.short}; this data directory followed {was})"


def _owed(owed: Outstanding) -> str:
    channels = ", ".join(str(channel) for channel in owed.channels[:10]) + (", …" if len(owed.channels) > 10 else "")
    noun = "channel" if len(owed.channels) == 1 else "channels"
    return f"{owed.amount} base units (= {format_units(owed.amount)} tUSD) on {noun} {channels}"


def _new_archive(root: Path, old: ChainIdentity | None) -> Path:
    """A new directory ``<root>/<old chain's slug>-<UTC time>`` (a suffix if that exists)."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    base = f"{old.slug if old else 'unknown-chain'}-{stamp}"
    root.mkdir(parents=True, exist_ok=True)
    for attempt in range(1, 1000):
        path = root / (base if attempt == 1 else f"{base}-{attempt}")
        try:
            path.mkdir()
        except FileExistsError:
            continue
        return path
    raise AgentmarketError(f"cannot make an archive directory under {root}: too many named {base}")


def _write_record(archived: Archived, rpc_url: str | None, deployment: Deployment) -> None:
    record = {
        "archived_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "old_chain": str(archived.old) if archived.old else None,
        "new_chain": str(archived.new),
        "new_marketplace": deployment.address("Marketplace"),
        "rpc_url": rpc_url,
        "parts": archived.parts,
        "unclaimed": None
        if archived.unclaimed is None
        else {"amount": str(archived.unclaimed.amount), "channels": archived.unclaimed.channels},
        **archived.details,
    }
    (archived.path / "ARCHIVE.json").write_text(json.dumps(record, indent=2) + "\n")
