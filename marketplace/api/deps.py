"""Shared services and their FastAPI dependency aliases."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import Annotated

from eth_account.signers.local import LocalAccount
from fastapi import Depends, Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from marketplace.api.errors import ApiError
from marketplace.api.settings import Settings
from marketplace.chain import Chain
from marketplace.chain.deployment import Deployment
from marketplace.chain.market import Market
from marketplace.chain.records import Asset
from marketplace.content import ContentStore
from marketplace.indexer import Indexer
from marketplace.inference import ModelHandler
from marketplace.payments.channels import ChainWatcher, ChannelGate, Settler, VoucherLedger
from marketplace.payments.x402 import X402Payments
from marketplace.siwe import SiweError, TokenIssuer


@dataclass
class Services:
    """What request handlers use: the chain, the contracts, the read model and its indexer."""

    chain: Chain
    deployment: Deployment
    market: Market
    engine: Engine
    indexer: Indexer
    settings: Settings
    content: ContentStore
    relayer: LocalAccount
    tokens: TokenIssuer
    ledger: VoucherLedger
    watcher: ChainWatcher
    gate: ChannelGate
    settler: Settler
    x402: X402Payments
    model_handlers: dict[int, ModelHandler] = field(default_factory=dict)
    sync_lock: threading.Lock = field(default_factory=threading.Lock)

    def asset(self, asset_id: int) -> Asset:
        """The asset as read on chain a moment ago (hot paths: paid calls); the channel gate's cache.

        A price change or delisting reaches paid calls within the cache's ``max_age`` (2 s by default).
        """
        return self.gate.assets.get(asset_id)

    def fresh_session(self) -> Session:
        """A database session over a read model brought up to the chain head first."""
        with self.sync_lock:
            self.indexer.sync()
        return Session(self.engine)


def get_services(request: Request) -> Services:
    """The app's services."""
    return request.app.state.services


def get_session(services: Annotated[Services, Depends(get_services)]):
    """A session over an up-to-date read model, closed after the request."""
    session = services.fresh_session()
    try:
        yield session
    finally:
        session.close()


ServicesDep = Annotated[Services, Depends(get_services)]
SessionDep = Annotated[Session, Depends(get_session)]


#: RFC 6750 ``b64token`` (RFC 7235 ``token68``): the only characters a bearer token may hold.
_BEARER_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")
#: Longest bearer token looked at (an issued one is about 110 characters).
MAX_TOKEN_LENGTH = 512


#: The bearer scheme OpenAPI declares (``bearerAuth``) on every route that needs a caller; it only documents:
#: :func:`get_caller` reads and checks the header itself.
bearer_auth = HTTPBearer(
    auto_error=False,
    scheme_name="bearerAuth",
    bearerFormat="agentmarket token",
    description="A token from POST /v1/auth/verify (Sign-In with Ethereum, EIP-4361), sent as Authorization: Bearer",
)


def get_caller(
    services: ServicesDep,
    request: Request,
    _bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_auth)] = None,
) -> str:
    """The address a valid bearer token was issued to.

    401 ``unauthorized`` for a missing header, another scheme, a token that is not RFC 6750
    ``b64token`` syntax (non-ASCII included) or longer than ``MAX_TOKEN_LENGTH`` characters, and a
    token the issuer refuses. The scheme name is case-insensitive (RFC 7235).
    """
    scheme, _, token = (request.headers.get("authorization") or "").strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        raise ApiError(401, "unauthorized", "send Authorization: Bearer <token>; get one from /v1/auth/verify")
    if len(token) > MAX_TOKEN_LENGTH or not _BEARER_TOKEN.fullmatch(token):
        raise ApiError(401, "unauthorized", "the bearer token is malformed; sign in again at /v1/auth/verify")
    try:
        return services.tokens.verify(token)
    except SiweError as exc:
        raise ApiError(401, "unauthorized", str(exc)) from None
    except (ValueError, TypeError, UnicodeError):  # a token the issuer cannot even read is not valid either
        raise ApiError(401, "unauthorized", "the bearer token is malformed; sign in again at /v1/auth/verify") from None


CallerDep = Annotated[str, Depends(get_caller)]
