"""Server settings, from arguments or AGENTMARKET_* environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from marketplace.chain.deployment import DEFAULT_MANIFEST
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
