"""Shared services and their FastAPI dependency aliases."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy import Engine
from sqlalchemy.orm import Session

from marketplace.chain import Chain
from marketplace.chain.deployment import Deployment
from marketplace.chain.market import Market
from marketplace.indexer import Indexer


@dataclass
class Services:
    """What request handlers use: the chain, the contracts, the read model and its indexer."""

    chain: Chain
    deployment: Deployment
    market: Market
    engine: Engine
    indexer: Indexer
    sync_lock: threading.Lock = field(default_factory=threading.Lock)

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
