"""Wallet login with Sign-In with Ethereum (EIP-4361): POST /v1/auth/nonce, POST /v1/auth/verify."""

from __future__ import annotations

import time

from eth_utils import to_checksum_address
from fastapi import APIRouter, Request

from marketplace.api.deps import ServicesDep
from marketplace.api.errors import ApiError
from marketplace.api.server import client_network
from marketplace.api.state import NonceLimitError, NonceLimits, consume_login_nonce, issue_login_nonce
from marketplace.protocol.wire import NonceRequest, NonceResponse, TokenResponse, VerifyRequest
from marketplace.siwe import SiweError, SiweMessage, check_message, format_time, new_nonce, recover_signer

router = APIRouter(prefix="/v1/auth", tags=["auth"])

#: The statement of every login message this server issues; a signed message may leave it out.
STATEMENT = "Sign in to agentmarket."


def client_key(request: Request) -> str:
    """Who is asking, for the per-client nonce cap: the peer's IP address; for IPv6, its /64 network."""
    return client_network(request.client.host if request.client else None)


@router.post("/nonce", response_model=NonceResponse, operation_id="requestLoginNonce")
def issue_nonce(body: NonceRequest, request: Request, services: ServicesDep) -> NonceResponse:
    """A single-use nonce, and a ready-to-sign message naming this server's domain, URI and chain.

    429 ``too_many_nonces`` when this client, or the server, holds the most unused nonces allowed
    (``AGENTMARKET_SIWE_MAX_NONCES_PER_CLIENT``, ``AGENTMARKET_SIWE_MAX_NONCES``).
    """
    settings = services.settings
    now = int(time.time())
    limits = NonceLimits(ttl=settings.siwe_nonce_ttl, per_address=settings.siwe_max_nonces_per_address,
                         per_client=settings.siwe_max_nonces_per_client, total=settings.siwe_max_nonces)  # fmt: skip
    address, nonce = to_checksum_address(body.address), new_nonce()
    try:
        expires = issue_login_nonce(services.engine, nonce=nonce, address=address, client=client_key(request),
                                    now=now, limits=limits)  # fmt: skip
    except NonceLimitError as exc:
        raise ApiError(429, "too_many_nonces", str(exc)) from None
    message = SiweMessage(
        domain=settings.expected_siwe_domain,
        address=address,
        statement=STATEMENT,
        uri=settings.expected_siwe_uri,
        chain_id=services.chain.chain_id,
        nonce=nonce,
        issued_at=format_time(now),
        expiration_time=format_time(expires),
    )
    return NonceResponse(nonce=nonce, message=message.to_text(), expires_at=expires)


@router.post("/verify", response_model=TokenResponse, operation_id="verifyLogin")
def verify(body: VerifyRequest, services: ServicesDep) -> TokenResponse:
    """Check the signed message (EIP-4361 grammar, this server's domain, URI, chain and statement, a
    bounded validity window) and its nonce (once only), and return a short-lived bearer token.

    Every refusal is 401 ``invalid_login`` with a sentence naming what was wrong.
    """
    settings = services.settings
    try:
        message = SiweMessage.parse(body.message)
        check_message(message, domain=settings.expected_siwe_domain, uri=settings.expected_siwe_uri,
                      chain_id=services.chain.chain_id, statement=STATEMENT,
                      max_lifetime=settings.siwe_nonce_ttl)  # fmt: skip
        if recover_signer(body.message, body.signature) != message.address:
            raise SiweError("the signature is not the message address's")
    except SiweError as exc:
        raise ApiError(401, "invalid_login", str(exc)) from None
    if not consume_login_nonce(services.engine, nonce=message.nonce, address=message.address, now=int(time.time())):
        raise ApiError(401, "invalid_login", "unknown, expired or already used nonce; ask /v1/auth/nonce again")
    token, expires = services.tokens.issue(message.address)
    return TokenResponse(token=token, address=message.address, expires_at=expires)
