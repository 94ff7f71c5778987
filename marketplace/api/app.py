"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from sqlalchemy import create_engine

import marketplace
from marketplace.api.deps import Services
from marketplace.api.errors import install_error_handlers
from marketplace.api.routes import accounts, agents, assets, auth, content, health
from marketplace.api.settings import Settings
from marketplace.api.state import ServerBase
from marketplace.chain import LOCAL_CHAIN_ID, Chain, rpc_chain
from marketplace.chain.deployment import load_deployment
from marketplace.content import ContentStore
from marketplace.errors import AgentmarketError
from marketplace.indexer import Indexer
from marketplace.keyfile import load_or_create_secret
from marketplace.siwe import TokenIssuer


def _relayer(settings: Settings, chain: Chain) -> LocalAccount:
    if settings.relayer_key is not None:
        try:
            return Account.from_key(settings.relayer_key.get_secret_value())
        except (ValueError, TypeError):
            raise AgentmarketError("AGENTMARKET_RELAYER_KEY is not a valid private key (want 0x + 64 hex)") from None
    if chain.chain_id != LOCAL_CHAIN_ID:
        raise AgentmarketError(f"chain id {chain.chain_id} is not a local dev chain; set AGENTMARKET_RELAYER_KEY")
    return chain.accounts[-1]


def build_services(settings: Settings, chain: Chain | None = None) -> Services:
    """Connect to the chain, check the manifest against it, and open the read model and content store."""
    chain = chain or rpc_chain(settings.rpc_url)
    deployment = load_deployment(settings.manifest, chain)
    engine = create_engine(settings.resolved_database_url())
    ServerBase.metadata.create_all(engine)
    return Services(
        chain=chain,
        deployment=deployment,
        market=deployment.market(chain),
        engine=engine,
        indexer=Indexer(chain, deployment, engine),
        settings=settings,
        content=ContentStore(settings.data_dir / "content"),
        relayer=_relayer(settings, chain),
        tokens=TokenIssuer(load_or_create_secret(settings.data_dir / "auth.key"), settings.auth_token_ttl),
    )


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
    for router in (health.router, auth.router, assets.router, content.router, agents.router, accounts.router):
        app.include_router(router)
    return app
