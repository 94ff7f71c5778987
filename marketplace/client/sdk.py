"""The Python SDK of a marketplace server.

- :class:`MarketplaceReader`: the read-only API (catalog, agents, earnings, stats); no key, no chain.
- :class:`MarketplaceClient`: a session for one account, what providers, builders, buyers and the
  CLI use. Its reads are the reader's; content goes over HTTP; money moves on chain, signed
  locally with the caller's key (which never leaves this process). Downloads are verified against
  the on-chain content hash. Model calls are paid per call with x402 or with channel vouchers, and a
  download can be paid per request with x402 (:meth:`MarketplaceClient.download_x402`).
- :func:`x402_payer`: the one x402 client this SDK signs payments with. Before it signs, the
  server's requirements are checked against the chain (:mod:`marketplace.client.checks`): a server
  cannot make this client pay more than the asset's on-chain price, or pay anyone but its vault.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
import requests
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from pydantic import BaseModel, ValidationError
from web3 import Web3
from web3.exceptions import ProviderConnectionError
from web3.types import TxReceipt
from x402 import x402ClientSync
from x402.http import PAYMENT_REQUIRED_HEADER, PAYMENT_RESPONSE_HEADER, x402HTTPClientSync
from x402.http.utils import decode_payment_required_header, decode_payment_response_header
from x402.mechanisms.evm.exact import ExactEvmClientScheme
from x402.mechanisms.evm.signers import EthAccountSigner
from x402.schemas import PaymentRequired

from marketplace.chain import Chain, ContractRevert, connect
from marketplace.chain.contracts import TestUSD
from marketplace.chain.deployment import Deployment, DeploymentError, parse_manifest, verify_deployment
from marketplace.chain.identity import ChainIdentity
from marketplace.chain.lineage import Lineage, LineagePlan, Release, execute, plan_release, plan_withdrawal
from marketplace.chain.market import Market
from marketplace.chain.records import AssetKind, Channel
from marketplace.chain.units import BPS
from marketplace.client.checks import MAX_TIMEOUT_SECONDS, PriceChanged, X402Terms
from marketplace.client.vouchers import ChannelCount, VoucherBook
from marketplace.content import open_sealed_frames
from marketplace.errors import AgentmarketError
from marketplace.protocol import wire
from marketplace.protocol.jsonlimits import JsonTooDeep, header_too_deep
from marketplace.protocol.jsonlimits import loads as bounded_loads
from marketplace.protocol.vouchers import HEADER, Voucher, VoucherHasher
from marketplace.siwe import SiweError, SiweMessage, check_message

_READ_CHUNK = 64 * 1024
#: Largest response body (bytes) the SDK reads into memory to parse: every answer but content. A server
#: sending more is refused (:class:`BadResponse`) after that many bytes, or before any when it says so.
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
#: Deepest nesting of JSON arrays and objects the SDK parses, in a response body or a JSON-carrying
#: header; measured without parsing first (:mod:`marketplace.protocol.jsonlimits`), since deep JSON
#: crashes a process that imported py_ecc (eth-account does) instead of raising.
MAX_JSON_DEPTH = 256
#: Largest content download (bytes as they arrive, before decryption), into memory or a file: twice the
#: server's default upload limit (256 MiB), room for the sealing overhead.
MAX_CONTENT_BYTES = 512 * 1024 * 1024
#: Longest a login message the SDK signs may be valid, in seconds (Expiration Time minus Issued At).
MAX_LOGIN_LIFETIME = 3600


class ApiClientError(AgentmarketError):
    """The server answered with an error: ``status``, machine ``code`` and human ``detail``."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{detail} (HTTP {status} {code})")
        self.status, self.code, self.detail = status, code, detail


class ServerUnreachable(AgentmarketError):
    """No whole answer came back from the server.

    ``sent`` is False when the request surely did not reach it (no connection could be made), True when
    it may have (the connection broke or timed out after the request went out): then the outcome is
    unknown, and the server may have acted on it (answered a paid call, say).
    """

    def __init__(self, detail: str, *, sent: bool) -> None:
        super().__init__(detail)
        self.sent = sent


class BadResponse(AgentmarketError, ValueError):
    """The server answered, but with something this SDK will not read: a body larger than its limit, JSON
    nested deeper than its limit, not JSON where JSON was due, or JSON that is not the body the API defines
    (:mod:`marketplace.protocol.wire`; the message names the first field missing or wrong). ``status`` is the
    answer's HTTP status."""

    def __init__(self, detail: str, status: int) -> None:
        super().__init__(detail)
        self.status = status


class ChainUnreachable(AgentmarketError):
    """The chain's node did not answer a read the client needs before it signs; nothing was signed."""


#: What web3's providers raise when the chain's node cannot be reached (HTTPProvider: requests; persistent
#: providers: ProviderConnectionError).
_CHAIN_DOWN: tuple[type[Exception], ...] = (
    requests.exceptions.ConnectionError,
    requests.exceptions.Timeout,
    ProviderConnectionError,
)


class LoginRefused(AgentmarketError):
    """The server asked this client to sign a login message that is not for this server, account or chain,
    or that stays valid too long; nothing was signed."""


#: A wire model (:mod:`marketplace.protocol.wire`).
Body = TypeVar("Body", bound=BaseModel)


@dataclass(frozen=True)
class Reply:
    """An HTTP answer read whole within the SDK's limits: status, headers and body bytes.

    :meth:`json` parses the body through the depth- and size-bounded parser; ``where`` names the server
    and route for error messages.
    """

    status_code: int
    headers: httpx.Headers
    content: bytes
    where: str
    max_json_depth: int = MAX_JSON_DEPTH

    @property
    def text(self) -> str:
        """The body as text (UTF-8, undecodable bytes replaced)."""
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        """The body as JSON; :class:`BadResponse` (a ``ValueError``) if it is not JSON or nests deeper than
        ``max_json_depth`` levels."""
        try:
            return bounded_loads(self.content, max_depth=self.max_json_depth)
        except JsonTooDeep:
            raise BadResponse(
                f"{self.where} answered JSON nested deeper than {self.max_json_depth} levels; refusing to read it",
                self.status_code,
            ) from None
        except ValueError:
            raise BadResponse(f"{self.where} answered HTTP {self.status_code} without a JSON body",
                              self.status_code) from None  # fmt: skip

    def parse(self, model: type[Body]) -> Body:
        """The body as :meth:`json`, validated into ``model`` (a :mod:`marketplace.protocol.wire` model);
        :class:`BadResponse` naming the first field that is missing or wrong (never the server's value)."""
        body = self.json()
        try:
            return model.model_validate(body)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            where = ".".join(str(part) for part in errors[0]["loc"]) or "the body"
            more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
            raise BadResponse(
                f"{self.where} answered HTTP {self.status_code} with a body that is not the API's {model.__name__}: "
                f"{_line(where, 120)}: {_line(errors[0]['msg'], 200)}{more}",
                self.status_code,
            ) from None


class PublishIncomplete(AgentmarketError):
    """An asset is on chain but unlisted — nobody can buy it — because publishing stopped halfway.

    ``asset_id`` and ``version`` name what is on chain; ``uploaded`` is False when the server does not
    hold its content (the upload failed or was refused), True when it does but the owner's listing
    transaction failed; ``reason`` says what failed (that exception is also ``__cause__``). Retry with
    :meth:`MarketplaceClient.upload`: it uploads the content again and lists the asset once the server
    has verified it.
    """

    def __init__(self, asset_id: int, version: int, *, uploaded: bool, reason: str) -> None:
        self.asset_id, self.version, self.uploaded, self.reason = asset_id, version, uploaded, reason
        super().__init__(self.explain(f"retry with MarketplaceClient.upload({asset_id}, content), which lists it"))

    @property
    def state(self) -> str:
        """The asset's state in words: what is on chain and what is missing."""
        what = f"asset {self.asset_id}" + (f" version {self.version}" if self.version > 1 else "")
        missing = "its content was uploaded but listing it failed" if self.uploaded else "its content was not uploaded"
        return f"{what} is on chain but unlisted: {missing}"

    def explain(self, remedy: str) -> str:
        """One line: the state, the reason, then ``remedy`` (what fixes it, in the caller's own terms)."""
        return f"{self.state} ({self.reason}); {remedy}"


