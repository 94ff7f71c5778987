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
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from eth_account import Account
from eth_account.messages import encode_defunct
from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt
from x402 import x402ClientSync
from x402.http import PAYMENT_REQUIRED_HEADER, PAYMENT_RESPONSE_HEADER, x402HTTPClientSync
from x402.http.utils import decode_payment_required_header, decode_payment_response_header
from x402.mechanisms.evm.exact import ExactEvmClientScheme
from x402.mechanisms.evm.signers import EthAccountSigner
from x402.schemas import PaymentRequired

from marketplace.chain import Chain, ContractRevert, connect
from marketplace.chain.deployment import Deployment, DeploymentError, parse_manifest, verify_deployment
from marketplace.chain.market import AssetKind, Channel, Market
from marketplace.chain.token import TestUSD
from marketplace.client.checks import MAX_TIMEOUT_SECONDS, PaymentTerms
from marketplace.client.vouchers import VoucherBook
from marketplace.content import open_sealed_frames
from marketplace.errors import AgentmarketError
from marketplace.protocol.vouchers import HEADER, Voucher, VoucherHasher

_READ_CHUNK = 64 * 1024


class ApiClientError(AgentmarketError):
    """The server answered with an error: ``status``, machine ``code`` and human ``detail``."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{detail} (HTTP {status} {code})")
        self.status, self.code, self.detail = status, code, detail


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


@dataclass(frozen=True)
class _SignedPayment:
    """A PAYMENT-SIGNATURE ready to send: its headers, the terms it pays and its EIP-3009 nonce."""

    headers: dict[str, str]
    terms: PaymentTerms
    nonce: bytes


@dataclass(frozen=True)
class PaidDownload:
    """One download paid over x402: the content (b"" when written to a file) and its payment."""

    content: bytes
    payment: X402Payment


def x402_payer(account: LocalAccount, terms: PaymentTerms) -> x402HTTPClientSync:
    """The x402 v2 client this SDK pays with, bound to one payment's on-chain ``terms``.

    It is the x402 SDK's own client with only what this payment needs: the exact EVM scheme (EIP-3009)
    on ``terms.network`` alone (no v1, no other network), spend controls that allow only the asset's
    token up to ``terms.amount``, and :meth:`PaymentTerms.before_payment_creation` as its
    before-payment hook, so whatever it is handed, it signs only a requirement that matches the chain
    (else :class:`~marketplace.client.checks.PaymentTermsRefused`, nothing signed). ``account``
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
    connection pool, closed by :meth:`close` or at the end of a ``with`` block.
    """

    def __init__(self, base_url: str, *, http: httpx.Client | None = None, timeout: float = 60) -> None:
        self.base_url = base_url.rstrip("/")
        self._owns_http = http is None
        self.http = http or httpx.Client(base_url=self.base_url, timeout=timeout)

    def close(self) -> None:
        """Close the connection pool (if this reader opened it)."""
        if self._owns_http:
            self.http.close()

    def __enter__(self) -> MarketplaceReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise AgentmarketError(f"cannot reach the marketplace server at {self.base_url} ({exc})") from None
        _raise_for_error(response)
        return response

    def assets(self, **filters: Any) -> dict[str, Any]:
        """A page of the catalog (filters: kind, provider, min_price, max_price, q, limit, offset)."""
        params = {k: v for k, v in filters.items() if v is not None}
        return self._request("GET", "/v1/assets", params=params).json()

    def asset(self, asset_id: int) -> dict[str, Any]:
        """One asset with its split, lineage, revenue, sales and rating."""
        return self._request("GET", f"/v1/assets/{asset_id}").json()

    def agent(self, agent_id: int) -> dict[str, Any]:
        """One agent."""
        return self._request("GET", f"/v1/agents/{agent_id}").json()

    def earnings(self, address: str) -> dict[str, Any]:
        """Claimable and released amounts per vault for ``address``."""
        return self._request("GET", f"/v1/accounts/{address}/earnings").json()

    def stats(self) -> dict[str, Any]:
        """Marketplace-wide figures."""
        return self._request("GET", "/v1/stats").json()


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
    ) -> None:
        super().__init__(base_url, http=http)
        self.account = account
        self.chain = chain
        self.deployment = deployment
        self.market: Market = deployment.market(chain)
        self.encryption_key = encryption_key
        self._token: tuple[str, int] | None = None
        #: What this client counted as answered and signed on each channel (see marketplace.client.vouchers).
        self.voucher_book = voucher_book or VoucherBook()
        self._prices: dict[int, int] = {}  # on-chain per-call prices of models this client called
        self._channels_checked: dict[tuple[int, int, str], int] = {}  # (channel, model, signer) -> claimed then
        self._vouchers: VoucherHasher | None = None
        #: The longest x402 authorization this client signs, in seconds (see :mod:`marketplace.client.checks`).
        self.x402_max_timeout_seconds = MAX_TIMEOUT_SECONDS

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
        try:
            manifest = http.get("/v1/deployment").raise_for_status().json()
        except httpx.HTTPError as exc:
            raise AgentmarketError(
                f"cannot reach the marketplace server at {base_url} ({exc}); is it running?"
            ) from None
        deployment = verify_deployment(parse_manifest(manifest, f"{base_url}/v1/deployment"), chain, base_url)
        if trusted is not None:
            _same_deployment(trusted, deployment, base_url)
        return cls(base_url, account, chain, deployment, http=http, **options)

    @property
    def address(self) -> str:
        """The account's address."""
        return self.account.address

    # ------------------------------------------------------------------ HTTP plumbing

    def _request(self, method: str, path: str, *, auth: bool = False, **kwargs: Any) -> httpx.Response:
        if auth:
            kwargs["headers"] = {**kwargs.get("headers", {}), "Authorization": f"Bearer {self.login()}"}
        return super()._request(method, path, **kwargs)

    def login(self) -> str:
        """A bearer token for this account (Sign-In with Ethereum; cached until shortly before expiry)."""
        if self._token and self._token[1] > time.time() + 30:
            return self._token[0]
        issued = self._request("POST", "/v1/auth/nonce", json={"address": self.address}).json()
        signature = Account.sign_message(encode_defunct(text=issued["message"]), self.account.key).signature
        verified = self._request(
            "POST", "/v1/auth/verify", json={"message": issued["message"], "signature": "0x" + signature.hex()}
        ).json()
        self._token = (verified["token"], verified["expires_at"])
        return verified["token"]

    # ------------------------------------------------------------------ reads

    def earnings(self, address: str | None = None) -> dict[str, Any]:
        """Claimable and released amounts per vault for ``address`` (default: this account)."""
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
            payees=payees or [(self.address, 10_000 - sum(bps for _, bps in parents))],
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

    def upload(self, asset_id: int, content: Path | bytes, *, list_asset: bool = True) -> dict[str, Any]:
        """Upload the content of ``asset_id``'s current version (this account must own it) and, once the
        server has verified it against the on-chain content hash, list the asset if it is unlisted (this
        account's ``setListed`` transaction; ``list_asset=False`` leaves the listing as it is).

        What finishes a :meth:`publish` that raised :class:`PublishIncomplete`, and what re-uploads a
        listed asset's content to a server that lost it. ``content`` is a file (streamed) or bytes; its
        sha256 is checked against the chain before anything is sent. Returns the server's record
        (``asset_id``, ``version``, ``sha256``, ``size`` in bytes) and ``listed``, the asset's listing
        now. Raises AgentmarketError before anything is sent when this account is not the owner or the
        content is not this version's (ContractRevert UnknownAsset for an unknown id);
        :class:`PublishIncomplete` when the asset stays unlisted because the upload or the listing
        failed; for a listed asset, ApiClientError (the server refused: 413 too large, 409 a new version
        was published meanwhile, …) or AgentmarketError (the server is unreachable).
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
    ) -> dict[str, Any]:
        """PUT the content of ``asset_id`` at ``version`` (``listed``: its listing on chain now), check the
        server's record, then list it if asked and unlisted. Any failure that leaves the asset unlisted
        raises :class:`PublishIncomplete` (from the failure)."""
        uploaded = False
        try:
            stored = self._put_content(asset_id, content)
            if (stored.get("sha256"), stored.get("version")) != ("0x" + content_hash.hex(), version):
                raise AgentmarketError(
                    f"the server's answer names sha256 {stored.get('sha256')} version {stored.get('version')}, "
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
        return {**stored, "listed": listed}

    def _put_content(self, asset_id: int, content: Path | bytes) -> dict[str, Any]:
        """``PUT /v1/assets/{id}/content``: the bytes, or the file streamed with its size declared (so a
        server refuses a too-large upload from its Content-Length, before the body)."""

        def stream() -> Iterator[bytes]:
            assert isinstance(content, Path)
            with content.open("rb") as handle:
                while chunk := handle.read(_READ_CHUNK):
                    yield chunk

        if isinstance(content, bytes):
            return self._request("PUT", f"/v1/assets/{asset_id}/content", auth=True, content=content).json()
        headers = {"Content-Length": str(content.stat().st_size)}
        return self._request(
            "PUT", f"/v1/assets/{asset_id}/content", auth=True, content=stream(), headers=headers
        ).json()

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

        With ``destination`` the content is streamed to that file (and b"" returned).
        """
        expected = self.market.marketplace.asset(asset_id).content_hash
        params = {"agent_id": agent_id} if agent_id else {}
        headers = {"Authorization": f"Bearer {self.login()}"}
        digest, collected = hashlib.sha256(), bytearray()
        partial = destination.with_suffix(destination.suffix + ".part") if destination else None
        with self.http.stream("GET", f"/v1/assets/{asset_id}/content", params=params, headers=headers) as response:
            if response.status_code >= 400:
                response.read()
                _raise_for_error(response)
            chunks: Iterator[bytes] = response.iter_bytes()
            if response.headers.get("x-content-encryption") == "x25519-sealedbox-frames":
                if self.encryption_key is None:
                    raise AgentmarketError("the content is sealed to your agent's key; give the client encryption_key")
                chunks = open_sealed_frames(chunks, self.encryption_key)
            sink = partial.open("wb") if partial else None
            try:
                for chunk in chunks:
                    digest.update(chunk)
                    if sink:
                        sink.write(chunk)
                    else:
                        collected += chunk
            finally:
                if sink:
                    sink.close()
        if digest.digest() != expected:
            if partial:
                partial.unlink(missing_ok=True)
            raise AgentmarketError(f"downloaded content of asset {asset_id} does not match its on-chain hash")
        if partial and destination:
            partial.replace(destination)
        return bytes(collected)

    def payment_terms(self) -> dict[str, Any]:
        """The server's channel terms (``GET /v1/payments``): channels contract, ``receiverAuthorizer``, claim
        window, voucher types."""
        return self._request("GET", "/v1/payments").json()["payment_channel"]

    # ------------------------------------------------------------------ channels after opening

    @property
    def voucher_scope(self) -> str:
        """The key of this deployment's channels in :attr:`voucher_book` (``"<chain id>:<channels address>"``)."""
        return f"{self.chain.chain_id}:{self.market.channels.address}"

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
        """
        channels = self.market.channels
        if receiver_authorizer is None:
            terms = self.payment_terms()
            if str(terms.get("channels", "")).lower() != channels.address.lower():
                raise AgentmarketError(
                    f"the server takes channels of contract {terms.get('channels')}, not of this deployment's "
                    f"{channels.address}"
                )
            receiver_authorizer = str(terms["receiverAuthorizer"])
        self.market.token.approve(self.account, channels.address, deposit)
        expiry = self.chain.timestamp() + ttl
        return channels.open(self.account, asset_id, self.market.token.address, deposit, expiry, signer,
                             receiver_authorizer=receiver_authorizer)  # fmt: skip

    def invoke(
        self, model_id: int, payload: Any, *, channel_id: int | None = None, signer: LocalAccount | None = None
    ) -> dict[str, Any]:
        """Call a served model and pay for the call. Returns ``{"output", "payment"}``.

        With ``channel_id``, pays with a voucher on that channel (signed by ``signer``, default this
        account): no transaction per call. The voucher's ceiling is this client's own count — the
        calls it got answers for, plus the ones in flight, plus this one at the asset's on-chain price
        — never what a server asks: a 402 asking for more raises :class:`AgentmarketError` naming
        both numbers, and nothing more is signed. Without ``channel_id``, pays per call with x402
        (this account signs an EIP-3009 authorization of the price; the server settles it into the
        model's vault).
        """
        if channel_id is None:
            return self._invoke_x402(model_id, payload)
        signer = signer or self.account
        scope = f"{self.chain.chain_id}:{self.market.channels.address}"
        claimed = self._check_channel(channel_id, model_id, signer.address)
        price = self._price(model_id)
        for attempt in range(2):
            ceiling = self.voucher_book.begin(scope, channel_id, price, claimed)
            header = self._voucher(signer, channel_id, ceiling).to_header()
            answered = False
            try:
                response = self._send("POST", f"/v1/models/{model_id}/invoke", json={"input": payload},
                                      headers={HEADER: header})  # fmt: skip
                answered = response.status_code < 400
            finally:
                count = self.voucher_book.finish(scope, channel_id, price, answered=answered)
            if response.status_code == 402 and _refusal_reason(response) == "insufficient_voucher":
                asked = _asked_ceiling(response)
                if asked is not None and asked > ceiling:
                    if attempt == 0 and self._price(model_id, fresh=True) != price:
                        price = self._prices[model_id]  # the owner changed the price: count with the new one
                        continue
                    raise AgentmarketError(
                        f"the server asks for a voucher of {asked} on channel {channel_id}, but this client counted "
                        f"{count.answered} answered + {price} for this call = {ceiling}: refusing to sign more"
                    )
            _raise_for_error(response)
            return response.json()
        raise AssertionError("unreachable")

    def _price(self, model_id: int, *, fresh: bool = False) -> int:
        """The model's per-call price as the chain says (cached; ``fresh`` re-reads it)."""
        if fresh or model_id not in self._prices:
            self._prices[model_id] = self.market.marketplace.asset(model_id).price
        return self._prices[model_id]

    def _check_channel(self, channel_id: int, model_id: int, signer: str) -> int:
        """Check on chain (once per channel) that it pays for ``model_id`` and that ``signer`` signs for it;
        returns what was claimed on it (where a fresh count starts)."""
        key = (channel_id, model_id, signer)
        if key in self._channels_checked:
            return self._channels_checked[key]
        channel = self.market.channels.channel(channel_id)
        if channel.asset_id != model_id:
            raise AgentmarketError(f"channel {channel_id} pays for asset {channel.asset_id}, not model {model_id}")
        if channel.signer.lower() != signer.lower():
            raise AgentmarketError(f"channel {channel_id}'s vouchers are signed by {channel.signer}, not {signer}")
        self._channels_checked[key] = channel.claimed
        return channel.claimed

    def _voucher(self, signer: LocalAccount, channel_id: int, ceiling: int) -> Voucher:
        if self._vouchers is None:
            self._vouchers = VoucherHasher(self.market.channels.domain)
        return self._vouchers.voucher(signer, channel_id, ceiling)

    def _invoke_x402(self, model_id: int, payload: Any) -> dict[str, Any]:
        """One call paid with x402: 402, check the requirements against the chain, sign, retry.

        :class:`X402DeliveryError` when the payment moved but no answer came back."""
        path, body = f"/v1/models/{model_id}/invoke", {"input": payload}
        unpaid = self._send("POST", path, json=body)
        signed = self._x402_payment(model_id, unpaid, None)
        try:
            paid = self._send("POST", path, json=body, headers=signed.headers)
            _raise_for_error(paid)
            return paid.json()
        except (AgentmarketError, ValueError) as exc:
            self._raise_if_paid(signed, f"a call of model {model_id}", exc)
            raise

    def download_x402(
        self, asset_id: int, destination: Path | None = None, *, max_amount: int | None = None
    ) -> PaidDownload:
        """Buy one download of ``asset_id`` over x402 (``GET /v1/assets/{id}/x402``), no license needed.

        The payment is an EIP-3009 authorization of exactly the asset's on-chain price to its vault,
        checked against the chain before it is signed (:class:`PaymentTermsRefused` otherwise;
        also when the price is above ``max_amount``, in base units). The content is verified against
        the on-chain hash; with ``destination`` it is streamed to that file (and ``content`` is b"").
        Raises :class:`ApiClientError` when the server refuses the payment, and
        :class:`X402DeliveryError` when the payment moved on chain but the content did not arrive intact.
        """
        path = f"/v1/assets/{asset_id}/x402"
        expected = self.market.marketplace.asset(asset_id).content_hash
        try:
            with self.http.stream("GET", path) as unpaid:
                if unpaid.status_code >= 400:
                    unpaid.read()
                signed = self._x402_payment(asset_id, unpaid, max_amount)
        except httpx.HTTPError as exc:
            raise AgentmarketError(f"cannot reach the marketplace server at {self.base_url} ({exc})") from None
        try:
            with self.http.stream("GET", path, headers=signed.headers) as paid:
                if paid.status_code >= 400:
                    paid.read()
                    _raise_for_error(paid)
                payment = _settled(paid, signed.terms)
                content = _receive(paid.iter_bytes(), expected, destination, f"asset {asset_id}")
        except (AgentmarketError, httpx.HTTPError) as exc:
            self._raise_if_paid(signed, f"a download of asset {asset_id}", exc)
            if isinstance(exc, httpx.HTTPError):
                raise AgentmarketError(f"cannot reach the marketplace server at {self.base_url} ({exc})") from None
            raise
        return PaidDownload(content, payment)

    def _raise_if_paid(self, signed: _SignedPayment, what: str, failure: Exception) -> None:
        """After a paid request failed with ``failure``: raise :class:`X402DeliveryError` (from ``failure``)
        if its authorization was used on chain, since the money moved whatever the server said."""
        terms = signed.terms
        try:
            used = TestUSD(self.chain, terms.asset).authorization_state(self.address, signed.nonce)
        except AgentmarketError:
            return
        if used:
            payment = X402Payment("", self.address, terms.pay_to, terms.amount, terms.network)
            raise X402DeliveryError(
                f"paid {terms.amount} base units to {terms.pay_to} for {what} (EIP-3009 nonce "
                f"0x{signed.nonce.hex()} is used on chain), but it was not delivered: {failure}",
                payment,
                "0x" + signed.nonce.hex(),
            ) from failure

    def _x402_payment(self, asset_id: int, unpaid: httpx.Response, max_amount: int | None) -> _SignedPayment:
        """The PAYMENT-SIGNATURE that pays the 402 ``unpaid`` for ``asset_id``, once its requirements passed
        the chain's checks (:class:`PaymentTermsRefused` otherwise, with nothing signed)."""
        header = unpaid.headers.get(PAYMENT_REQUIRED_HEADER)
        if unpaid.status_code != 402 or not header:
            _raise_for_error(unpaid)
            raise AgentmarketError(f"the server answered for asset {asset_id} without asking for an x402 payment")
        try:
            required = decode_payment_required_header(header)
        except (ValueError, TypeError, AttributeError):
            raise AgentmarketError(
                f"the server's {PAYMENT_REQUIRED_HEADER} header for asset {asset_id} is not x402 JSON; "
                "nothing was signed"
            ) from None
        terms = PaymentTerms.from_chain(self.market, asset_id, max_timeout_seconds=self.x402_max_timeout_seconds)
        accepted = terms.select(required)
        terms.at_most(max_amount)
        payer = x402_payer(self.account, terms)
        # Only the checked requirement goes to the signer, without server-declared extensions (which
        # could ask the scheme to sign more than this one authorization).
        checked = PaymentRequired(x402_version=2, accepts=[accepted], resource=required.resource)
        payload = payer.create_payment_payload(checked)
        nonce = bytes.fromhex(payload.payload["authorization"]["nonce"].removeprefix("0x"))
        return _SignedPayment(payer.encode_payment_signature_header(payload), terms, nonce)

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            return self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise AgentmarketError(f"cannot reach the marketplace server at {self.base_url} ({exc})") from None

    # ------------------------------------------------------------------ earnings

    def withdraw(self) -> dict[int, int]:
        """Release everything this account can claim, from every vault; returns amount per asset."""
        released: dict[int, int] = {}
        for vault in self.earnings()["vaults"]:
            if int(vault["claimable"]) > 0:
                contract = self.market.vault(vault["asset_id"])
                receipt = contract.release(self.account, vault["token"], self.address)
                (event,) = self.chain.events(contract.contract, receipt, "PaymentReleased")
                released[vault["asset_id"]] = event["amount"]
        return released


def _same_deployment(trusted: Deployment, served: Deployment, base_url: str) -> None:
    """DeploymentError unless the server at ``base_url`` follows the ``trusted`` deployment."""
    if served.chain_id != trusted.chain_id:
        raise DeploymentError(
            f"the server at {base_url} follows a deployment on chain id {served.chain_id}, yours is on chain id "
            f"{trusted.chain_id}; refusing to use it"
        )
    for name in sorted(set(trusted.contracts) | set(served.contracts)):
        theirs, ours = served.contracts.get(name), trusted.contracts.get(name)
        if theirs is None or ours is None or theirs.address.lower() != ours.address.lower():
            raise DeploymentError(
                f"the server at {base_url} follows another deployment than your manifest: {name} at "
                f"{theirs.address if theirs else 'nowhere'} there, {ours.address if ours else 'nowhere'} in yours; "
                "refusing to use it (check the server URL, or the manifest you trust)"
            )


def _settled(response: httpx.Response, terms: PaymentTerms) -> X402Payment:
    """The settlement of ``terms`` a paid response names in PAYMENT-RESPONSE (AgentmarketError if none)."""
    try:
        settled = decode_payment_response_header(response.headers[PAYMENT_RESPONSE_HEADER])
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
    sha256 against the on-chain ``expected`` hash; returns the bytes (b"" when written to a file)."""
    digest, collected = hashlib.sha256(), bytearray()
    partial = destination.with_suffix(destination.suffix + ".part") if destination else None
    sink = partial.open("wb") if partial else None
    try:
        for chunk in chunks:
            digest.update(chunk)
            if sink:
                sink.write(chunk)
            else:
                collected += chunk
    finally:
        if sink:
            sink.close()
    if digest.digest() != expected:
        if partial:
            partial.unlink(missing_ok=True)
        raise AgentmarketError(f"downloaded content of {what} does not match its on-chain hash")
    if partial and destination:
        partial.replace(destination)
    return bytes(collected)


def _refusal_reason(response: httpx.Response) -> str | None:
    """The ``reason`` of a 402 body, if any."""
    try:
        reason = response.json().get("reason")
    except (ValueError, AttributeError):
        return None
    return reason if isinstance(reason, str) else None


def _asked_ceiling(response: httpx.Response) -> int | None:
    """The ceiling a channel 402 asks for (``requirements.channel.minMaxClaimableAmount``), if it names one."""
    try:
        asked = response.json()["requirements"]["channel"]["minMaxClaimableAmount"]
        return int(asked)
    except (ValueError, KeyError, TypeError):
        return None


def _raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        body = response.json()
        raise ApiClientError(response.status_code, body.get("error", "error"), body.get("detail", response.text))
    except ValueError:
        raise ApiClientError(response.status_code, "error", response.text[:200]) from None


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
