"""The FastAPI application factory."""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.routing import APIRoute

import marketplace
from marketplace.api.deps import Services
from marketplace.api.errors import install_error_handlers
from marketplace.api.lifecycle import LEDGER_FILE, ChainGuard, prepare_data_dir
from marketplace.api.limits import Limits, RequestLimits, upload_matcher
from marketplace.api.relayer import settlement_account
from marketplace.api.routes import accounts, agents, assets, auth, content, health, invoke, payments, stats, x402
from marketplace.api.settings import Settings
from marketplace.api.state import ServerBase
from marketplace.chain import Chain, rpc_chain
from marketplace.chain.deployment import load_deployment
from marketplace.chain.identity import ChainIdentity
from marketplace.content import ContentStore
from marketplace.indexer import Indexer
from marketplace.indexer.database import open_database
from marketplace.inference import ModelHandler
from marketplace.keyfile import load_or_create_secret
from marketplace.payments.channels import ChainWatcher, ChannelGate, VoucherLedger, settler_for
from marketplace.payments.x402 import X402Payments
from marketplace.protocol.wire import ErrorBody
from marketplace.siwe import TokenIssuer

#: Everything that sends transactions from the relayer account shares this lock (nonce order).
RELAYER_LOCK = threading.Lock()

log = logging.getLogger("agentmarket.api")


#: What /openapi.json says about the API as a whole (a generated client's docstring).
OPENAPI_DESCRIPTION = (
    "A marketplace where agents pay in a stablecoin for data and model calls, on chain. Sign in with Ethereum "
    "(POST /v1/auth/nonce, POST /v1/auth/verify) for a bearer token; pay per request with x402 v2 "
    "(PAYMENT-SIGNATURE after a 402's PAYMENT-REQUIRED) or per call with a payment-channel voucher "
    "(X-Payment-Channel). Every error is JSON {error, detail}; amounts are decimal strings of token base units."
)
#: The error answers every route may give, as OpenAPI ranges.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    "4XX": {"model": ErrorBody, "description": "Client error"},
    "5XX": {
        "model": ErrorBody,
        "description": "Server-side failure: 503 chain_unavailable / database_unavailable (retry later), 500 internal",
    },
}


def operation_id(route: APIRoute) -> str:
    """A route's OpenAPI operation id: the one its decorator names (``getAsset``…), else its endpoint's name
    in camelCase (so a route added without one still gets a stable, readable id)."""
    head, *rest = route.name.split("_")
    return head + "".join(word.capitalize() for word in rest)


def _document_errors_as_json(app: FastAPI) -> None:
    """Make ``/openapi.json`` say that every error answer (4xx, 5xx) a route declares without a body is an
    :class:`ErrorBody`, as it is: so a generated client parses ``{error, detail}`` for a 413 as for any 4XX."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    for status, response in operation.get("responses", {}).items():
                        if str(status)[:1] in "45" and "content" not in response:
                            response["content"] = body
        return app.openapi_schema  # (generate() stored it)

    app.openapi = openapi  # type: ignore[method-assign]


def build_services(
    settings: Settings,
    chain: Chain | None = None,
    model_handlers: dict[int, ModelHandler] | None = None,
    *,
    reset: bool = False,
    announce: Callable[[str], None] | None = None,
) -> Services:
    """Connect to the chain, check the manifest against it, open the read model, content store and
    voucher ledger.

    State the data directory (or the read model's database) holds of another chain or deployment —
    a restarted node is a new chain — is archived first, and ``announce`` (default: the log) gets one
    line saying so (:func:`marketplace.api.lifecycle.prepare_data_dir`); a ledger with answered calls
    never claimed is refused (:class:`~marketplace.api.lifecycle.UnclaimedCalls`) unless ``reset``.
    """
    chain = chain or rpc_chain(settings.rpc_url)
    deployment = load_deployment(settings.manifest, chain)
    engine = open_database(settings.resolved_database_url())
    try:
        ServerBase.metadata.create_all(engine)
        market = deployment.market(chain)
        relayer = settlement_account(settings, chain)
        identity = ChainIdentity.of(chain)
        archived = prepare_data_dir(settings.data_dir, deployment, market, engine, identity, reset=reset,
                                    rpc_url=chain.rpc_url, voucher_sync=settings.voucher_sync)  # fmt: skip
        if archived is not None:
            (announce or log.warning)(archived.describe(chain.rpc_url))
        ledger = VoucherLedger(settings.data_dir / LEDGER_FILE, synchronous=settings.voucher_sync)
    except BaseException:
        engine.dispose()
        raise
    try:
        watcher = ChainWatcher(market, settings.chain_poll_interval, identity=identity)
        gate = ChannelGate(market, ledger, receiver_authorizer=relayer.address, watcher=watcher,
                           min_seconds_to_expiry=settings.channel_min_seconds_to_expiry)  # fmt: skip
        return Services(
            chain=chain,
            deployment=deployment,
            market=market,
            engine=engine,
            indexer=Indexer(chain, deployment, engine, identity=identity),
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
        engine.dispose()
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

    app = FastAPI(
        title="agentmarket",
        version=marketplace.__version__,
        description=OPENAPI_DESCRIPTION,
        lifespan=lifespan,
        generate_unique_id_function=operation_id,
    )
    app.state.settings = settings  # (marketplace.api.server.server_config reads the connection limits here)
    _document_errors_as_json(app)
    install_error_handlers(app)
    for router in (
        health.router,
        auth.router,
        assets.router,
        content.router,
        x402.router,
        agents.router,
        accounts.router,
        invoke.router,
        payments.router,
        stats.router,
    ):
        app.include_router(router, responses=ERROR_RESPONSES)
    app.add_middleware(
        RequestLimits,
        limits=Limits.from_settings(settings),
        is_upload=upload_matcher(content.router.routes, [content.upload]),  # streamed, up to max_upload_bytes
    )
    app.add_middleware(ChainGuard)  # outermost: a replaced chain costs a request nothing
    return app


def attach_model_handler(app: FastAPI, asset_id: int, handler: ModelHandler) -> None:
    """Serve model ``asset_id`` with ``handler`` from now on (the app must be running: inside its lifespan)."""
    services: Services = app.state.services
    services.model_handlers[asset_id] = handler