def _reason(exc: BaseException) -> str:
    """What failed, in one line, for a :class:`PublishIncomplete`."""
    if isinstance(exc, ApiClientError):
        return f"HTTP {exc.status} {exc.code}: {exc.detail}"
    if isinstance(exc, AgentmarketError):
        return str(exc)
    return f"{type(exc).__name__}: {exc}"


@dataclass(frozen=True)
class X402Payment:
    """A settled x402 payment: the settlement transaction, who paid whom, and how much (base units)."""

    transaction: str
    payer: str
    pay_to: str
    amount: int
    network: str


class X402DeliveryError(AgentmarketError):
    """An x402 payment moved on chain, but what it paid for did not arrive (intact).

    ``payment`` is what was paid (its ``transaction`` is "" when the server did not name one),
    ``nonce`` the authorization's EIP-3009 nonce (hex); the error that ended the request is the
    exception's ``__cause__``.
    """

    def __init__(self, detail: str, payment: X402Payment, nonce: str) -> None:
        super().__init__(detail)
        self.payment, self.nonce = payment, nonce


class X402AuthorizationOutstanding(AgentmarketError):
    """A paid x402 request failed, and its authorization could not be cancelled on chain (EIP-3009
    ``cancelAuthorization`` needs gas from the payer): whoever received it may still settle it until
    ``valid_before`` (Unix seconds, the chain's block time). Count it as spent until then.

    ``payment`` is what it would pay (``transaction`` is ""), ``token`` the address of the token it moves,
    ``nonce`` the authorization's EIP-3009 nonce (hex) and ``reason`` why it could not be cancelled; the error
    that ended the request is ``__cause__``. :meth:`MarketplaceClient.authorization_outcome` says later
    whether it was used or has expired.
    """

    def __init__(
        self, detail: str, payment: X402Payment, *, token: str, nonce: str, valid_before: int, reason: str
    ) -> None:
        super().__init__(detail)
        self.payment, self.token, self.nonce = payment, token, nonce
        self.valid_before, self.reason = valid_before, reason


@dataclass(frozen=True)
class _SignedPayment:
    """A PAYMENT-SIGNATURE ready to send: its headers, the terms it pays, its EIP-3009 nonce and the end of its
    validity (``valid_before``, Unix seconds)."""

    headers: dict[str, str]
    terms: X402Terms
    nonce: bytes
    valid_before: int


@dataclass(frozen=True)
class _ChannelRef:
    """A channel as a client checked it once: where its voucher count lives (``scope``, ``key``), what was
    claimed on it then (base units), its asset and its voucher signer."""

    scope: str
    key: str
    claimed: int
    asset_id: int
    signer: str


@dataclass(frozen=True)
class PaidDownload:
    """One download paid over x402: the content (b"" when written to a file) and its payment."""

    content: bytes
    payment: X402Payment


def x402_payer(account: LocalAccount, terms: X402Terms) -> x402HTTPClientSync:
    """The x402 v2 client this SDK pays with, bound to one payment's on-chain ``terms``.

    It is the x402 SDK's own client with only what this payment needs: the exact EVM scheme (EIP-3009)
    on ``terms.network`` alone (no v1, no other network), spend controls that allow only the asset's
    token up to ``terms.amount``, and :meth:`X402Terms.before_payment_creation` as its
    before-payment hook, so whatever it is handed, it signs only a requirement that matches the chain
    (else :class:`~marketplace.client.checks.X402TermsRefused`, nothing signed). ``account``
    signs locally; the key never leaves this process.
    """
    client = x402ClientSync()
    client.register(terms.network, ExactEvmClientScheme(EthAccountSigner(account)))
    cap = {"network": terms.network, "asset": terms.asset, "max_amount_per_payment": str(terms.amount)}
    client.set_spend_controls({"allowed_assets": [cap], "max_amount_per_payment": False})
    client.on_before_payment_creation(terms.before_payment_creation)
    return x402HTTPClientSync(client)


def sha256_of(source: Path | bytes) -> bytes:
    """sha256 of a file (streamed) or bytes."""
    digest = hashlib.sha256()
    if isinstance(source, bytes):
        digest.update(source)
    else:
        with source.open("rb") as handle:
            while chunk := handle.read(_READ_CHUNK):
                digest.update(chunk)
    return digest.digest()


class MarketplaceReader:
    """The server's read-only API over HTTP: no account, no chain connection.

    ``http`` may be given (e.g. a FastAPI TestClient); otherwise the reader opens its own
    connection pool, closed by :meth:`close` or at the end of a ``with`` block. The server is not
    trusted with this process: every answer is read up to ``max_response_bytes`` and its JSON parsed
    up to ``max_json_depth`` levels (:class:`BadResponse` beyond either), whatever the server sends.
    """

    def __init__(
        self,
        base_url: str,
        *,
        http: httpx.Client | None = None,
        timeout: float = 60,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        max_json_depth: int = MAX_JSON_DEPTH,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._owns_http = http is None
        self.http = http or httpx.Client(base_url=self.base_url, timeout=timeout)
        self.max_response_bytes, self.max_json_depth = max_response_bytes, max_json_depth

    def close(self) -> None:
        """Close the connection pool (if this reader opened it)."""
        if self._owns_http:
            self.http.close()

    def __enter__(self) -> MarketplaceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, method: str, path: str, **kwargs: Any) -> Reply:
        """One request, its answer read whole within the limits (any status).

        Raises :class:`ServerUnreachable` when no whole answer came back and :class:`BadResponse` when
        the body is larger than ``max_response_bytes``."""
        return _fetch(self.http, self.base_url, method, path, self.max_response_bytes, self.max_json_depth, **kwargs)

    def _request(self, method: str, path: str, **kwargs: Any) -> Reply:
        """:meth:`_send`, then :class:`ApiClientError` for an error status."""
        reply = self._send(method, path, **kwargs)
        _raise_for_error(reply)
        return reply

    def assets(self, **filters: Any) -> wire.AssetPage:
        """A page of the catalog (filters: kind, provider, min_price, max_price, q, limit, offset; prices in
        base units). :class:`BadResponse` when the answer is not a page (as for every read below)."""
        params = {k: v for k, v in filters.items() if v is not None}
        return self._request("GET", "/v1/assets", params=params).parse(wire.AssetPage)

    def asset(self, asset_id: int) -> wire.AssetDetail:
        """One asset with its split, lineage, revenue, sales and rating."""
        return self._request("GET", f"/v1/assets/{asset_id}").parse(wire.AssetDetail)

    def agent(self, agent_id: int) -> wire.AgentIdentity:
        """One agent."""
        return self._request("GET", f"/v1/agents/{agent_id}").parse(wire.AgentIdentity)

    def earnings(self, address: str) -> wire.Earnings:
        """``GET /v1/accounts/{address}/earnings``: for every vault ``address`` is a payee of and every token
        that reaches it, ``claimable`` (now), ``waiting`` (what releases up the lineage would add) and
        ``released`` (so far), in base units; totals per token; ``pending_releases``, the transactions a
        withdrawal would send."""
        return self._request("GET", f"/v1/accounts/{address}/earnings").parse(wire.Earnings)

    def stats(self) -> wire.Stats:
        """Marketplace-wide figures (amounts in base units of the payment token)."""
        return self._request("GET", "/v1/stats").parse(wire.Stats)


#: Transport failures that happen before a request leaves this process: the server surely did not get it.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol,
             httpx.LocalProtocolError, httpx.InvalidURL)  # fmt: skip


def _unreachable(base_url: str, exc: Exception) -> ServerUnreachable:
    """:class:`ServerUnreachable` for a transport failure ``exc`` (``sent`` unless it failed before sending)."""
    sent = not isinstance(exc, _NOT_SENT)
    what = "the connection broke or timed out before its answer arrived" if sent else "cannot connect"
    return ServerUnreachable(
        f"cannot reach the marketplace server at {base_url} ({what}: {type(exc).__name__}); is it running?", sent=sent
    )


