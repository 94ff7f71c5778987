"""Typed errors raised by agent wallets and tools (never turned into strings)."""

from __future__ import annotations

from typing import Any

from marketplace.errors import AgentmarketError


class AgentError(AgentmarketError):
    """Base of every error an agent wallet or tool raises on purpose."""


class OverBudget(AgentError):
    """A payment was refused before signing: it would exceed the ``kind`` cap.

    ``kind`` is ``"run"`` (the whole run), ``"asset"`` (one asset) or ``"per_call"`` (one price).
    """

    def __init__(self, kind: str, limit: int, spent: int, requested: int, asset_id: int | None = None) -> None:
        where = f" for asset {asset_id}" if asset_id is not None else ""
        super().__init__(f"over the {kind} budget{where}: limit {limit}, spent {spent}, requested {requested}")
        self.kind, self.limit, self.spent, self.requested, self.asset_id = kind, limit, spent, requested, asset_id


class UnknownTool(AgentError):
    """No tool has that name."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"no tool named {name!r}; known tools: {', '.join(known)}")
        self.name, self.known = name, known


class BadArguments(AgentError):
    """A tool's arguments failed validation; ``errors`` is pydantic's list of problems."""

    def __init__(self, tool: str, errors: list[dict[str, Any]]) -> None:
        summary = "; ".join(f"{'.'.join(map(str, e.get('loc', ()))) or '<root>'}: {e.get('msg')}" for e in errors)
        super().__init__(f"bad arguments for {tool}: {summary}")
        self.tool, self.errors = tool, errors


class NotFound(AgentError):
    """The asset, channel or agent named does not exist (wraps the server's 404)."""


class PaymentRefused(AgentError):
    """The marketplace or the chain refused a payment (HTTP 402/409, or a reverted payment transaction)."""


class ActionRefused(AgentError):
    """The marketplace or the chain refused a non-payment action (e.g. a rating from a non-payer)."""


class BadDataset(AgentError):
    """Dataset content could not be decoded (wrong header, a malformed line, a non-numeric value)."""


def translate(exc: Exception, *, payment: bool) -> Exception:
    """The typed agent error for a marketplace failure (the caller raises it ``from exc``).

    404 → NotFound; 402/409, or a revert of a payment transaction → PaymentRefused; another revert, or the
    server refusing the request itself (400, 413, 422: e.g. a model that rejects its input, which costs
    nothing) → ActionRefused. Anything else is returned unchanged (it is already typed).
    """
    from marketplace.chain import ContractRevert
    from marketplace.client import ApiClientError

    if isinstance(exc, ApiClientError):
        if exc.status == 404:
            return NotFound(exc.detail)
        if exc.status in (402, 409):
            return PaymentRefused(f"{exc.detail} ({exc.code})")
        if exc.status in (400, 413, 422):
            return ActionRefused(f"{exc.detail} ({exc.code})")
    if isinstance(exc, ContractRevert):
        return (PaymentRefused if payment else ActionRefused)(str(exc))
    return exc
