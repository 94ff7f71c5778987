"""Server-owned state that is not derived from the chain (kept apart from the rebuildable read model).

Login nonces (Sign-In with Ethereum) live here: single use, expiring, and bounded — per client and
address, per client, and in all — so that asking for nonces cannot grow the server's storage.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from sqlalchemy import BigInteger, Engine, Integer, String, delete, func, select, true
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from marketplace.errors import AgentmarketError


class ServerBase(DeclarativeBase):
    """Tables the indexer never drops."""


class LoginNonce(ServerBase):
    """An unused Sign-In with Ethereum nonce: deleted when used or, once expired, by the next issue.

    (Table ``siwe_nonces``: the earlier ``login_nonces`` had no client column; it is left unused.)
    """

    __tablename__ = "siwe_nonces"
    #: Issue order (the oldest of a client's nonces for an address is dropped first).
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    nonce: Mapped[str] = mapped_column(String(64), unique=True)
    #: The EIP-55 address the nonce was issued for.
    address: Mapped[str] = mapped_column(String(42), index=True)
    #: Who asked for it: an IP address (an IPv6 /64), as the route names it.
    client: Mapped[str] = mapped_column(String(64), index=True)
    #: Unix seconds; the nonce is refused from then on.
    expires_at: Mapped[int] = mapped_column(BigInteger, index=True)


@dataclass(frozen=True)
class NonceLimits:
    """How long a login nonce lives (seconds) and how many may wait unused (see ``Settings``)."""

    ttl: int
    per_address: int
    per_client: int
    total: int


class NonceLimitError(AgentmarketError):
    """Too many unused login nonces (for this client, or in all); ``retry_after`` is in seconds."""

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail)
        self.retry_after = retry_after


#: Issuing is check-then-insert: one at a time per process, so the caps hold exactly.
_ISSUE_LOCK = threading.Lock()


def issue_login_nonce(engine: Engine, *, nonce: str, address: str, client: str, now: int, limits: NonceLimits) -> int:
    """Store ``nonce`` for ``address``, asked for by ``client``; returns its expiry (Unix seconds).

    First deletes every expired nonce (at most ``limits.total`` rows: no more are ever stored), then
    this client's oldest nonces for ``address`` beyond ``limits.per_address - 1``. Raises
    ``NonceLimitError`` if ``client`` already holds ``limits.per_client`` unused nonces, or the server
    ``limits.total``.
    """
    expires = now + limits.ttl
    with _ISSUE_LOCK, Session(engine) as session, session.begin():
        session.execute(delete(LoginNonce).where(LoginNonce.expires_at <= now))
        own = session.scalars(
            select(LoginNonce.id)
            .where(LoginNonce.client == client, LoginNonce.address == address)
            .order_by(LoginNonce.id.desc())
        ).all()
        if len(own) >= limits.per_address:
            session.execute(delete(LoginNonce).where(LoginNonce.id.in_(own[limits.per_address - 1 :])))
        for scope, condition, cap in (
            ("this client", LoginNonce.client == client, limits.per_client),
            ("this server", true(), limits.total),
        ):
            held, oldest = session.execute(
                select(func.count(), func.min(LoginNonce.expires_at)).select_from(LoginNonce).where(condition)
            ).one()
            if held >= cap:
                wait = max(1, int(oldest) - now)
                raise NonceLimitError(
                    f"{scope} holds {held} unused login nonces (at most {cap}); use one, or ask again in {wait} s",
                    wait,
                )
        session.add(LoginNonce(nonce=nonce, address=address, client=client, expires_at=expires))
    return expires


def consume_login_nonce(engine: Engine, *, nonce: str, address: str, now: int) -> bool:
    """Use ``nonce`` once: True (and it is gone) if it was issued for ``address`` and has not expired."""
    with Session(engine) as session, session.begin():
        used = session.execute(
            delete(LoginNonce).where(
                LoginNonce.nonce == nonce, LoginNonce.address == address, LoginNonce.expires_at > now
            )
        )
        return used.rowcount == 1


def count_login_nonces(engine: Engine) -> int:
    """How many login nonces are stored (unused, expired ones included until the next issue)."""
    with Session(engine) as session:
        return session.scalar(select(func.count()).select_from(LoginNonce)) or 0