def _fetch(http: httpx.Client, base_url: str, method: str, path: str, limit: int, depth: int, **kwargs: Any) -> Reply:
    """``method path`` on ``http``, its answer read whole up to ``limit`` bytes (:meth:`MarketplaceReader._send`)."""
    where = f"the marketplace server at {base_url} ({method} {path})"
    try:
        with http.stream(method, path, **kwargs) as response:
            body = _read_body(response, limit, where)
            return Reply(response.status_code, response.headers, body, where, depth)
    except httpx.HTTPError as exc:
        raise _unreachable(base_url, exc) from None


def _read_body(response: httpx.Response, limit: int, where: str) -> bytes:
    """The whole body of a streamed ``response``, or :class:`BadResponse` once it passes ``limit`` bytes
    (at once when its Content-Length says so)."""
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        detail = f"{where} announced a {int(declared)}-byte answer, more than the {limit} bytes this client reads"
        raise BadResponse(f"{detail}; refusing to read it", response.status_code)

    def too_large() -> BadResponse:
        detail = f"{where} sent more than the {limit} bytes this client reads in one answer; stopped reading"
        return BadResponse(detail, response.status_code)

    return b"".join(_bounded(response.iter_bytes(), limit, too_large))


def _bounded(chunks: Iterable[bytes], limit: int, error: Any) -> Iterator[bytes]:
    """``chunks`` as they come, until they add up to more than ``limit`` bytes: then ``error()`` is raised."""
    received = 0
    for chunk in chunks:
        received += len(chunk)
        if received > limit:
            raise error()
        yield chunk


