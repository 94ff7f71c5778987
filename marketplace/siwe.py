"""Sign-In with Ethereum (EIP-4361): build, parse and verify login messages; issue bearer tokens.

Written here rather than taken from a library: the maintained SIWE packages on PyPI pin web3 7
and would downgrade the web3 8 this project is built on (``tests/api/test_siwe.py`` cross-checks this
parser against PyPI ``siwe`` in a separate environment). The message grammar is EIP-4361's ABNF;
its terms come from RFC 3986 (URIs: appendix A), RFC 3339 (timestamps: section 5.6) and RFC 5234
(``ALPHA``, ``DIGIT``, ``HEXDIG``: ASCII only). A message is parsed line by line in the grammar's
fixed order, each field at most once; anything else is a ``SiweError`` naming the line.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import ipaddress
import re
import secrets
import string
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import NamedTuple

from eth_account import Account
from eth_account.messages import encode_defunct
from eth_utils import is_checksum_address

from marketplace.errors import AgentmarketError

_HEADER = " wants you to sign in with your Ethereum account:"
#: The message's field lines in the grammar's order: (label, attribute, required).
_FIELDS = (
    ("URI", "uri", True),
    ("Version", "version", True),
    ("Chain ID", "chain_id", True),
    ("Nonce", "nonce", True),
    ("Issued At", "issued_at", True),
    ("Expiration Time", "expiration_time", False),
    ("Not Before", "not_before", False),
    ("Request ID", "request_id", False),
)
_RESOURCES = "Resources:"
#: How far in the future a message's Issued At may lie (clocks differ), in seconds.
CLOCK_SKEW = 60
#: The largest EIP-155 chain id a message may name (chain ids are uint256).
MAX_CHAIN_ID = 2**256 - 1

# RFC 3986, appendix A. Python's ``re`` character classes below are ASCII by construction.
_UNRESERVED = r"A-Za-z0-9\-._~"
_SUB_DELIMS = r"!$&'()*+,;="
_PCT_ENCODED = r"%[0-9A-Fa-f]{2}"
_PCHAR = rf"(?:[{_UNRESERVED}{_SUB_DELIMS}:@]|{_PCT_ENCODED})"
_SEGMENT, _SEGMENT_NZ = rf"{_PCHAR}*", rf"{_PCHAR}+"
_SCHEME_RE = re.compile(r"[A-Za-z][A-Za-z0-9+\-.]*")
_AUTHORITY_RE = re.compile(
    rf"(?:(?P<userinfo>(?:[{_UNRESERVED}{_SUB_DELIMS}:]|{_PCT_ENCODED})*)@)?"
    rf"(?P<host>\[[^\[\]]*\]|(?:[{_UNRESERVED}{_SUB_DELIMS}]|{_PCT_ENCODED})*)"
    r"(?::(?P<port>[0-9]*))?"
)
_IPVFUTURE_RE = re.compile(rf"[vV][0-9A-Fa-f]+\.[{_UNRESERVED}{_SUB_DELIMS}:]+")
_QUERY = rf"(?:{_PCHAR}|[/?])*"
_URI_RE = re.compile(
    rf"(?P<scheme>{_SCHEME_RE.pattern}):"
    rf"(?://(?P<authority>[^/?#]*)(?:/{_SEGMENT})*"  # "//" authority path-abempty
    rf"|/(?:{_SEGMENT_NZ}(?:/{_SEGMENT})*)?"  # path-absolute
    rf"|{_SEGMENT_NZ}(?:/{_SEGMENT})*"  # path-rootless
    r"|)"  # path-empty
    rf"(?:\?{_QUERY})?(?:#{_QUERY})?"
)
#: EIP-4361 ``statement = 1*( reserved / unreserved / " " )`` (RFC 3986 reserved = gen-delims / sub-delims).
_STATEMENT_RE = re.compile(rf"[{_UNRESERVED}{_SUB_DELIMS}:/?#\[\]@ ]+")
_REQUEST_ID_RE = re.compile(rf"{_PCHAR}*")
_ADDRESS_RE = re.compile(r"0x[0-9A-Fa-f]{40}")
_NONCE_RE = re.compile(r"[A-Za-z0-9]{8,}")
_CHAIN_ID_RE = re.compile(r"[0-9]+")
# RFC 3339 section 5.6 date-time; "T" and "Z" may be lower case (its NOTE, and RFC 5234 strings).
_DATE_TIME_RE = re.compile(
    r"(?P<year>[0-9]{4})-(?P<month>[0-9]{2})-(?P<day>[0-9]{2})[Tt]"
    r"(?P<hour>[0-9]{2}):(?P<minute>[0-9]{2}):(?P<second>[0-9]{2})(?P<fraction>\.[0-9]+)?"
    r"(?:(?P<utc>[Zz])|(?P<sign>[+-])(?P<offset_hour>[0-9]{2}):(?P<offset_minute>[0-9]{2}))"
)
_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}


class SiweError(AgentmarketError):
    """A login message or token is malformed, expired, or not signed by its address."""


class Origin(NamedTuple):
    """An RFC 6454 origin: lower-case scheme and host, and the port (the scheme's default if unsaid)."""

    scheme: str
    host: str
    port: int | None


@dataclass(frozen=True)
class SiweMessage:
    """The fields of an EIP-4361 message, each checked against the grammar when the message is built.

    ``chain_id`` is an EIP-155 chain id; the three timestamps are RFC 3339 ``date-time`` strings kept
    as written (the signature covers the text); ``resources`` is ``None`` without a ``Resources:``
    line, else the URIs listed under it (possibly none). Raises ``SiweError`` naming the first field
    that breaks the grammar, so ``to_text()`` always gives a message ``parse()`` accepts.
    """

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
    scheme: str | None = None
    resources: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if self.resources is not None:
            if isinstance(self.resources, str) or not isinstance(self.resources, Sequence):
                raise SiweError("resources must be a sequence of URIs")
            object.__setattr__(self, "resources", tuple(self.resources))
        _check_fields(self)

    def to_text(self) -> str:
        """The exact text a wallet signs (EIP-4361 ABNF)."""
        origin = f"{self.scheme}://{self.domain}" if self.scheme is not None else self.domain
        lines = [f"{origin}{_HEADER}", self.address, ""]
        if self.statement is not None:
            lines.append(self.statement)
        lines.append("")
        for label, attribute, _ in _FIELDS:
            value = getattr(self, attribute)
            if value is not None:
                lines.append(f"{label}: {value}")
        if self.resources is not None:
            lines += [_RESOURCES, *(f"- {resource}" for resource in self.resources)]
        return "\n".join(lines)

    @classmethod
    def parse(cls, text: str) -> SiweMessage:
        """Parse an EIP-4361 message: any string gives a message or a ``SiweError`` naming what is wrong.

        The fields must come in the grammar's order, each at most once, with nothing before, between
        or after them (no trailing newline, no carriage returns).
        """
        if not isinstance(text, str):
            raise SiweError("the message must be text")
        lines = text.split("\n")
        if len(lines) < 4 or not lines[0].endswith(_HEADER):
            raise SiweError(f"not a Sign-In with Ethereum message: line 1 must end with {_HEADER.strip()!r}")
        scheme, separator, domain = lines[0][: -len(_HEADER)].rpartition("://")
        fields: dict[str, object] = {"scheme": scheme if separator else None, "domain": domain}
        fields["address"] = lines[1]
        if lines[2] != "":
            raise SiweError("line 3 of the message must be empty")
        at = 3
        if lines[at] != "":
            fields["statement"] = lines[at]
            at += 1
            if at >= len(lines) or lines[at] != "":
                raise SiweError(f"line {at + 1} (after the statement) must be empty")
        at += 1
        for label, attribute, required in _FIELDS:
            prefix = f"{label}: "
            if at < len(lines) and lines[at].startswith(prefix):
                fields[attribute] = lines[at][len(prefix) :]
                at += 1
            elif required:
                found = repr(lines[at][:40]) if at < len(lines) else "the end of the message"
                raise SiweError(f"line {at + 1} must be {prefix.strip()!r} (EIP-4361 field order); found {found}")
        if at < len(lines) and lines[at] == _RESOURCES:
            for number, line in enumerate(lines[at + 1 :], start=at + 2):
                if not line.startswith("- "):
                    raise SiweError(f"line {number} must be a resource ('- ' and a URI)")
            fields["resources"] = tuple(line[2:] for line in lines[at + 1 :])
            at = len(lines)
        if at < len(lines):
            raise SiweError(f"unexpected line {at + 1}: {lines[at][:40]!r} (a field out of order, repeated or "
                            "unknown; EIP-4361 fixes the order and allows each field once)")  # fmt: skip
        chain_id = str(fields["chain_id"])
        if not _CHAIN_ID_RE.fullmatch(chain_id):
            raise SiweError(f"the chain id {_show(chain_id)} is not a decimal number (ASCII digits)")
        if len(chain_id) > 78:  # (and Python's int() refuses over 4,300 digits)
            raise SiweError(f"the chain id {_show(chain_id)} is not an EIP-155 chain id (0 to 2**256 - 1)")
        fields["chain_id"] = int(chain_id)
        return cls(**fields)  # type: ignore[arg-type]


def _check_fields(message: SiweMessage) -> None:
    """Raise ``SiweError`` for the first field of ``message`` that breaks the EIP-4361 grammar."""
    if message.scheme is not None and not _is_match(_SCHEME_RE, message.scheme):
        raise SiweError(f"the scheme {_show(message.scheme)} is not an RFC 3986 scheme")
    if not message.domain or authority_parts(message.domain) is None:
        raise SiweError(f"the domain {_show(message.domain)} is not an RFC 3986 authority (host[:port])")
    address = message.address
    if not (_is_match(_ADDRESS_RE, address) and is_checksum_address(address)):
        raise SiweError(f"the message's address {_show(address)} is not an EIP-55 checksummed address")
    if message.statement is not None and not _is_match(_STATEMENT_RE, message.statement):
        raise SiweError("the statement must be one line of RFC 3986 reserved or unreserved characters and spaces")
    if not is_uri(message.uri):
        raise SiweError(f"the URI {_show(message.uri)} is not an RFC 3986 URI")
    if message.version != "1":
        raise SiweError(f"unsupported SIWE version {_show(message.version)} (EIP-4361 defines version 1)")
    if isinstance(message.chain_id, bool) or not isinstance(message.chain_id, int):
        raise SiweError("the chain id must be an integer")
    if not 0 <= message.chain_id <= MAX_CHAIN_ID:
        raise SiweError(f"the chain id {message.chain_id} is not an EIP-155 chain id (0 to 2**256 - 1)")
    if not _is_match(_NONCE_RE, message.nonce):
        raise SiweError("the nonce must be at least 8 letters or digits (ASCII)")
    for label, stamp in (("Issued At", message.issued_at), ("Expiration Time", message.expiration_time),
                         ("Not Before", message.not_before)):  # fmt: skip
        if stamp is not None or label == "Issued At":
            try:
                parse_time(stamp)  # type: ignore[arg-type]
            except SiweError as exc:
                raise SiweError(f"{label}: {exc}") from None
    if message.request_id is not None and not _is_match(_REQUEST_ID_RE, message.request_id):
        raise SiweError("the request id must be RFC 3986 pchar characters only")
    for resource in message.resources or ():
        if not is_uri(resource):
            raise SiweError(f"the resource {_show(resource)} is not an RFC 3986 URI")


def _is_match(pattern: re.Pattern[str], value: object) -> bool:
    return isinstance(value, str) and pattern.fullmatch(value) is not None


def _show(value: object) -> str:
    """A short, printable rendering of a rejected value for an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _valid_host(host: str) -> bool:
    if not host.startswith("["):
        return True
    inner = host[1:-1]
    if _IPVFUTURE_RE.fullmatch(inner):
        return True
    if "%" in inner or not inner.isascii():  # zone ids are not RFC 3986
        return False
    try:
        ipaddress.IPv6Address(inner)
    except ValueError:
        return False
    return True


def authority_parts(authority: str) -> tuple[str | None, str, str | None] | None:
    """(userinfo, host, port) of an RFC 3986 ``authority``, or ``None`` if it is not one.

    ``port`` is the digits after the colon (``None`` without a colon; it may be empty).
    """
    match = _AUTHORITY_RE.fullmatch(authority) if isinstance(authority, str) else None
    if match is None or not _valid_host(match["host"]):
        return None
    return match["userinfo"], match["host"], match["port"]


def is_uri(value: object) -> bool:
    """Whether ``value`` is an RFC 3986 ``URI`` (absolute: a scheme, then the rest)."""
    match = _URI_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        return False
    authority = match["authority"]
    return authority is None or authority_parts(authority) is not None


def origin_of(uri: str) -> Origin:
    """The origin of an RFC 3986 URI with an authority (``scheme://host[:port]...``).

    Raises ``SiweError`` if ``uri`` is not such a URI, or names user info (``user@host``).
    """
    match = _URI_RE.fullmatch(uri) if isinstance(uri, str) else None
    parts = authority_parts(match["authority"]) if match and match["authority"] is not None else None
    if match is None or parts is None:
        raise SiweError(f"{_show(uri)} is not an RFC 3986 URI with a host (scheme://host[:port]/path)")
    userinfo, host, port = parts
    if userinfo is not None:
        raise SiweError(f"the URI {_show(uri)} carries user info (user@host); name the host alone")
    scheme = match["scheme"].lower()
    return Origin(scheme, host.lower(), int(port) if port else _DEFAULT_PORTS.get(scheme))


def parse_time(value: str) -> float:
    """An RFC 3339 ``date-time`` (section 5.6) as Unix seconds.

    Full date, ``T``, full time with optional fraction, and ``Z`` or a ``+hh:mm``/``-hh:mm`` offset;
    ``T`` and ``Z`` may be lower case. Ranges are checked (month, day of that month, hours, minutes,
    offset); a leap second (``:60``) is accepted only at 23:59 UTC and read as the next second.
    Raises ``SiweError`` for anything else (a date alone, a time without an offset, ...).
    """
    match = _DATE_TIME_RE.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise SiweError(f"{_show(value)} is not an RFC 3339 date-time (like 2026-11-29T10:00:00Z, with an offset)")
    year, month, day, hour, minute, second = (int(match[k]) for k in ("year", "month", "day", "hour", "minute",
                                                                         "second"))  # fmt: skip
    offset = 0
    if match["sign"]:
        offset_hour, offset_minute = int(match["offset_hour"]), int(match["offset_minute"])
        if offset_hour > 23 or offset_minute > 59:
            raise SiweError(f"{_show(value)} has an offset out of range (hours 00-23, minutes 00-59)")
        offset = (offset_hour * 60 + offset_minute) * 60 * (1 if match["sign"] == "+" else -1)
    if not 1 <= month <= 12:
        raise SiweError(f"{_show(value)} has no month {month:02d}")
    days_in_month = 29 if month == 2 and calendar.isleap(year) else calendar.mdays[month]
    if not 1 <= day <= days_in_month:
        raise SiweError(f"{_show(value)} names day {day:02d} of a month of {days_in_month} days")
    if hour > 23 or minute > 59 or second > 60:
        raise SiweError(f"{_show(value)} has a time out of range (00:00:00 to 23:59:59)")
    unix = _days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + min(second, 59) - offset
    if second == 60:
        if unix % 86_400 != 86_399:
            raise SiweError(f"{_show(value)} has a leap second that is not at 23:59:60 UTC")
        unix += 1
    return unix + (float("0" + match["fraction"]) if match["fraction"] else 0.0)


def _days_from_civil(year: int, month: int, day: int) -> int:
    """Days from 1970-01-01 to a proleptic Gregorian date (any 4-digit year, 0000 included)."""
    year -= month <= 2
    era = year // 400
    year_of_era = year - era * 400
    day_of_year = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5 + day - 1
    day_of_era = year_of_era * 365 + year_of_era // 4 - year_of_era // 100 + day_of_year
    return era * 146_097 + day_of_era - 719_468


def format_time(unix: float) -> str:
    """A Unix time as an RFC 3339 UTC timestamp (whole seconds)."""
    return datetime.fromtimestamp(unix, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def new_nonce() -> str:
    """A fresh 17-character alphanumeric nonce (~101 bits from ``secrets``)."""
    alphabet = string.ascii_letters + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(17))


def recover_signer(message: SiweMessage | str, signature: str | bytes) -> str:
    """The address that signed ``message`` with EIP-191 personal_sign; ``SiweError`` if malformed."""
    text = message.to_text() if isinstance(message, SiweMessage) else message
    try:
        return Account.recover_message(encode_defunct(text=text), signature=signature)
    except Exception:  # malformed signatures raise a zoo of types
        raise SiweError("the signature is malformed") from None


def check_message(
    message: SiweMessage,
    *,
    domain: str,
    uri: str,
    chain_id: int,
    max_lifetime: float,
    statement: str | None = None,
    now: float | None = None,
) -> None:
    """Check what a relying party must check (EIP-4361 "Verifying a signed Message"), or raise ``SiweError``.

    - ``domain`` (RFC 3986 authority; host compared case-insensitively) is the one this server expects,
      and the message's scheme, if it names one, is ``uri``'s;
    - the message's URI has the origin (scheme, host, port) of ``uri``, this server's SIWE URI;
    - the chain id is ``chain_id``; the statement, if any, is ``statement`` (when given);
    - ``Expiration Time`` is present, after ``Issued At`` and at most ``max_lifetime`` seconds after it,
      and not past; ``Not Before`` (if any) is past; ``Issued At`` is at most ``CLOCK_SKEW`` s ahead.

    ``now`` is Unix seconds (default: the clock).
    """
    now = time.time() if now is None else now
    expected = origin_of(uri)
    if not _same_authority(message.domain, domain):
        raise SiweError(f"the message is for domain {message.domain!r}, this server is {domain!r}")
    if message.scheme is not None and message.scheme.lower() != expected.scheme:
        raise SiweError(f"the message is for scheme {message.scheme!r}, this server is {expected.scheme!r}")
    if origin_of(message.uri) != expected:
        raise SiweError(f"the message's URI {message.uri!r} is not on this server ({uri})")
    if message.chain_id != chain_id:
        raise SiweError(f"the message is for chain id {message.chain_id}, this server is on chain id {chain_id}")
    if statement is not None and message.statement is not None and message.statement != statement:
        raise SiweError(f"the statement is not the one this server issued ({statement!r})")
    issued = parse_time(message.issued_at)
    if message.expiration_time is None:
        raise SiweError(f"the message has no Expiration Time; this server needs one at most {max_lifetime:g} s "
                        "after Issued At")  # fmt: skip
    expires = parse_time(message.expiration_time)
    if expires <= issued:
        raise SiweError("the message's Expiration Time is not after its Issued At")
    if expires - issued > max_lifetime:
        raise SiweError(f"the message is valid for {expires - issued:g} s; this server allows at most "
                        f"{max_lifetime:g} s from Issued At to Expiration Time")  # fmt: skip
    if expires <= now:
        raise SiweError("the message has expired; ask for a new nonce")
    if message.not_before is not None and parse_time(message.not_before) > now:
        raise SiweError("the message is not valid yet (Not Before)")
    if issued > now + CLOCK_SKEW:
        raise SiweError("the message was issued in the future")


def _same_authority(actual: str, expected: str) -> bool:
    """Whether two RFC 3986 authorities are the same (user info and port exact, host in any case)."""
    parts = authority_parts(actual), authority_parts(expected)
    if parts[0] is None or parts[1] is None:
        return False
    return len({(user, host.lower(), port) for user, host, port in parts}) == 1


_TOKEN_RE = re.compile(r"(?P<address>[^.]{1,128})\.(?P<expires>[0-9]{1,12})\.(?P<mac>[A-Za-z0-9_-]{43})")


class TokenIssuer:
    """Short-lived bearer tokens bound to an address: ``address.expiry.mac`` (stateless).

    ``mac`` is HMAC-SHA256 (RFC 2104) of ``address.expiry`` under the server's secret, unpadded
    base64url; ``expiry`` is Unix seconds.
    """

    def __init__(self, secret: bytes, ttl: int) -> None:
        self._secret, self.ttl = secret, ttl

    def _mac(self, payload: str) -> str:
        digest = hmac.new(self._secret, payload.encode(), hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def issue(self, address: str, now: float | None = None) -> tuple[str, int]:
        """A token for ``address`` (no dots, ASCII) and its expiry (Unix seconds)."""
        if not address.isascii() or "." in address:
            raise ValueError(f"cannot issue a token for {address!r}")
        expires = int((time.time() if now is None else now) + self.ttl)
        payload = f"{address}.{expires}"
        return f"{payload}.{self._mac(payload)}", expires

    def verify(self, token: str, now: float | None = None) -> str:
        """The address a valid, unexpired token was issued to.

        Total: any string (or anything else) gives an address or a ``SiweError``.
        """
        match = _TOKEN_RE.fullmatch(token) if isinstance(token, str) and token.isascii() else None
        if match is None:
            raise SiweError("the bearer token is malformed; sign in again")
        address, expires = match["address"], match["expires"]
        if not hmac.compare_digest(match["mac"].encode(), self._mac(f"{address}.{expires}").encode()):
            raise SiweError("the bearer token is not valid; sign in again")
        if int(expires) <= (time.time() if now is None else now):
            raise SiweError("the bearer token has expired; sign in again")
        return address
