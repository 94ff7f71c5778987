"""Every error leaves the API as JSON ``{"error": code, "detail": sentence}`` with the right status."""

from __future__ import annotations

import json
import logging
import traceback

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from marketplace.chain import ContractRevert
from marketplace.chain.identity import ChainReplaced

log = logging.getLogger("agentmarket.api")


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


def install_error_handlers(app: FastAPI) -> None:
    """Map domain exceptions to HTTP in one place."""

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

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log_unexpected(exc, f"{request.method} {request.url.path}")
        return JSONResponse(_body("internal", "the server failed; see its log"), status_code=500)