class MarketplaceClient(MarketplaceReader):
    """A marketplace session for one account (the reads are :class:`MarketplaceReader`'s)."""

    def __init__(
        self,
        base_url: str,
        account: LocalAccount,
        chain: Chain,
        deployment: Deployment,
        *,
        encryption_key: bytes | None = None,
        http: httpx.Client | None = None,
        voucher_book: VoucherBook | None = None,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
        max_json_depth: int = MAX_JSON_DEPTH,
        max_content_bytes: int = MAX_CONTENT_BYTES,
    ) -> None:
        super().__init__(base_url, http=http, max_response_bytes=max_response_bytes, max_json_depth=max_json_depth)
        #: Largest content download accepted, in bytes as received (see :data:`MAX_CONTENT_BYTES`).
        self.max_content_bytes = max_content_bytes
        self.account = account
        self.chain = chain
        self.deployment = deployment
        self.market: Market = deployment.market(chain)
        self.encryption_key = encryption_key
        self._token: tuple[str, int] | None = None
        #: What this client counted as answered and signed on each channel (see marketplace.client.vouchers).
        self.voucher_book = voucher_book or VoucherBook()
        self._channel_refs: dict[int, _ChannelRef] = {}  # channel id -> where the voucher book counts it
        self._identity: ChainIdentity | None = None
        self._vouchers: VoucherHasher | None = None
        #: The longest x402 authorization this client signs, in seconds (see :mod:`marketplace.client.checks`).
        self.x402_max_timeout_seconds = MAX_TIMEOUT_SECONDS
        self._lineage: Lineage | None = None

    @classmethod
    def connect(
        cls,
        base_url: str,
        account: LocalAccount,
        chain: Chain | str,
        *,
        trusted: Deployment | None = None,
        **options: Any,
    ) -> MarketplaceClient:
        """Fetch the server's deployment, check it against ``chain`` (a Chain or RPC URL), and connect.

        The server's manifest names the contracts this client reads prices and vaults from; the
        chain's code is checked, but a copy of the contracts anyone deployed passes that check too.
        With ``trusted`` (a deployment you trust, e.g. ``read_manifest`` of your own manifest) the
        server must follow exactly that one — same chain id and contract addresses — else
        :class:`DeploymentError`, before anything is signed.
        """
        http = options.pop("http", None) or httpx.Client(base_url=base_url.rstrip("/"), timeout=60)
        chain = connect(chain) if isinstance(chain, str) else chain
        limit = options.get("max_response_bytes", MAX_RESPONSE_BYTES)
        reply = _fetch(http, base_url, "GET", "/v1/deployment", limit, options.get("max_json_depth", MAX_JSON_DEPTH))
        _raise_for_error(reply)
        manifest = reply.json()
        deployment = verify_deployment(parse_manifest(manifest, f"{base_url}/v1/deployment"), chain, base_url)
        if trusted is not None:
            _same_deployment(trusted, deployment, base_url)
        return cls(base_url, account, chain, deployment, http=http, **options)

    @property
    def address(self) -> str:
        """The account's address."""
        return self.account.address

    # ------------------------------------------------------------------ HTTP plumbing

    def _request(self, method: str, path: str, *, auth: bool = False, **kwargs: Any) -> Reply:
        if auth:
            kwargs["headers"] = {**kwargs.get("headers", {}), "Authorization": f"Bearer {self.login()}"}
        return super()._request(method, path, **kwargs)

    def login(self) -> str:
        """A bearer token for this account (Sign-In with Ethereum; cached until shortly before expiry).

        The server writes the message to sign; before signing, :meth:`check_login_message` checks it is
        for this server, this account and this chain, and expires soon (:class:`LoginRefused` otherwise,
        nothing signed): a gateway cannot relay another server's login through this client.
        """
        if self._token and self._token[1] > time.time() + 30:
            return self._token[0]
        issued = self._request("POST", "/v1/auth/nonce", json={"address": self.address})
        message = issued.parse(wire.NonceResponse).message
        self.check_login_message(message)
        signature = Account.sign_message(encode_defunct(text=message), self.account.key).signature
        signed = {"message": message, "signature": "0x" + signature.hex()}
        verified = self._request("POST", "/v1/auth/verify", json=signed).parse(wire.TokenResponse)
        self._token = (verified.token, verified.expires_at)
        return verified.token

    def check_login_message(self, message: object, *, now: float | None = None) -> SiweMessage:
        """The EIP-4361 message a server asks this client to sign, once it passed the checks a wallet makes
        (EIP-4361 "Security Considerations"); else :class:`LoginRefused` naming what is wrong.

        - the domain (and the scheme, if the message names one) is the server's at ``base_url``, and the
          URI's origin (scheme, host, port) is ``base_url``'s;
        - the address is this account's, the chain id the connected chain's;
        - ``Expiration Time`` is present, not past, at most :data:`MAX_LOGIN_LIFETIME` seconds after
          ``Issued At``; ``Issued At`` is not in the future; no ``Resources`` (which could grant
          capabilities, EIP-5573) and no ``Not Before`` in the future.

        ``now`` is Unix seconds (default: the clock).
        """
        parts = urlsplit(self.base_url)
        if not isinstance(message, str):
            raise LoginRefused(f"the marketplace server at {self.base_url} sent no login message to sign")
        try:
            parsed = SiweMessage.parse(message)
            if parsed.address != self.address:
                raise SiweError(f"the message signs in {parsed.address}, not this account {self.address}")
            check_message(parsed, domain=parts.netloc, uri=self.base_url, chain_id=self.chain.chain_id,
                          max_lifetime=MAX_LOGIN_LIFETIME, now=now)  # fmt: skip
            if parsed.resources is not None:
                raise SiweError("the message lists Resources (capabilities this client never asked for)")
        except SiweError as exc:
            raise LoginRefused(
                f"refused to sign the login message from {self.base_url}: {exc}; nothing was signed"
            ) from None
        return parsed

    # ------------------------------------------------------------------ reads

    def earnings(self, address: str | None = None) -> wire.Earnings:
        """The server's earnings of ``address`` (default: this account): per asset and token, claimable now,
        waiting up the lineage and released (see :meth:`MarketplaceReader.earnings`; :meth:`withdrawal_plan`
        computes the same from the chain alone)."""
        return super().earnings(address or self.address)

    # ------------------------------------------------------------------ providers

    def publish(
        self,
        content: Path | bytes,
        *,
        price: int,
        kind: AssetKind = AssetKind.DATASET,
        uri: str = "",
        payees: list[tuple[str, int]] | None = None,
        parents: list[tuple[int, int]] = (),  # type: ignore[assignment]
        license_duration: int = 0,
        listed: bool = True,
    ) -> int:
        """Publish ``content`` (a file, streamed, or bytes) all or nothing; returns the asset id.

        Three steps: the asset goes on chain **unlisted** (its sha256 is the content hash), the content
        is uploaded, and once the server has verified it against that hash (its 201) this account's
        ``setListed`` transaction lists it (``listed=False`` leaves it unlisted). So an asset is never
        buyable without its content. ``price`` is in token base units, ``payees`` and ``parents`` are
        (address or asset id, bps) pairs (without ``payees`` this account gets everything the parents'
        royalties leave), ``license_duration`` is in seconds (0 = perpetual).

        Raises ContractRevert if the asset cannot be published (nothing is on chain then), and
        :class:`PublishIncomplete` (with the asset id) if it is on chain but the upload or the listing
        failed: :meth:`upload` then finishes the job.
        """
        content_hash = sha256_of(content)
        asset_id = self.market.marketplace.publish(
            self.account, kind=kind, content_hash=content_hash, uri=uri or f"sha256:{content_hash.hex()}",
            price=price, token=self.market.token.address,
            payees=payees or [(self.address, BPS - sum(bps for _, bps in parents))],
            parents=list(parents), license_duration=license_duration, listed=False,
        )  # fmt: skip
        self._upload(asset_id, 1, False, content, content_hash, list_asset=listed)
        return asset_id

    def publish_version(self, asset_id: int, content: Path | bytes, *, uri: str = "") -> int:
        """Publish new content for ``asset_id`` (this account must own it), all or nothing; returns the
        new version number.

        ``Marketplace.publishVersion`` unlists the asset until its owner lists it again, so no buyer pays
        for a version whose content is not there yet; this uploads the new content and, once the server
        has verified it, lists the asset again if it was listed before. Raises ContractRevert
        (NotAssetOwner, UnknownAsset: nothing changed) and :class:`PublishIncomplete` (the new version is
        on chain, unlisted; :meth:`upload` finishes the job).
        """
        content_hash = sha256_of(content)
        marketplace = self.market.marketplace
        before = marketplace.asset(asset_id)
        marketplace.publish_version(self.account, asset_id, content_hash, uri or f"sha256:{content_hash.hex()}")
        self._upload(asset_id, before.version + 1, False, content, content_hash, list_asset=before.listed)
        return before.version + 1

    def upload(self, asset_id: int, content: Path | bytes, *, list_asset: bool = True) -> wire.UploadResult:
        """Upload the content of ``asset_id``'s current version (this account must own it) and, once the
        server has verified it against the on-chain content hash, list the asset if it is unlisted (this
        account's ``setListed`` transaction; ``list_asset=False`` leaves the listing as it is).

        What finishes a :meth:`publish` that raised :class:`PublishIncomplete`, and what re-uploads a
        listed asset's content to a server that lost it. ``content`` is a file (streamed) or bytes; its
        sha256 is checked against the chain before anything is sent. Returns the server's record
        (``asset_id``, ``version``, ``sha256``, ``size`` in bytes) and ``listed``, the asset's listing
        now (a :class:`~marketplace.protocol.wire.UploadResult`). Raises AgentmarketError before anything is
        sent when this account is not the owner or the content is not this version's (ContractRevert
        UnknownAsset for an unknown id); :class:`PublishIncomplete` when the asset stays unlisted because
        the upload or the listing failed; for a listed asset, ApiClientError (the server refused: 413 too
        large, 409 a new version was published meanwhile, …) or AgentmarketError (the server is unreachable).
        """
        asset = self.market.marketplace.asset(asset_id)
        if asset.owner != self.address:
            raise AgentmarketError(
                f"asset {asset_id} is owned by {asset.owner}, not by {self.address}: only its owner uploads its content"
            )
        content_hash = sha256_of(content)
        if content_hash != asset.content_hash:
            raise AgentmarketError(
                f"this content's sha256 is 0x{content_hash.hex()} but asset {asset_id} version {asset.version} "
                f"has content hash 0x{asset.content_hash.hex()} on chain: is it the right file?"
            )
        return self._upload(asset_id, asset.version, asset.listed, content, content_hash, list_asset=list_asset)

    def _upload(
        self, asset_id: int, version: int, listed: bool, content: Path | bytes, content_hash: bytes, *, list_asset: bool
    ) -> wire.UploadResult:
        """PUT the content of ``asset_id`` at ``version`` (``listed``: its listing on chain now), check the
        server's record, then list it if asked and unlisted. Any failure that leaves the asset unlisted
        raises :class:`PublishIncomplete` (from the failure)."""
        uploaded = False
        try:
            stored = self._put_content(asset_id, content)
            if (stored.sha256, stored.version) != ("0x" + content_hash.hex(), version):
                raise AgentmarketError(
                    f"the server's answer names sha256 {_line(stored.sha256, 80)} version {stored.version}, "
                    f"not 0x{content_hash.hex()} version {version}"
                )
            uploaded = True
            if list_asset and not listed:
                self.market.marketplace.set_listed(self.account, asset_id, True)
                listed = True
        except Exception as exc:
            if listed:
                raise
            raise PublishIncomplete(asset_id, version, uploaded=uploaded, reason=_reason(exc)) from exc
        return wire.UploadResult(**stored.model_dump(), listed=listed)

    def _put_content(self, asset_id: int, content: Path | bytes) -> wire.Uploaded:
        """``PUT /v1/assets/{id}/content``: the bytes, or the file streamed with its size declared (so a
        server refuses a too-large upload from its Content-Length, before the body)."""

        def stream() -> Iterator[bytes]:
            assert isinstance(content, Path)
            with content.open("rb") as handle:
                while chunk := handle.read(_READ_CHUNK):
                    yield chunk

        if isinstance(content, bytes):
            return self._request("PUT", f"/v1/assets/{asset_id}/content", auth=True, content=content).parse(
                wire.Uploaded
            )
        headers = {"Content-Length": str(content.stat().st_size)}
        return self._request(
            "PUT", f"/v1/assets/{asset_id}/content", auth=True, content=stream(), headers=headers
        ).parse(wire.Uploaded)

    # ------------------------------------------------------------------ buyers

    def buy(self, asset_id: int, max_price: int | None = None) -> TxReceipt:
        """Buy a license on chain (approving exactly the price first if needed)."""
        asset = self.market.marketplace.asset(asset_id)
        limit = asset.price if max_price is None else max_price
        if self.market.token.allowance(self.address, self.market.marketplace.address) < asset.price:
            self.market.token.approve(self.account, self.market.marketplace.address, asset.price)
        return self.market.marketplace.buy(self.account, asset_id, limit)

    def download(self, asset_id: int, destination: Path | None = None, *, agent_id: int | None = None) -> bytes:
        """Download licensed content, decrypt it if sealed, and verify it against the on-chain hash.

        With ``destination`` the content is streamed to that file (and b"" returned). At most
        ``max_content_bytes`` are received (:class:`BadResponse` beyond, nothing kept).
        """
        expected = self.market.marketplace.asset(asset_id).content_hash
        params = {"agent_id": agent_id} if agent_id else {}
        headers = {"Authorization": f"Bearer {self.login()}"}
        path = f"/v1/assets/{asset_id}/content"
        try:
            with self.http.stream("GET", path, params=params, headers=headers) as response:
                if response.status_code >= 400:
                    _raise_for_error(self._reply(response, "GET", path))
                chunks: Iterator[bytes] = self._content(response, path)
                if response.headers.get("x-content-encryption") == "x25519-sealedbox-frames":
                    if self.encryption_key is None:
                        raise AgentmarketError(
                            "the content is sealed to your agent's key; give the client encryption_key"
                        )
                    chunks = open_sealed_frames(chunks, self.encryption_key)
                return _receive(chunks, expected, destination, f"asset {asset_id}")
        except httpx.HTTPError as exc:
            raise _unreachable(self.base_url, exc) from None

    def payment_terms(self) -> wire.ChannelTerms:
        """The server's channel terms (``GET /v1/payments``): channels contract, ``receiverAuthorizer``, claim
        window, voucher types. :class:`BadResponse` when the answer is not a
        :class:`~marketplace.protocol.wire.PaymentTerms`."""
        return self._payments().payment_channel

    def _payments(self) -> wire.PaymentTerms:
        return self._request("GET", "/v1/payments").parse(wire.PaymentTerms)

    def served_models(self) -> set[int]:
        """The model assets this server runs (``GET /v1/payments``: ``models``)."""
        return set(self._payments().models)

    def receiver_authorizer(self) -> str:
        """The key this server claims channels with (``GET /v1/payments``), once its channels contract is
        checked to be this deployment's (:class:`AgentmarketError` otherwise)."""
        terms = self.payment_terms()
        channels = self.market.channels
        if terms.channels.lower() != channels.address.lower():
            shown = _line(terms.channels, 60)
            raise AgentmarketError(
                f"the server takes channels of contract {shown}, not of this deployment's {channels.address}"
            )
        authorizer = terms.receiver_authorizer
        if not Web3.is_address(authorizer):
            raise AgentmarketError(f"the server names no receiverAuthorizer address in GET /v1/payments: "
                                   f"{_line(authorizer, 60)}")  # fmt: skip
        return Web3.to_checksum_address(authorizer)

    # ------------------------------------------------------------------ channels after opening

    def channels(self) -> list[Channel]:
        """The channels this account opened (as payer), in id order, with their on-chain state now."""
        return self.market.channels.channels_of(self.address, from_block=self.deployment.deploy_block)

    def top_up_channel(self, channel_id: int, amount: int) -> TxReceipt:
        """Add ``amount`` (base units) to the deposit of this account's channel ``channel_id``, approving it first.

        :class:`AgentmarketError` when this account is not the channel's payer or the channel has expired
        (before anything is sent); the contract checks both again (``NotPayer``, ``ChannelExpired``).
        """
        channel = self._live_channel(channel_id, "top up")
        self.market.token.approve(self.account, self.market.channels.address, amount)
        return self.market.channels.top_up(self.account, channel.channel_id, amount)

    def extend_channel(self, channel_id: int, seconds: int) -> TxReceipt:
        """Move the expiry of this account's channel ``channel_id`` ``seconds`` (> 0) later.

        :class:`AgentmarketError` as for :meth:`top_up_channel`, or when ``seconds`` is not positive.
        """
        if seconds <= 0:
            raise AgentmarketError(f"a channel's expiry can only move later, not by {seconds} seconds")
        channel = self._live_channel(channel_id, "extend")
        return self.market.channels.extend(self.account, channel_id, channel.expiry + seconds)

    def close_channel(self, channel_id: int) -> TxReceipt:
        """End service on channel ``channel_id`` now, as the owner of its asset (the contract's ``close``).

        The gateway may still claim the calls it answered during the claim window (15 minutes); then
        anyone may :meth:`reclaim_channel` the rest for the payer. :class:`AgentmarketError` when this
        account does not own the asset (a payer cannot end a channel early: it reclaims after expiry) or
        the channel already expired.
        """
        channel = self._channel_state(channel_id)
        owner = self.market.marketplace.asset(channel.asset_id).owner
        if owner.lower() != self.address.lower():
            mine = channel.payer.lower() == self.address.lower()
            tail = (
                f"; as its payer you get the unclaimed rest back with `agentmarket channel reclaim {channel_id}` from "
                f"{_when(channel.claim_deadline)} (its expiry plus the 15-minute claim window)"
                if mine
                else ""
            )
            raise AgentmarketError(
                f"only the owner of asset {channel.asset_id} ({owner}) may close channel {channel_id}{tail}"
            )
        if channel.settled or self.chain.timestamp() >= channel.expiry:
            raise AgentmarketError(f"channel {channel_id} already ended at {_when(channel.expiry)}")
        return self.market.channels.close(self.account, channel_id)

    def reclaim_channel(self, channel_id: int) -> TxReceipt:
        """Return the unclaimed deposit of channel ``channel_id`` to its payer (anyone may send it), once its
        claim window is over (expiry + 15 minutes, by the chain's clock).

        :class:`AgentmarketError` when it is too early (naming when) or the channel was settled already.
        """
        channel = self._channel_state(channel_id)
        if channel.settled:
            raise AgentmarketError(f"channel {channel_id} is settled already: its deposit went back to its payer")
        now = self.chain.timestamp()
        if now < channel.claim_deadline:
            raise AgentmarketError(
                f"channel {channel_id} can be reclaimed from {_when(channel.claim_deadline)}, in "
                f"{_duration(channel.claim_deadline - now)} (its expiry plus the 15-minute claim window, by the "
                "chain's clock)"
            )
        return self.market.channels.reclaim(self.account, channel_id)

    def _channel_state(self, channel_id: int) -> Channel:
        """The channel's state on chain; :class:`AgentmarketError` naming the id if there is none."""
        try:
            return self.market.channels.channel(channel_id)
        except ContractRevert as exc:
            if exc.error == "UnknownChannel":
                raise AgentmarketError(f"there is no channel {channel_id} in this deployment") from None
            raise

    def _live_channel(self, channel_id: int, action: str) -> Channel:
        """This account's channel, not expired yet (what ``topUp`` and ``extend`` need)."""
        channel = self._channel_state(channel_id)
        if channel.payer.lower() != self.address.lower():
            raise AgentmarketError(f"only its payer ({channel.payer}) may {action} channel {channel_id}")
        if channel.settled or self.chain.timestamp() >= channel.expiry:
            raise AgentmarketError(
                f"channel {channel_id} ended at {_when(channel.expiry)}; open a new one (`agentmarket channel open`)"
            )
        return channel

    def channel_receiver(self, asset_id: int) -> str:
        """The ``receiverAuthorizer`` a channel for ``asset_id`` must name to be served here, once it is checked
        that a channel can pay this server for it. :class:`AgentmarketError` when ``asset_id`` does not exist
        or is not a model on chain (datasets are licensed, never invoked), when this server does not run the
        model (a deposit nobody can spend would stay locked until expiry), or when the server's channels
        contract is not this deployment's. Call it before moving any money for a channel."""
        self._require_model(asset_id)
        if asset_id not in self.served_models():
            raise AgentmarketError(
                f"the marketplace server at {self.base_url} does not serve model {asset_id}: its provider must "
                f"run `agentmarket serve --model {asset_id}=module:function`; nothing was locked"
            )
        return self.receiver_authorizer()

    def _require_model(self, asset_id: int) -> None:
        try:
            kind = self.market.marketplace.asset(asset_id).kind
        except ContractRevert as exc:
            if exc.error == "UnknownAsset":
                raise AgentmarketError(f"asset {asset_id} does not exist on chain {self.chain.chain_id}") from None
            raise
        if kind != AssetKind.MODEL:
            raise AgentmarketError(f"asset {asset_id} is a dataset: a channel pays for model calls; license a "
                                   f"dataset instead (`agentmarket buy {asset_id}`); nothing was locked")  # fmt: skip

    def open_channel(
        self,
        asset_id: int,
        deposit: int,
        *,
        ttl: int = 3600,
        signer: str | None = None,
        receiver_authorizer: str | None = None,
    ) -> int:
        """Open a payment channel for metered calls to ``asset_id`` (approving the deposit); returns its id.

        ``receiver_authorizer`` (the key allowed to claim) defaults to the one this server advertises in
        ``GET /v1/payments``: whoever holds it can only claim into the asset's vault, and only up to the
        vouchers this client signs. ``signer`` signs vouchers (default: this account). ``ttl`` is seconds.

        Raises :class:`AgentmarketError`, before anything is approved or locked, as :meth:`channel_receiver`
        does (with an explicit ``receiver_authorizer``, only the model check applies).
        """
        channels = self.market.channels
        if receiver_authorizer is None:
            receiver_authorizer = self.channel_receiver(asset_id)
        else:
            self._require_model(asset_id)
        self.market.token.approve(self.account, channels.address, deposit)
        expiry = self.chain.timestamp() + ttl
        return channels.open(self.account, asset_id, self.market.token.address, deposit, expiry, signer,
                             receiver_authorizer=receiver_authorizer)  # fmt: skip

    def invoke(
        self,
        model_id: int,
        payload: Any,
        *,
        channel_id: int | None = None,
        signer: LocalAccount | None = None,
        max_price: int | None = None,
        before_signing: Callable[[X402Terms], None] | None = None,
    ) -> wire.InvokeResponse:
        """Call a served model and pay for the call. Returns its ``output`` and ``payment`` (a
        :class:`~marketplace.protocol.wire.ChannelReceipt` or an :class:`~marketplace.protocol.wire.X402Settlement`);
        :class:`BadResponse` when the answer is not that.

        ``max_price`` (base units) is the most this call may cost: the SDK never signs for a price its
        caller did not approve. Without it, the approved price is the on-chain price when the call began
        (read then). A price above it raises :class:`~marketplace.client.checks.PriceChanged` with nothing
        signed — also when the model's owner raises the price in the middle of the call and its gateway
        asks for the new one.

        With ``channel_id``, pays with a voucher on that channel (signed by ``signer``, default this
        account): no transaction per call. The voucher's ceiling is this client's own count — the
        calls it got answers for, plus the ones in flight, plus this one at the asset's on-chain price
        — never what a server asks: a 402 asking for more raises :class:`AgentmarketError` naming
        both numbers, and nothing more is signed (unless the on-chain price changed to one within
        the approved price: then the call is counted and signed once more at that price). The count is kept
        per chain (chain id and genesis hash) and per channel (its id, payer, signer, asset, token and the
        block that opened it), so a new channel never inherits an old one's count. Without ``channel_id``,
        pays per call with x402 (this account signs an EIP-3009 authorization of the on-chain price, at most
        ``max_price``; the server settles it into the model's vault; ``before_signing`` runs as for
        :meth:`download_x402`); a paid request that fails has its authorization cancelled on chain, as for
        :meth:`download_x402`.
        """
        if channel_id is None:
            return self._invoke_x402(model_id, payload, max_price, before_signing)
        signer = signer or self.account
        scope, key, claimed = self._channel(channel_id, model_id, signer.address)
        price = self._price(model_id)  # read at every call: the owner may have changed it since the last one
        limit, limit_name = (price, "the price when the call began") if max_price is None else (max_price, "max_price")
        if price > limit:
            raise PriceChanged(model_id, price, limit, limit_name)
        for attempt in range(2):
            ceiling = self.voucher_book.begin(scope, key, price, claimed)
            header = self._voucher(signer, channel_id, ceiling).to_header()
            # A call counts as answered unless the server said otherwise (an error status) or surely never got
            # it: a call whose answer was lost on the way (the connection broke or timed out after it was sent,
            # an unreadable body) may have been debited, and counting it keeps the channel usable at the cost of
            # at most one price of ceiling above the calls answered (see marketplace.client.vouchers).
            answered = True
            try:
                response = self._send("POST", f"/v1/models/{model_id}/invoke", json={"input": payload},
                                      headers={HEADER: header})  # fmt: skip
                answered = response.status_code < 400
            except ServerUnreachable as exc:
                answered = exc.sent
                raise
            except BadResponse as exc:
                answered = exc.status < 400
                raise
            finally:
                count = self.voucher_book.finish(scope, key, price, answered=answered)
            if response.status_code == 402 and _refusal_reason(response) == "insufficient_voucher":
                asked = _asked_ceiling(response)
                if asked is not None and asked > ceiling:
                    fresh = self._price(model_id) if attempt == 0 else price  # repriced mid-call?
                    if fresh > limit:  # repriced mid-call above what the caller approved: sign nothing more
                        raise PriceChanged(model_id, fresh, limit, limit_name)
                    if fresh != price:
                        price = fresh  # the owner changed the price within the caller's limit: count with it
                        continue
                    raise AgentmarketError(
                        f"the server asks for a voucher of {asked} on channel {channel_id}, but this client counted "
                        f"{count.answered} answered + {price} for this call = {ceiling}: refusing to sign more"
                    )
            _raise_for_error(response)
            return response.parse(wire.InvokeResponse)
        raise AssertionError("unreachable")

    def channel_count(self, channel_id: int) -> ChannelCount | None:
        """What this client counted on ``channel_id`` (answered and signed, base units), or None if it never paid
        on it. Reads the chain only for a channel this client has not called through yet."""
        ref = self._channel_refs.get(channel_id)
        if ref is None:
            channel = self.market.channels.channel(channel_id)
            self._channel(channel_id, channel.asset_id, channel.signer)
            ref = self._channel_refs[channel_id]
        return self.voucher_book.count(ref.scope, ref.key)

    def _price(self, model_id: int) -> int:
        """The model's per-call price as the chain says now (base units); :class:`ChainUnreachable` when the
        chain's node does not answer (nothing is signed without it)."""
        try:
            return self.market.marketplace.asset(model_id).price
        except _CHAIN_DOWN as exc:
            where = self.chain.rpc_url or "the chain"
            raise ChainUnreachable(
                f"cannot read model {model_id}'s price from {where} ({type(exc).__name__}): is the node running? "
                "nothing was signed"
            ) from None

    @property
    def chain_identity(self) -> ChainIdentity:
        """The chain this client pays on: chain id and genesis hash (read once)."""
        if self._identity is None:
            self._identity = ChainIdentity.of(self.chain)
        return self._identity

    def _channel(self, channel_id: int, model_id: int, signer: str) -> tuple[str, str, int]:
        """Check on chain (once per channel) that it pays for ``model_id`` and that ``signer`` signs for it.

        Returns where the voucher book counts it — the scope (this chain's identity and the channels
        contract) and the channel's own identity (id, payer, signer, asset, token, and the hash of the block
        whose ``ChannelOpened`` event created it) — and what was claimed on it when first seen (where a
        fresh count starts). So a restarted chain, or another channel that got the same id, never shares a
        count."""
        ref = self._channel_refs.get(channel_id)
        if ref is None:
            channels = self.market.channels
            channel = channels.channel(channel_id)
            opened = channels.contract.events.ChannelOpened().get_logs(
                argument_filters={"channelId": channel_id}, from_block=self.deployment.deploy_block
            )
            if not opened:
                raise AgentmarketError(f"channel {channel_id} was never opened on this chain (no ChannelOpened event)")
            block = "0x" + bytes(opened[-1]["blockHash"]).hex()
            key = (f"{channel_id}/payer:{channel.payer}/signer:{channel.signer}/asset:{channel.asset_id}/"
                   f"token:{channel.token}/opened:{block}")  # fmt: skip
            scope = f"{self.chain_identity}/channels:{channels.address}"
            ref = self._channel_refs[channel_id] = _ChannelRef(scope, key, channel.claimed, channel.asset_id,
                                                               channel.signer)  # fmt: skip
        if ref.asset_id != model_id:
            raise AgentmarketError(f"channel {channel_id} pays for asset {ref.asset_id}, not model {model_id}")
        if ref.signer.lower() != signer.lower():
            raise AgentmarketError(f"channel {channel_id}'s vouchers are signed by {ref.signer}, not {signer}")
        return ref.scope, ref.key, ref.claimed

    def _voucher(self, signer: LocalAccount, channel_id: int, ceiling: int) -> Voucher:
        if self._vouchers is None:
            self._vouchers = VoucherHasher(self.market.channels.domain)
        return self._vouchers.voucher(signer, channel_id, ceiling)

    def _invoke_x402(
        self,
        model_id: int,
        payload: Any,
        max_price: int | None = None,
        before_signing: Callable[[X402Terms], None] | None = None,
    ) -> wire.InvokeResponse:
        """One call paid with x402: 402, check the requirements against the chain (and ``max_price``), sign, retry.

        :class:`X402DeliveryError` when the payment moved but no answer came back; a failed paid request has
        its authorization cancelled first (:meth:`_after_failed_payment`)."""
        path, body = f"/v1/models/{model_id}/invoke", {"input": payload}
        unpaid = self._send("POST", path, json=body)
        signed = self._x402_payment(model_id, unpaid, max_price, before_signing, limit_name="max_price")
        try:
            paid = self._send("POST", path, json=body, headers=signed.headers)
            _raise_for_error(paid)
            return paid.parse(wire.InvokeResponse)
        except (AgentmarketError, ValueError) as exc:
            self._after_failed_payment(signed, f"a call of model {model_id}", exc)
            raise

    def download_x402(
        self,
        asset_id: int,
        destination: Path | None = None,
        *,
        max_amount: int | None = None,
        before_signing: Callable[[X402Terms], None] | None = None,
    ) -> PaidDownload:
        """Buy one download of ``asset_id`` over x402 (``GET /v1/assets/{id}/x402``), no license needed.

        The payment is an EIP-3009 authorization of exactly the asset's on-chain price to its vault,
        checked against the chain before it is signed (:class:`X402TermsRefused` otherwise;
        also when the price is above ``max_amount``, in base units). ``before_signing(terms)``, if given,
        runs once the server's requirements passed those checks and before anything is signed (an agent
        wallet funds itself there; what it raises propagates, nothing signed). The content is verified
        against the on-chain hash; with ``destination`` it is streamed to that file (and ``content`` is b"").
        Raises :class:`ApiClientError` when the server refuses the payment, and
        :class:`X402DeliveryError` when the payment moved on chain but the content did not arrive intact
        (also when it is larger than ``max_content_bytes``).

        A paid request that fails leaves no authorization behind that the server could settle later,
        unseen: unless the payment moved (:class:`X402DeliveryError`), this account cancels the authorization
        on chain (EIP-3009 ``cancelAuthorization``, which costs it gas) before the error is raised; if it
        cannot (no ETH for gas, the chain unreachable), :class:`X402AuthorizationOutstanding` says until
        when the authorization may still be settled.
        """
        path = f"/v1/assets/{asset_id}/x402"
        expected = self.market.marketplace.asset(asset_id).content_hash
        signed = self._x402_payment(asset_id, self._send("GET", path), max_amount, before_signing)
        try:
            with self.http.stream("GET", path, headers=signed.headers) as paid:
                if paid.status_code >= 400:
                    _raise_for_error(self._reply(paid, "GET", path))
                payment = _settled(paid, signed.terms)
                content = _receive(self._content(paid, path), expected, destination, f"asset {asset_id}")
        except (AgentmarketError, httpx.HTTPError) as exc:
            self._after_failed_payment(signed, f"a download of asset {asset_id}", exc)
            if isinstance(exc, httpx.HTTPError):
                raise _unreachable(self.base_url, exc) from None
            raise
        return PaidDownload(content, payment)

    def _reply(self, response: httpx.Response, method: str, path: str) -> Reply:
        """A streamed ``response`` read whole within ``max_response_bytes`` (e.g. an error's body)."""
        where = f"the marketplace server at {self.base_url} ({method} {path})"
        body = _read_body(response, self.max_response_bytes, where)
        return Reply(response.status_code, response.headers, body, where, self.max_json_depth)

    def _content(self, response: httpx.Response, path: str) -> Iterator[bytes]:
        """The body of a content download as it arrives, up to ``max_content_bytes`` (then :class:`BadResponse`)."""
        limit = self.max_content_bytes
        where = f"the marketplace server at {self.base_url} (GET {path})"
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise BadResponse(f"{where} announced {int(declared)} bytes of content, more than this client's "
                              f"max_content_bytes ({limit}); nothing was kept", response.status_code)  # fmt: skip

        def too_large() -> BadResponse:
            detail = f"{where} sent more content than this client's max_content_bytes ({limit}); nothing was kept"
            return BadResponse(detail, response.status_code)

        return _bounded(response.iter_bytes(), limit, too_large)

    def _after_failed_payment(self, signed: _SignedPayment, what: str, failure: Exception) -> None:
        """After a paid request failed with ``failure``, leave no authorization anyone can settle later unseen.

        - The request surely never left this process (no connection): nobody saw the signature; nothing to do.
        - The authorization was used on chain: :class:`X402DeliveryError` (from ``failure``), since the money
          moved whatever the server said.
        - Otherwise this account cancels it on chain (EIP-3009 ``cancelAuthorization``, signed and sent by the
          payer, who pays its gas), so that nobody can settle it later; then the caller raises ``failure``.
          If the cancellation fails because the authorization was used meanwhile, it is
          :class:`X402DeliveryError`; if it fails for any other reason (no ETH for gas, the chain
          unreachable), :class:`X402AuthorizationOutstanding`: it may still be settled until its
          ``validBefore``, so it counts as spent until then.
        """
        if (isinstance(failure, ServerUnreachable) and not failure.sent) or isinstance(failure, _NOT_SENT):
            return
        terms = signed.terms
        token = TestUSD(self.chain, terms.asset)
        payment = X402Payment("", self.address, terms.pay_to, terms.amount, terms.network)
        nonce = "0x" + signed.nonce.hex()

        def delivery_error() -> X402DeliveryError:
            return X402DeliveryError(
                f"paid {terms.amount} base units to {terms.pay_to} for {what} (EIP-3009 nonce {nonce} is used on "
                f"chain), but it was not delivered: {failure}",
                payment,
                nonce,
            )

        def used() -> bool | None:
            try:
                return token.authorization_state(self.address, signed.nonce)
            except Exception:  # the chain cannot say now (unreachable, no such token): unknown
                return None

        if used():
            raise delivery_error() from failure
        try:
            if self.chain.balance(self.address) == 0:
                raise AgentmarketError(f"{self.address} holds no ETH to pay the gas of cancelAuthorization")
            token.cancel_authorization(self.account, signed.nonce, self.account)
            return
        except Exception as exc:  # whatever stopped the cancellation, the chain says what it means below
            reason = _line(exc, 200)
        if used():
            raise delivery_error() from failure
        until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(signed.valid_before))
        raise X402AuthorizationOutstanding(
            f"{what} failed ({_line(failure, 200)}), and its x402 authorization of {terms.amount} base units to "
            f"{terms.pay_to} could not be cancelled ({reason}): the server may still settle it until {until} "
            f"(validBefore {signed.valid_before}); count it as spent until then (EIP-3009 nonce {nonce})",
            payment,
            token=terms.asset,
            nonce=nonce,
            valid_before=signed.valid_before,
            reason=reason,
        ) from failure

    def authorization_outcome(self, asset: str, nonce: str, valid_before: int) -> str:
        """What became of an x402 authorization this account signed (see :class:`X402AuthorizationOutstanding`):
        ``"used"`` (settled — or cancelled by this account: EIP-3009's ``authorizationState`` does not tell
        them apart), ``"expired"`` (unused, and the chain's latest block is at or past ``valid_before``, so no
        block can settle it any more), or ``"outstanding"`` (it may still be settled). ``asset`` is the
        token's address, ``nonce`` the hex nonce, ``valid_before`` Unix seconds."""
        token = TestUSD(self.chain, asset)
        if token.authorization_state(self.address, bytes.fromhex(nonce.removeprefix("0x"))):
            return "used"
        return "expired" if self.chain.timestamp() >= valid_before else "outstanding"

    def _x402_payment(
        self,
        asset_id: int,
        unpaid: Reply,
        max_amount: int | None,
        before_signing: Callable[[X402Terms], None] | None = None,
        *,
        limit_name: str = "max_amount",
    ) -> _SignedPayment:
        """The PAYMENT-SIGNATURE that pays the 402 ``unpaid`` for ``asset_id``, once its requirements passed
        the chain's checks (:class:`X402TermsRefused` otherwise, with nothing signed), the on-chain price is
        within ``max_amount`` (:class:`PriceChanged` otherwise; ``limit_name`` names the argument) and
        ``before_signing`` (if any) returned."""
        header = unpaid.headers.get(PAYMENT_REQUIRED_HEADER)
        if unpaid.status_code != 402 or not header:
            _raise_for_error(unpaid)
            raise AgentmarketError(f"the server answered for asset {asset_id} without asking for an x402 payment")
        try:
            if header_too_deep(header, self.max_json_depth):
                raise JsonTooDeep(self.max_json_depth)
            required = decode_payment_required_header(header)
        except (ValueError, TypeError, AttributeError):
            raise AgentmarketError(
                f"the server's {PAYMENT_REQUIRED_HEADER} header for asset {asset_id} is not x402 JSON; "
                "nothing was signed"
            ) from None
        terms = X402Terms.from_chain(self.market, asset_id, max_timeout_seconds=self.x402_max_timeout_seconds)
        accepted = terms.select(required)
        terms.at_most(max_amount, limit_name)
        if before_signing is not None:
            before_signing(terms)
        payer = x402_payer(self.account, terms)
        # Only the checked requirement goes to the signer, without server-declared extensions (which
        # could ask the scheme to sign more than this one authorization).
        checked = PaymentRequired(x402_version=2, accepts=[accepted], resource=required.resource)
        payload = payer.create_payment_payload(checked)
        authorization = payload.payload["authorization"]
        nonce = bytes.fromhex(authorization["nonce"].removeprefix("0x"))
        headers = payer.encode_payment_signature_header(payload)
        return _SignedPayment(headers, terms, nonce, int(authorization["validBefore"]))

    # ------------------------------------------------------------------ earnings

    def lineage(self) -> Lineage:
        """The marketplace's royalty graph read from the chain (cached; assets published since are added)."""
        if self._lineage is None:
            self._lineage = Lineage.of_market(self.market)
        else:
            self._lineage.refresh()
        return self._lineage

    def withdrawal_plan(self, address: str | None = None) -> LineagePlan:
        """What :meth:`collect` would send for ``address`` (default: this account) and get it, computed now
        from on-chain reads alone (:func:`~marketplace.chain.lineage.plan_withdrawal`): per asset and token,
        claimable now and waiting up the lineage, and the releases, children first. The server's
        ``GET /v1/accounts/{address}/earnings`` shows the same figures."""
        return plan_withdrawal(self.chain, self.lineage(), address or self.address)

    def collect(self) -> list[Release]:
        """Release everything waiting for this account anywhere up its assets' lineage, then to this account.

        Vault-to-vault releases first (children first: a model's vault pays its parent dataset's vault,
        in every token that reached it), then every vault that pays this account releases to it; only
        releases that move money, one transaction each, paid by this account. Returns what was sent
        (:class:`~marketplace.chain.lineage.Release`, amounts in base units of each one's token).
        Idempotent: each release re-reads its claimable right before it is sent. Raises
        :class:`~marketplace.chain.lineage.ReleaseIncomplete` when a release failed (what it sent and
        what failed; the rest stays claimable on chain: calling again finishes).
        """
        return execute(self.chain, self.account, self.withdrawal_plan())

    def withdraw(self) -> dict[int, int]:
        """:meth:`collect`, summed per asset: what this account was sent from each asset's vault (base
        units; a lineage that mixes tokens adds them up here, :meth:`collect` keeps them apart)."""
        received: dict[int, int] = {}
        for release in self.collect():
            if release.payee == self.address:
                received[release.asset_id] = received.get(release.asset_id, 0) + release.amount
        return received

    def release(self, asset_id: int) -> list[Release]:
        """Push ``asset_id``'s royalties up its lineage (vault to vault, children first, every token that
        reaches each vault): anyone may, this account pays the gas. Returns the releases sent; raises
        AgentmarketError for an unknown asset and
        :class:`~marketplace.chain.lineage.ReleaseIncomplete` when a release failed."""
        return execute(self.chain, self.account, plan_release(self.chain, self.lineage(), asset_id))


