"""The agent tests' set-up: prices of the dataset and model bob publishes (``assets`` in
``tests/agents/conftest.py``), a generous budget, and wallets and tool contexts bound to an in-process server."""

from __future__ import annotations

from pathlib import Path

from agents import AgentWallet, AuditLedger, Budget
from agents.tools import ToolContext
from marketplace.chain.units import to_units

DATA_PRICE = to_units(2)
MODEL_PRICE = to_units("0.25")
GENEROUS = Budget(run_cap=to_units(100), asset_cap=to_units(50), call_ceiling=to_units(10))


def adder(payload):
    """A stand-in model."""
    return {"sum": sum(float(x) for x in payload)}


def make_wallet(account, tmp_path, server, chain, budget: Budget = GENEROUS, **options) -> AgentWallet:
    return AgentWallet.connect(account, budget, AuditLedger(tmp_path / "ledger.jsonl"), "http://testserver", chain,
                               http=server, **options)  # fmt: skip


def context_for(account, server, chain, tmp_path: Path, budget: Budget | None = None) -> ToolContext:
    wallet = make_wallet(account, tmp_path / account.address, server, chain, *([budget] if budget else []))
    return ToolContext(wallet, tmp_path / "downloads")
