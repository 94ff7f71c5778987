"""Wallet login with Sign-In with Ethereum: POST /v1/auth/nonce, POST /v1/auth/verify."""

from __future__ import annotations

import time

from eth_utils import to_checksum_address
from fastapi import APIRouter
from pydantic import BaseModel, Field
from sqlalchemy import update
from sqlalchemy.orm import Session

from marketplace.api.deps import ServicesDep
from marketplace.api.errors import ApiError
from marketplace.api.state import LoginNonce
from marketplace.siwe import SiweError, SiweMessage, check_message, format_time, new_nonce, recover_signer

router = APIRouter(prefix="/v1/auth", tags=["auth"])

ADDRESS = r"^0x[0-9a-fA-F]{40}$"


class NonceRequest(BaseModel):
    """Who wants to sign in."""

    address: str = Field(pattern=ADDRESS)


class NonceResponse(BaseModel):
    """A single-use nonce and the EIP-4361 message to sign with it."""

    nonce: str
    message: str
    expires_at: int


class VerifyRequest(BaseModel):
    """The signed EIP-4361 message."""

    message: str = Field(max_length=4096)
    signature: str = Field(pattern=r"^0x[0-9a-fA-F]{130}$")


class TokenResponse(BaseModel):
    """A bearer token bound to the address that signed in."""

    token: str
    address: str
    expires_at: int


@router.post("/nonce", response_model=NonceResponse)
def issue_nonce(body: NonceRequest, services: ServicesDep) -> NonceResponse:
    """A single-use nonce, and a ready-to-sign message naming this server's domain and chain."""
    settings = services.settings
    now = time.time()
    expires = int(now + settings.siwe_nonce_ttl)
    message = SiweMessage(
        domain=settings.expected_siwe_domain,
        address=to_checksum_address(body.address),
        statement="Sign in to agentmarket.",
        uri=f"http://{settings.expected_siwe_domain}",
        chain_id=services.chain.chain_id,
        nonce=new_nonce(),
        issued_at=format_time(now),
        expiration_time=format_time(expires),
    )
    with Session(services.engine) as session, session.begin():
        session.add(LoginNonce(nonce=message.nonce, address=message.address, expires_at=expires, used=False))
    return NonceResponse(nonce=message.nonce, message=message.to_text(), expires_at=expires)


@router.post("/verify", response_model=TokenResponse)
def verify(body: VerifyRequest, services: ServicesDep) -> TokenResponse:
    """Check the signed message and its nonce (once only) and return a short-lived bearer token."""
    try:
        message = SiweMessage.parse(body.message)
        check_message(message, domain=services.settings.expected_siwe_domain, chain_id=services.chain.chain_id)
        if recover_signer(body.message, body.signature) != message.address:
            raise SiweError("the signature is not the message address's")
    except SiweError as exc:
        raise ApiError(401, "invalid_login", str(exc)) from None
    with Session(services.engine) as session, session.begin():
        consumed = session.execute(
            update(LoginNonce)
            .where(
                LoginNonce.nonce == message.nonce,
                LoginNonce.address == message.address,
                LoginNonce.used.is_(False),
                LoginNonce.expires_at > int(time.time()),
            )
            .values(used=True)
        ).rowcount
    if consumed != 1:
        raise ApiError(401, "invalid_login", "unknown, expired or already used nonce; ask /v1/auth/nonce again")
    token, expires = services.tokens.issue(message.address)
    return TokenResponse(token=token, address=message.address, expires_at=expires)