class UntrustedDeployment(DeploymentError):
    """The server follows another deployment (other contract addresses, or another chain) than the one the
    client trusts; nothing was signed."""


def deployment_difference(trusted: Deployment, served: Deployment) -> str | None:
    """None if ``served`` is the ``trusted`` deployment (same chain id, same address for every contract), else
    the first difference in words: ``Marketplace at 0x… there, 0x… in yours``."""
    if served.chain_id != trusted.chain_id:
        return f"chain id {served.chain_id} there, {trusted.chain_id} in yours"
    for name in sorted(set(trusted.contracts) | set(served.contracts)):
        theirs, ours = served.contracts.get(name), trusted.contracts.get(name)
        if theirs is None or ours is None or theirs.address.lower() != ours.address.lower():
            there, here = theirs.address if theirs else "nowhere", ours.address if ours else "nowhere"
            return f"{name} at {there} there, {here} in yours"
    return None


def _same_deployment(trusted: Deployment, served: Deployment, base_url: str) -> None:
    """:class:`UntrustedDeployment` unless the server at ``base_url`` follows the ``trusted`` deployment."""
    if served.chain_id != trusted.chain_id:
        raise UntrustedDeployment(
            f"the server at {base_url} follows a deployment on chain id {served.chain_id}, yours is on chain id "
            f"{trusted.chain_id}; refusing to use it"
        )
    difference = deployment_difference(trusted, served)
    if difference is not None:
        raise UntrustedDeployment(
            f"the server at {base_url} follows another deployment than your manifest: {difference}; "
            "refusing to use it (check the server URL, or the manifest you trust)"
        )


