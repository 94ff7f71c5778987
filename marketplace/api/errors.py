"""Every error leaves the API as JSON ``{"error": code, "detail": sentence}`` with the right status.

Failures of what the server depends on are 503, not 500, and are logged once per kind per
:data:`FAILURE_LOG_INTERVAL` seconds in one line (never a traceback per request):

- the chain's JSON-RPC node cannot be reached (:data:`CHAIN_UNAVAILABLE`: connection refused or
  reset, timeouts): 503 ``chain_unavailable``, naming the RPC URL;
- the read model's database cannot be reached (SQLAlchemy ``OperationalError`` / ``InterfaceError``,
  e.g. PostgreSQL down): 503 ``database_unavailable``.
"""

from __future__ import annotations

import json
import logging
import traceback

import requests
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException
from web3.exceptions import ProviderConnectionError

from marketplace.chain import ContractRevert
from marketplace.chain.identity import ChainReplaced
from marketplace.errors import FailureLog

log = logging.getLogger("agentmarket.api")

#: What web3's providers raise when the chain's node cannot be reached (HTTPProvider: requests; the
#: persistent providers: ProviderConnectionError). Answered 503 ``chain_unavailable``.
CHAIN_UNAVAILABLE: tuple[type[Exception], ...] = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    ProviderConnectionError,
)
#: What SQLAlchemy raises when the read model's database cannot be reached. Answered 503 ``database_unavailable``.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (OperationalError, InterfaceError)
#: Seconds between two log lines about the same kind of failure (``chain``, ``database``).
FAILURE_LOG_INTERVAL = 60.0


class ApiError(Exception):
    """A client-facing error: status, machine code, human sentence."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail = status, code, detail


def not_found(kind: str, key: object) -> ApiError:
    """404 for a missing resource."""
    return ApiError(404, f"{kind}_not_found", f"no {kind} {key}")


def _body(code: str, detail: str) -> dict[str, str]:
    return {"error": code, "detail": detail}


def error_body(code: str, detail: str) -> bytes:
    """The JSON bytes of an error answer, ``{"error": code, "detail": detail}``."""
    return json.dumps(_body(code, detail), separators=(",", ":")).encode()


def log_unexpected(exc: BaseException, where: str) -> None:
    """Log an unhandled exception for the operator: its type and stack frames, never its message
    (which may quote request data: bearer tokens, signatures, payment headers)."""
    frames = "".join(traceback.format_list(traceback.extract_tb(exc.__traceback__)))
    log.error("unhandled %s in %s (message withheld)\n%s", type(exc).__name__, where, frames.rstrip())


def failure_log(request: Request) -> FailureLog:
    """The app's log of recurring failures (one per app: see :func:`install_error_handlers`)."""
    return request.app.state.failures


def rpc_url_of(request: Request) -> str:
    """The JSON-RPC URL of the chain the app behind ``request`` reads ("the embedded chain" when in process)."""
    services = getattr(request.app.state, "services", None)
    chain = getattr(services, "chain", None)
    if chain is not None:
        return chain.rpc_url or "the embedded chain"
    settings = getattr(request.app.state, "settings", None)
    return str(getattr(settings, "rpc_url", "the chain's node"))


def chain_unavailable(request: Request, exc: BaseException | None = None) -> ApiError:
    """503 ``chain_unavailable`` naming the chain's RPC URL; logged once per interval (with ``exc``'s type)."""
    rpc_url = rpc_url_of(request)
    cause = f" ({type(exc).__name__})" if exc is not None else ""
    failure_log(request).failed(
        "chain", f"the chain's node at {rpc_url} is unreachable{cause}; answering 503 chain_unavailable"
    )
    return ApiError(
        503,
        "chain_unavailable",
        f"the server cannot reach its chain's node at {rpc_url}; nothing was done or charged; retry once it is back",
    )


def database_unavailable(request: Request, exc: BaseException) -> ApiError:
    """503 ``database_unavailable``; logged once per interval with the exception's type, not its message
    (which may quote the database URL, password included)."""
    cause = type(exc).__name__
    failure_log(request).failed(
        "database", f"the read model's database is unreachable ({cause}); answering 503 database_unavailable"
    )
    return ApiError(503, "database_unavailable", "the server cannot reach its database; retry in a moment")


def install_error_handlers(app: FastAPI) -> None:
    """Map domain exceptions to HTTP in one place (and give the app its :class:`FailureLog`)."""
    app.state.failures = FailureLog(log, FAILURE_LOG_INTERVAL)

    @app.exception_handler(ApiError)
    async def api_error(_request: Request, exc: ApiError) -> JSONResponse:
        return JSONResponse(_body(exc.code, exc.detail), status_code=exc.status)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return JSONResponse(_body("invalid_request", f"{where}: {first.get('msg', 'invalid')}"), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = "not_found" if exc.status_code == 404 else "http_error"
        return JSONResponse(_body(code, str(exc.detail)), status_code=exc.status_code)

    @app.exception_handler(ContractRevert)
    async def contract_revert(_request: Request, exc: ContractRevert) -> JSONResponse:
        status = 404 if exc.error.startswith("Unknown") or exc.error == "ERC721NonexistentToken" else 409
        return JSONResponse(_body(exc.error, str(exc)), status_code=status)

    @app.exception_handler(ChainReplaced)
    async def chain_replaced(_request: Request, exc: ChainReplaced) -> JSONResponse:
        return JSONResponse(_body("chain_replaced", exc.detail), status_code=503)

    async def chain_down(request: Request, exc: Exception) -> JSONResponse:
        error = chain_unavailable(request, exc)
        return JSONResponse(_body(error.code, error.detail), status_code=error.status, headers={"Retry-After": "5"})

    async def database_down(request: Request, exc: Exception) -> JSONResponse:
        error = database_unavailable(request, exc)
        return JSONResponse(_body(error.code, error.detail), status_code=error.status, headers={"Retry-After": "5"})

    for kind in CHAIN_UNAVAILABLE:
        app.add_exception_handler(kind, chain_down)
    for kind in DATABASE_UNAVAILABLE:
        app.add_exception_handler(kind, database_down)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log_unexpected(exc, f"{request.method} {request.url.path}")
        return JSONResponse(_body("internal", "the server failed; see its log"), status_code=500)
