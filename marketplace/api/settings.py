"""Server settings, from arguments or AGENTMARKET_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from marketplace.chain.deployment import DEFAULT_MANIFEST
from marketplace.errors import AgentmarketError
from marketplace.payments.ledger import Synchronous


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
    #: Key that pays the gas of settlements (x402, channel claims). Default on a local chain: the
    #: last dev account. Never logged.
    relayer_key: SecretStr | None = None
    #: Domain a Sign-In with Ethereum message must name (default: host:port).
    siwe_domain: str | None = None
    #: Lifetime of a login nonce and of a bearer token, in seconds.
    siwe_nonce_ttl: int = 300
    auth_token_ttl: int = 900
    #: How often the channel settler claims vouchers on chain (and once more at shutdown), in seconds.
    settle_interval: float = 30.0
    #: Channels closer than this to expiry are refused (must exceed settle_interval).
    channel_min_seconds_to_expiry: int = 120
    #: How hard the voucher ledger syncs each commit: "full" (fsync: survives a power loss) or
    #: "normal" (survives the process being killed; a power loss may undo the last commits).
    voucher_sync: Synchronous = "full"

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
    #: to make room, or the new one gets 503 if every connection has a request in flight.
    max_connections: int = Field(512, ge=1)
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
        return self.siwe_domain or f"{self.host}:{self.port}"

    def resolved_database_url(self) -> str:
        """The SQLAlchemy URL of the read model (SQLite in the data dir unless set)."""
        if self.database_url:
            return self.database_url
        self.data_dir.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{(self.data_dir / 'index.sqlite3').resolve()}"
