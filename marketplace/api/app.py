"""The FastAPI application factory."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

import marketplace
from marketplace.api.deps import Services
from marketplace.api.errors import install_error_handlers
from marketplace.api.limits import Limits, RequestLimits, upload_matcher
from marketplace.api.relayer import settlement_account
from marketplace.api.routes import accounts, agents, assets, auth, content, health, models, payments, stats, x402
from marketplace.api.schemas import ErrorBody
from marketplace.api.settings import Settings
from marketplace.api.state import ServerBase
from marketplace.chain import Chain, rpc_chain
from marketplace.chain.deployment import load_deployment
from marketplace.content import ContentStore
from marketplace.indexer import Indexer
from marketplace.indexer.database import open_database
from marketplace.inference import ModelHandler
from marketplace.keyfile import load_or_create_secret
from marketplace.payments.channels import ChainWatcher, ChannelGate, VoucherLedger, settler_for
from marketplace.payments.x402 import X402Payments
from marketplace.siwe import TokenIssuer

#: Everything that sends transactions from the relayer account shares this lock (nonce order).
RELAYER_LOCK = threading.Lock()


def build_services(
    settings: Settings, chain: Chain | None = None, model_handlers: dict[int, ModelHandler] | None = None
) -> Services:
    """Connect to the chain, check the manifest against it, open the read model, content store and
    voucher ledger."""
    chain = chain or rpc_chain(settings.rpc_url)
    deployment = load_deployment(settings.manifest, chain)
    engine = open_database(settings.resolved_database_url())
    ServerBase.metadata.create_all(engine)
    market = deployment.market(chain)
    relayer = settlement_account(settings, chain)
    ledger = VoucherLedger(settings.data_dir / "channels.sqlite3", synchronous=settings.voucher_sync)
    try:
        watcher = ChainWatcher(market, settings.chain_poll_interval)
        gate = ChannelGate(market, ledger, receiver_authorizer=relayer.address, watcher=watcher,
                           min_seconds_to_expiry=settings.channel_min_seconds_to_expiry)  # fmt: skip
        return Services(
            chain=chain,
            deployment=deployment,
            market=market,
            engine=engine,
            indexer=Indexer(chain, deployment, engine),
            settings=settings,
            content=ContentStore.for_chain(settings.data_dir / "content", chain, deployment.address("Marketplace")),
            relayer=relayer,
            tokens=TokenIssuer(load_or_create_secret(settings.data_dir / "auth.key"), settings.auth_token_ttl),
            ledger=ledger,
            watcher=watcher,
            gate=gate,
            settler=settler_for(gate, relayer, settings.settle_interval, send_lock=RELAYER_LOCK),
            x402=X402Payments(chain, market.token, relayer, send_lock=RELAYER_LOCK),
            model_handlers=dict(model_handlers or {}),
        )
    except BaseException:  # e.g. the ledger belongs to another chain: let the data directory go
        ledger.close()
        raise


def create_app(
    settings: Settings, *, chain: Chain | None = None, model_handlers: dict[int, ModelHandler] | None = None
) -> FastAPI:
    """The marketplace API for ``settings``.

    ``chain`` may be given (e.g. the embedded chain in tests); ``model_handlers`` maps model asset
    ids to the callables that answer their paid calls. Every request passes the per-request limits
    of ``settings`` (:mod:`marketplace.api.limits`); serve it with
    :func:`marketplace.api.server.server_config` for the connection-level ones too.
    """

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        services = build_services(settings, chain, model_handlers)
        services.indexer.sync()
        services.watcher.start()
        services.settler.start()
        app.state.services = services
        try:
            yield
        finally:
            services.settler.stop()  # claims every call answered so far
            services.watcher.stop()
            services.ledger.close()
            services.engine.dispose()

    app = FastAPI(title="agentmarket", version=marketplace.__version__, lifespan=lifespan)
    app.state.settings = settings  # (marketplace.api.server.server_config reads the connection limits here)
    install_error_handlers(app)
    for router in (
        health.router,
        auth.router,
        assets.router,
        content.router,
        x402.router,
        agents.router,
        accounts.router,
        models.router,
        payments.router,
        stats.router,
    ):
        app.include_router(router, responses={"4XX": {"model": ErrorBody, "description": "Client error"}})
    app.add_middleware(
        RequestLimits,
        limits=Limits.from_settings(settings),
        is_upload=upload_matcher(content.router.routes, [content.upload]),  # streamed, up to max_upload_bytes
    )
    return app


def attach_model_handler(app: FastAPI, asset_id: int, handler: ModelHandler) -> None:
    """Serve model ``asset_id`` with ``handler`` from now on (the app must be running: inside its lifespan)."""
    services: Services = app.state.services
    services.model_handlers[asset_id] = handler