def _settled(response: httpx.Response, terms: X402Terms) -> X402Payment:
    """The settlement of ``terms`` a paid response names in PAYMENT-RESPONSE (AgentmarketError if none)."""
    try:
        header = response.headers[PAYMENT_RESPONSE_HEADER]
        if header_too_deep(header, MAX_JSON_DEPTH):
            raise JsonTooDeep(MAX_JSON_DEPTH)
        settled = decode_payment_response_header(header)
        if not settled.success:
            raise ValueError("not a successful settlement")
        return X402Payment(settled.transaction, settled.payer or "", terms.pay_to, terms.amount, settled.network)
    except (KeyError, ValueError, TypeError):
        raise AgentmarketError(
            f"the server sent asset {terms.asset_id} without a successful {PAYMENT_RESPONSE_HEADER}; check the chain "
            "for a transfer from your address before paying again"
        ) from None


def _receive(chunks: Iterator[bytes], expected: bytes, destination: Path | None, what: str) -> bytes:
    """Collect ``chunks`` (or stream them to ``destination`` through a ``.part`` file) and check their
    sha256 against the on-chain ``expected`` hash; returns the bytes (b"" when written to a file).

    Raises AgentmarketError when the hash differs or the file cannot be written (nothing is left behind)."""
    digest, collected = hashlib.sha256(), bytearray()
    partial = destination.with_suffix(destination.suffix + ".part") if destination else None
    sink = None
    try:
        sink = partial.open("wb") if partial else None
        for chunk in chunks:
            digest.update(chunk)
            if sink:
                sink.write(chunk)
            else:
                collected += chunk
    except OSError as exc:
        if partial:
            partial.unlink(missing_ok=True)
        raise AgentmarketError(f"cannot write the content of {what} to {destination}: {exc.strerror or exc}") from None
    except BaseException:
        if partial:
            partial.unlink(missing_ok=True)
        raise
    finally:
        if sink:
            sink.close()
    if digest.digest() != expected:
        if partial:
            partial.unlink(missing_ok=True)
        raise AgentmarketError(f"downloaded content of {what} does not match its on-chain hash")
    if partial and destination:
        try:
            partial.replace(destination)
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise AgentmarketError(f"cannot write the content of {what} to {destination}: {exc.strerror}") from None
    return bytes(collected)


