"""Sign-In with Ethereum (EIP-4361): build, parse and verify login messages; issue bearer tokens.

Written here rather than taken from a library: the maintained SIWE packages on PyPI pin web3 7
and would downgrade the web3 8 this project is built on. The message grammar is EIP-4361's.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import string
import time
from dataclasses import dataclass
from datetime import UTC, datetime

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import is_checksum_address

from marketplace.errors import AgentmarketError

_HEADER = " wants you to sign in with your Ethereum account:"
_FIELDS = {
    "URI": "uri",
    "Version": "version",
    "Chain ID": "chain_id",
    "Nonce": "nonce",
    "Issued At": "issued_at",
    "Expiration Time": "expiration_time",
    "Not Before": "not_before",
    "Request ID": "request_id",
}
_NONCE = re.compile(r"^[A-Za-z0-9]{8,}$")


class SiweError(AgentmarketError):
    """A login message or token is malformed, expired, or not signed by its address."""


@dataclass(frozen=True)
class SiweMessage:
    """The fields of an EIP-4361 message."""

    domain: str
    address: str
    uri: str
    chain_id: int
    nonce: str
    issued_at: str
    statement: str | None = None
    version: str = "1"
    expiration_time: str | None = None
    not_before: str | None = None
    request_id: str | None = None

    def to_text(self) -> str:
        """The exact text a wallet signs."""
        lines = [f"{self.domain}{_HEADER}", self.address, ""]
        if self.statement:
            lines += [self.statement, ""]
        else:
            lines.append("")
        lines += [f"URI: {self.uri}", f"Version: {self.version}", f"Chain ID: {self.chain_id}",
                  f"Nonce: {self.nonce}", f"Issued At: {self.issued_at}"]  # fmt: skip
        for label, attribute in (("Expiration Time", "expiration_time"), ("Not Before", "not_before"),
                                 ("Request ID", "request_id")):  # fmt: skip
            value = getattr(self, attribute)
            if value is not None:
                lines.append(f"{label}: {value}")
        return "\n".join(lines)

    @classmethod
    def parse(cls, text: str) -> SiweMessage:
        """Parse an EIP-4361 message; raises SiweError naming what is wrong."""
        lines = text.split("\n")
        if len(lines) < 8 or not lines[0].endswith(_HEADER):
            raise SiweError("not a Sign-In with Ethereum message (first line must end with the EIP-4361 header)")
        domain, address = lines[0][: -len(_HEADER)], lines[1]
        if not is_checksum_address(address):
            raise SiweError(f"the message's address {address!r} is not an EIP-55 checksummed address")
        if lines[2] != "":
            raise SiweError("line 3 of the message must be empty")
        rest = lines[3:]
        statement = None
        if rest[0] != "":
            statement = rest[0]
            rest = rest[1:]
        if not rest or rest[0] != "":
            raise SiweError("the statement must be followed by an empty line")
        fields: dict[str, str] = {}
        for line in rest[1:]:
            label, sep, value = line.partition(": ")
            if not sep or label not in _FIELDS:
                raise SiweError(f"unexpected line in the message: {line[:60]!r}")
            fields[_FIELDS[label]] = value
        for required in ("uri", "version", "chain_id", "nonce", "issued_at"):
            if required not in fields:
                raise SiweError(f"the message has no {required.replace('_', ' ')}")
        if fields["version"] != "1":
            raise SiweError(f"unsupported SIWE version {fields['version']!r}")
        if not _NONCE.match(fields["nonce"]):
            raise SiweError("the nonce must be at least 8 letters or digits")
        try:
            chain_id = int(fields.pop("chain_id"))
        except ValueError:
            raise SiweError("the chain id is not a number") from None
        for stamp in ("issued_at", "expiration_time", "not_before"):
            if stamp in fields:
                parse_time(fields[stamp])
        return cls(domain=domain, address=address, statement=statement, chain_id=chain_id, **fields)


def parse_time(value: str) -> float:
    """An RFC 3339 timestamp as a Unix time."""
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        raise SiweError(f"not an RFC 3339 timestamp: {value!r}") from None


def format_time(unix: float) -> str:
    """A Unix time as an RFC 3339 UTC timestamp."""
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_nonce() -> str:
    """A fresh 17-character alphanumeric nonce."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(17))


def recover_signer(message: SiweMessage | str, signature: str | bytes) -> str:
    """The address that signed ``message`` with EIP-191 personal_sign."""
    text = message.to_text() if isinstance(message, SiweMessage) else message
    try:
        return Account.recover_message(encode_defunct(text=text), signature=signature)
    except Exception:  # malformed signatures raise a zoo of types
        raise SiweError("the signature is malformed") from None


def check_message(message: SiweMessage, *, domain: str, chain_id: int, now: float | None = None) -> None:
    """Check the fields a server must check (domain, chain id, validity window)."""
    now = time.time() if now is None else now
    if message.domain != domain:
        raise SiweError(f"the message is for domain {message.domain!r}, this server is {domain!r}")
    if message.chain_id != chain_id:
        raise SiweError(f"the message is for chain id {message.chain_id}, this server is on chain id {chain_id}")
    if message.expiration_time and parse_time(message.expiration_time) <= now:
        raise SiweError("the message has expired; ask for a new nonce")
    if message.not_before and parse_time(message.not_before) > now:
        raise SiweError("the message is not valid yet (Not Before)")
    if parse_time(message.issued_at) > now + 60:
        raise SiweError("the message was issued in the future")


class TokenIssuer:
    """Short-lived bearer tokens bound to an address: ``address.expiry.hmac`` (stateless)."""

    def __init__(self, secret: bytes, ttl: int) -> None:
        self._secret, self.ttl = secret, ttl

    def _mac(self, payload: str) -> str:
        digest = hmac.new(self._secret, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def issue(self, address: str, now: float | None = None) -> tuple[str, int]:
        """A token for ``address`` and its expiry (Unix seconds)."""
        expires = int((time.time() if now is None else now) + self.ttl)
        payload = f"{address}.{expires}"
        return f"{payload}.{self._mac(payload)}", expires

    def verify(self, token: str, now: float | None = None) -> str:
        """The address a valid, unexpired token was issued to."""
        address, _, rest = token.partition(".")
        expires, _, mac = rest.partition(".")
        if not (address and expires.isdigit() and mac):
            raise SiweError("the bearer token is malformed; sign in again")
        if not hmac.compare_digest(mac, self._mac(f"{address}.{expires}")):
            raise SiweError("the bearer token is not valid; sign in again")
        if int(expires) <= (time.time() if now is None else now):
            raise SiweError("the bearer token has expired; sign in again")
        return address
