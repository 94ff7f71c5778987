"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from sqlalchemy import create_engine

import marketplace
from marketplace.api.deps import Services
from marketplace.api.errors import install_error_handlers
from marketplace.api.routes import agents, assets, health
from marketplace.api.settings import Settings
from marketplace.chain import Chain, rpc_chain
from marketplace.chain.deployment import load_deployment
from marketplace.indexer import Indexer


def build_services(settings: Settings, chain: Chain | None = None) -> Services:
    """Connect to the chain, check the manifest against it, and open the read model."""
    chain = chain or rpc_chain(settings.rpc_url)
    deployment = load_deployment(settings.manifest, chain)
    engine = create_engine(settings.resolved_database_url())
    return Services(chain=chain, deployment=deployment, market=deployment.market(chain), engine=engine,
                    indexer=Indexer(chain, deployment, engine))  # fmt: skip


def create_app(settings: Settings, *, chain: Chain | None = None) -> FastAPI:
    """The marketplace API for ``settings`` (``chain`` may be given, e.g. the embedded chain in tests)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(settings, chain)
        services.indexer.sync()
        app.state.services = services
        yield
        services.engine.dispose()

    app = FastAPI(title="agentmarket", version=marketplace.__version__, lifespan=lifespan)
    install_error_handlers(app)
    for router in (health.router, assets.router, agents.router):
        app.include_router(router)
    return app
