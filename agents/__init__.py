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
from agents.wallet import AgentWallet, AuditEntry, AuditLedger, Budget, BudgetGuard

__all__ = [
    "ActionRefused",
    "AgentError",
    "AgentWallet",
    "AuditEntry",
    "AuditLedger",
    "BadArguments",
    "Budget",
    "BudgetGuard",
    "NotFound",
    "OverBudget",
    "PaymentRefused",
    "UnknownTool",
]
