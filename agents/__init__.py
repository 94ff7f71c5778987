"""Agents that trade on the marketplace: wallets with budgets (``agents.wallet``) and tools (``agents.tools``).

Layering: this package imports ``marketplace``; nothing in ``marketplace`` imports it.
"""

from agents.errors import (
    ActionRefused,
    AgentError,
    BadArguments,
    NotFound,
    OverBudget,
    PaymentRefused,
    UnknownTool,
)
from agents.wallet import AgentWallet, AuditLedger, Budget, BudgetGuard, LedgerEntry

__all__ = [
    "ActionRefused",
    "AgentError",
    "AgentWallet",
    "AuditLedger",
    "BadArguments",
    "Budget",
    "BudgetGuard",
    "LedgerEntry",
    "NotFound",
    "OverBudget",
    "PaymentRefused",
    "UnknownTool",
]