def _refusal_reason(response: Reply) -> str | None:
    """The ``reason`` of a 402 body, if any."""
    try:
        reason = response.json().get("reason")
    except (ValueError, AttributeError):
        return None
    return reason if isinstance(reason, str) else None


def _asked_ceiling(response: Reply) -> int | None:
    """The ceiling a channel 402 asks for (``requirements.channel.minMaxClaimableAmount``), if it names one."""
    try:
        asked = response.json()["requirements"]["channel"]["minMaxClaimableAmount"]
        return int(asked)
    except (ValueError, KeyError, TypeError):
        return None


def _raise_for_error(response: Reply) -> None:
    """:class:`ApiClientError` for an error status (its JSON ``error`` and ``detail``, else the body's start)."""
    if response.status_code < 400:
        return
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict):
        code, detail = body.get("error", "error"), body.get("detail", response.text[:200])
        raise ApiClientError(response.status_code, _line(code, 80), _line(detail, 500))
    raise ApiClientError(response.status_code, "error", _line(response.text, 200))


def _line(value: object, limit: int) -> str:
    """``value`` as one line of text of at most ``limit`` characters (a server's words, shown to a user)."""
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _when(timestamp: int) -> str:
    """A unix time as ``2026-12-01 10:15:00 UTC``."""
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _duration(seconds: int) -> str:
    """``14 min 3 s``, ``2 h 5 min``."""
    minutes, secs = divmod(max(seconds, 0), 60)
    hours, minutes = divmod(minutes, 60)
    if hours:
        return f"{hours} h {minutes} min"
    return f"{minutes} min {secs} s" if minutes else f"{secs} s"
