"""Server settings, from arguments or AGENTMARKET_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, PositiveInt, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from marketplace.chain.deployment import DEFAULT_MANIFEST
from marketplace.errors import AgentmarketError
from marketplace.payments.voucher_ledger import Synchronous
from marketplace.siwe import SiweError, authority_parts, origin_of


class Settings(BaseSettings):
    """Where the chain and the manifest are, and where the server keeps its data."""

    model_config = SettingsConfigDict(env_prefix="AGENTMARKET_")

    rpc_url: str = "http://127.0.0.1:8545"
    manifest: Path = DEFAULT_MANIFEST
    data_dir: Path = Path(".agentmarket") / "server"
    database_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8000
    #: Largest upload accepted, in bytes (413 above it).
    max_upload_bytes: int = 256 * 1024 * 1024
    #: Key that claims this gateway's channels and pays the gas of its settlements (x402, channel claims).
    #: Default: a key of the gateway's own, made in ``data_dir`` (``settlement.key``) and, on a local dev
    #: chain, funded with gas at start (marketplace/api/relayer.py). Never logged; never share one key
    #: between gateways with separate data directories.
    relayer_key: SecretStr | None = None
    #: Domain a Sign-In with Ethereum message must name (default: host:port).
    siwe_domain: str | None = None
    # -- Sign-In with Ethereum (EIP-4361) login: what a message must say, and how many nonces may wait.
    #: URI this server's login messages name (default: http://<siwe domain>). A signed message's URI must
    #: have its origin (scheme, host, port) and the message's optional scheme must be its scheme.
    siwe_uri: str | None = None
    #: Lifetime of a login nonce, in seconds; also the longest a login message may be valid (its
    #: Expiration Time at most this long after its Issued At, which must be present).
    siwe_nonce_ttl: PositiveInt = 300
    #: Unused login nonces one client may hold for one address; asking for one more drops that
    #: client's oldest for the address (no 429: nobody can lock an address out by asking for its nonces).
    siwe_max_nonces_per_address: PositiveInt = 10
    #: Unused login nonces one client (IP address; IPv6: its /64) may hold; more is a 429 until some
    #: are used or expire. Behind a reverse proxy every client is the proxy unless it forwards the address.
    siwe_max_nonces_per_client: PositiveInt = 100
    #: Unused login nonces the server holds for all clients together; more is a 429.
    siwe_max_nonces: PositiveInt = 10_000
    #: Lifetime of a bearer token, in seconds.
    auth_token_ttl: int = 900
    #: How often the channel settler claims answered calls on chain (and once more at shutdown), in
    #: seconds; it is woken at once when a channel is closed. Below 450 (claims close 900 s after expiry).
    settle_interval: float = 30.0
    #: Channels closer than this (by the chain's clock) to expiry are refused, in seconds.
    channel_min_seconds_to_expiry: int = 120
    #: How often the gateway re-reads the chain's latest block and the channels contract's events (closes,
    #: top-ups, claims) for the channel gate, in seconds (AGENTMARKET_CHAIN_POLL_INTERVAL).
    chain_poll_interval: float = 1.0
    #: How hard the voucher ledger syncs each commit: "full" (fsync: survives a power loss) or
    #: "normal" (survives the process being killed; a power loss may undo the last commits).
    voucher_sync: Synchronous = "full"

    @field_validator("siwe_uri")
    @classmethod
    def _siwe_uri_has_an_origin(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                origin_of(value)
            except SiweError as exc:
                raise ValueError(f"AGENTMARKET_SIWE_URI: {exc}") from None
        return value

    @field_validator("siwe_domain")
    @classmethod
    def _siwe_domain_is_an_authority(cls, value: str | None) -> str | None:
        if value is not None and (not value or authority_parts(value) is None):
            raise ValueError(f"AGENTMARKET_SIWE_DOMAIN: {value!r} is not an RFC 3986 authority (host[:port])")
        return value

    # Gateway limits: what one request or connection may cost the server (marketplace/api/limits.py
    # checks requests, marketplace/api/server.py connections). Sizes in bytes, times in seconds.
    #: Largest request body of every route but content upload (413 above it; uploads: max_upload_bytes).
    max_body_bytes: int = Field(1024 * 1024, ge=0)
    #: Deepest nesting of arrays and objects in a JSON body (422) or JSON-carrying header (400).
    max_json_depth: int = Field(64, ge=1)
    #: Largest request head: request target plus header names and values (431 above it).
    max_header_bytes: int = Field(32 * 1024, ge=1024)
    #: Most header lines in one request (431 above it).
    max_headers: int = Field(100, ge=1)
    #: Time a connection has to send a whole request head, counted from its opening or from the end
    #: of its previous response (408, then the connection is closed).
    head_timeout: float = Field(10.0, gt=0)
    #: Longest silence while a request body is arriving; also the grace period before
    #: ``body_min_rate`` applies (408 after it). After the answer, the rest of an unread body has
    #: this long to arrive before the connection is closed.
    body_timeout: float = Field(10.0, gt=0)
    #: Slowest average body rate accepted once ``body_timeout`` has passed, in bytes per second (408).
    body_min_rate: int = Field(16 * 1024, gt=0)
    #: Longest a response may stay stuck because its client does not read it (the connection is dropped).
    send_timeout: float = Field(30.0, gt=0)
    #: Most connections open at once; when full, the one waiting longest for a request head is closed
    #: to make room, else the slowest request body of the client holding most connections (503), or the
    #: new one gets 503 if every connection has a request in flight.
    max_connections: int = Field(512, ge=1)
    #: Most connections one client (IP address; IPv6: its /64) may hold; a new one beyond it closes that
    #: client's own idle or slowest-body connection, else gets 503. Behind a reverse proxy every client is
    #: the proxy: raise it to max_connections there.
    max_connections_per_client: int = Field(64, ge=1)
    #: On shutdown, how long requests in flight may take to finish before they are cancelled.
    shutdown_timeout: float = Field(30.0, gt=0)

    @classmethod
    def load(cls, **values: Any) -> Settings:
        """Settings from ``values`` and the environment; a bad value raises :class:`AgentmarketError`
        naming the setting and its ``AGENTMARKET_*`` variable (not the value, which may be a secret)."""
        try:
            return cls(**values)
        except ValidationError as exc:
            first = exc.errors()[0]
            name = str(first["loc"][0]) if first.get("loc") else "?"
            raise AgentmarketError(f"setting {name} (AGENTMARKET_{name.upper()}) is invalid: {first['msg']}") from None

    @property
    def expected_siwe_domain(self) -> str:
        """The domain SIWE messages must carry."""
        host = f"[{self.host}]" if ":" in self.host else self.host  # an IPv6 address in an authority
        return self.siwe_domain or f"{host}:{self.port}"

    @property
    def expected_siwe_uri(self) -> str:
        """The URI this server's SIWE messages name; a signed message's URI must share its origin."""
        return self.siwe_uri or f"http://{self.expected_siwe_domain}"

    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL of the read model (SQLite in the data dir unless set)."""
        if self.database_url:
            return self.database_url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(self.data_dir / 'index.sqlite3').resolve()}"
