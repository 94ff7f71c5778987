"""Follows every marketplace contract's events into the read model.

The chain is the source of truth; the database is a cache that can always be rebuilt. The indexer
reads logs in batches from the manifest's deploy block, applies them in (block, log index) order,
records the hash of every block it indexed and, when a stored hash no longer matches the chain
(a reorg on anvil), drops the read model and rebuilds it from the deploy block.

A chain *replaced* under it is not a reorg: the read model records the deployment it follows (chain
id, genesis block hash, Marketplace address: see :meth:`Indexer.scope`), and when the stored hashes
stop matching, the indexer reads the genesis hash: if it changed, :meth:`Indexer.sync` raises
:class:`~marketplace.chain.identity.ChainReplaced` and leaves the read model as it is (the server
archives it at its next start, :func:`archive_read_model`) instead of filling it with another chain.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from eth_abi.codec import ABICodec
from eth_abi.decoding import StringDecoder
from eth_abi.encoding import TextStringEncoder
from eth_abi.registry import registry as abi_registry
from sqlalchemy import Engine, create_engine, delete, inspect, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session
from web3 import Web3

from marketplace.chain import Chain, load_artifact
from marketplace.chain.contracts import RevenueVaultContract
from marketplace.chain.deployment import Deployment
from marketplace.chain.identity import ChainIdentity, ChainReplaced
from marketplace.chain.records import AssetKind
from marketplace.chain.units import PERPETUAL
from marketplace.indexer.models import (
    AgentMetadataRow,
    AgentRow,
    AssetParentRow,
    AssetPayeeRow,
    AssetRow,
    Base,
    ChannelRow,
    FeedbackRow,
    IndexedBlock,
    LicenseRow,
    ReleaseRow,
    SyncState,
    VaultRevenueRow,
)

#: Contracts whose events the read model follows (RevenueVault: every vault clone).
_FOLLOWED = ("Marketplace", "PaymentChannels", "AgentRegistry", "ReputationRegistry", "RevenueVault")
#: How many recent block hashes are kept to detect reorgs.
_KEPT_BLOCK_HASHES = 256
#: Largest value a signed 64-bit SQL column holds (``price_sort``).
_INT64_MAX = 2**63 - 1
#: topic0 of ERC-20 ``Transfer(address indexed from, address indexed to, uint256 value)`` (an ERC-721
#: Transfer has the same topic0 but a fourth, indexed topic).
_ERC20_TRANSFER = bytes(Web3.keccak(text="Transfer(address,address,uint256)"))


def _lenient_codec() -> ABICodec:
    """eth-abi's codec, except that a ``string`` whose bytes are not UTF-8 decodes with U+FFFD in place of
    the bad bytes instead of raising: a log anyone can emit must not stop the indexer."""
    registry = abi_registry.copy()
    registry.unregister("string")
    registry.register("string", TextStringEncoder, StringDecoder(handle_string_errors="replace"), label="string")
    return ABICodec(registry)


def storable_text(value: str) -> str:
    """``value`` (decoded by the lenient codec, so valid Unicode) as every engine can store it: NUL, which
    PostgreSQL's text refuses, becomes U+FFFD."""
    return value.replace("\x00", "\ufffd")


@dataclass(frozen=True)
class SyncReport:
    """What one :meth:`Indexer.sync` did."""

    from_block: int
    to_block: int
    events: int
    reorg: bool


def read_model_scope(chain: ChainIdentity, deployment: Deployment) -> str:
    """What a read model of ``deployment`` on ``chain`` records it follows:
    ``eip155:<chain id>/genesis:0x<hash>/marketplace:<address>`` (the content store's scope too)."""
    return f"{chain}/marketplace:{deployment.address('Marketplace')}"


def stored_scope(engine: Engine) -> str | None:
    """The deployment the read model in ``engine`` follows (see :func:`read_model_scope`), or None when it
    holds none (empty, or written by a version that did not record it: the indexer rebuilds such a one)."""
    try:
        inspector = inspect(engine)
        if not inspector.has_table(SyncState.__tablename__):
            return None
        if "chain" not in {column["name"] for column in inspector.get_columns(SyncState.__tablename__)}:
            return None
        with Session(engine) as session:
            return session.scalar(select(SyncState.chain).where(SyncState.id == 1))
    except SQLAlchemyError:
        return None


def archive_read_model(engine: Engine, destination: Path) -> int:
    """Copy every row of the read model in ``engine`` into a new SQLite file ``destination``, then empty it.

    Nothing is lost: the copy has the same tables (open it with ``sqlite3`` or SQLAlchemy and
    :class:`~marketplace.indexer.models.Base`). Returns the number of rows copied. Raises
    ``FileExistsError`` if ``destination`` exists.
    """
    if destination.exists():
        raise FileExistsError(destination)
    destination.parent.mkdir(parents=True, exist_ok=True)
    copy = create_engine(f"sqlite:///{destination.resolve()}")
    rows = 0
    try:
        Base.metadata.create_all(copy)
        existing = set(inspect(engine).get_table_names())
        with engine.connect() as source, copy.begin() as target:
            for table in Base.metadata.sorted_tables:
                if table.name not in existing:
                    continue
                batch = [dict(row._mapping) for row in source.execute(table.select())]
                if batch:
                    target.execute(table.insert(), batch)
                    rows += len(batch)
    finally:
        copy.dispose()
    Base.metadata.drop_all(engine)
    Base.metadata.create_all(engine)
    return rows


class Indexer:
    """Indexes one deployment on one chain into ``engine``'s database.

    ``identity`` is the chain's (read from the chain unless given); :attr:`scope` what the read model
    records it follows.
    """

    def __init__(
        self,
        chain: Chain,
        deployment: Deployment,
        engine: Engine,
        *,
        batch_size: int = 2_000,
        identity: ChainIdentity | None = None,
    ) -> None:
        self.chain = chain
        self.deployment = deployment
        self.engine = engine
        self.batch_size = batch_size
        self.identity = identity or ChainIdentity.of(chain)
        self.scope = read_model_scope(self.identity, deployment)
        self._scope_checked = False
        if not self._schema_is_current():  # written by another version: it is a cache, so rebuild it
            Base.metadata.drop_all(engine)
        Base.metadata.create_all(engine)
        self._decoders: dict[tuple[str, bytes], Callable[[Any], Any]] = {}
        self._contract_of: dict[str, str] = {
            Web3.to_checksum_address(deployment.address(name)): name for name in _FOLLOWED if name != "RevenueVault"
        }
        decoding = Web3()  # no provider: only its codec is used, to decode logs
        decoding.codec = _lenient_codec()
        for name in _FOLLOWED:
            contract = decoding.eth.contract(abi=load_artifact(name).abi)
            for entry in contract.abi:
                if entry.get("type") == "event":
                    event = contract.events[entry["name"]]()
                    topic = bytes(Web3.keccak(text=_event_signature(entry)))
                    self._decoders[(name, topic)] = event.process_log

    # ------------------------------------------------------------------ syncing

    def last_block(self) -> int:
        """The last block the read model includes (deploy block - 1 before the first sync)."""
        with Session(self.engine) as session:
            state = session.get(SyncState, 1)
            return state.last_block if state else self.deployment.deploy_block - 1

    def sync(self) -> SyncReport:
        """Index everything up to the current head; returns what was done.

        Raises :class:`~marketplace.chain.identity.ChainReplaced` (and changes nothing) when the read
        model follows another deployment, or the chain was replaced since it was indexed.
        """
        if not self._scope_checked:
            self.check_scope()
            self._scope_checked = True
        reorg = self._reorged()
        if reorg:
            actual = ChainIdentity.of(self.chain)
            if actual != self.identity:
                raise ChainReplaced.while_serving(self.identity, actual, self.chain.rpc_url)
            self.reset()
        start = self.last_block() + 1
        head = self.chain.block_number()
        events = 0
        for batch_start in range(start, head + 1, self.batch_size):
            batch_end = min(batch_start + self.batch_size - 1, head)
            events += self._index_range(batch_start, batch_end)
        return SyncReport(start, head, events, reorg)

    def reset(self) -> None:
        """Drop the read model; the next sync rebuilds it from the deploy block."""
        Base.metadata.drop_all(self.engine)
        Base.metadata.create_all(self.engine)

    def check_scope(self) -> None:
        """Raise :class:`~marketplace.chain.identity.ChainReplaced` if the read model follows another deployment
        than this indexer's (another chain, or another Marketplace on this one)."""
        stored = stored_scope(self.engine)
        if stored is not None and stored != self.scope:
            old = ChainIdentity.parse(stored) or self.identity
            raise ChainReplaced(
                old,
                self.identity,
                f"the read model follows {stored}, not {self.scope}: restart `agentmarket serve`, which archives it",
            )

    def _schema_is_current(self) -> bool:
        """Whether every read-model table that exists has exactly the columns this version writes, and none is
        missing from a read model that has any (an earlier version did not write it: its rows must be rebuilt)."""
        inspector = inspect(self.engine)
        existing = [table for table in Base.metadata.sorted_tables if inspector.has_table(table.name)]
        if existing and len(existing) < len(Base.metadata.sorted_tables):
            return False
        return all(
            {column["name"] for column in inspector.get_columns(table.name)} == set(table.columns.keys())
            for table in existing
        )

    def _reorged(self) -> bool:
        with Session(self.engine) as session:
            latest = session.scalars(select(IndexedBlock).order_by(IndexedBlock.number.desc()).limit(1)).first()
        if latest is None:
            return False
        block = self.chain.w3.eth.get_block(latest.number) if latest.number <= self.chain.block_number() else None
        return block is None or "0x" + bytes(block["hash"]).hex() != latest.hash

    def _index_range(self, first: int, last: int) -> int:
        logs = self.chain.w3.eth.get_logs({"fromBlock": first, "toBlock": last})
        logs = sorted(logs, key=lambda log: (log["blockNumber"], log["logIndex"]))
        with Session(self.engine) as session, session.begin():
            vaults: dict[str, str] = {
                v: t for v, t in session.execute(select(VaultRevenueRow.vault, VaultRevenueRow.token))
            }
            applied = 0
            for log in logs:
                address = Web3.to_checksum_address(log["address"])
                name = self._contract_of.get(address) or ("RevenueVault" if address in vaults else None)
                if name is None and _received_by_a_vault(log, address, vaults):
                    self._on_vault_received(session, log)
                    applied += 1
                    continue
                decode = self._decoders.get((name, bytes(log["topics"][0]))) if name and log["topics"] else None
                if decode is None:
                    continue
                event = decode(log)
                handler = getattr(self, f"_on_{event['event']}", None)
                if handler is not None:
                    handler(session, event, _origin(log))
                    applied += 1
                    if event["event"] == "AssetPublished":
                        vaults[event["args"]["vault"]] = event["args"]["token"]
            for number in range(max(first, last - _KEPT_BLOCK_HASHES + 1), last + 1):
                block_hash = "0x" + bytes(self.chain.w3.eth.get_block(number)["hash"]).hex()
                session.merge(IndexedBlock(number=number, hash=block_hash))
            session.execute(delete(IndexedBlock).where(IndexedBlock.number <= last - _KEPT_BLOCK_HASHES))
            session.merge(SyncState(id=1, chain_id=self.chain.chain_id, chain=self.scope, last_block=last))
        return applied

    # ------------------------------------------------------------------ Marketplace

    def _on_AssetPublished(self, session: Session, event: Any, origin: dict[str, Any]) -> None:
        a = event["args"]
        session.merge(
            AssetRow(
                asset_id=a["assetId"],
                kind=AssetKind(a["kind"]).name.lower(),
                owner=a["owner"],
                token=a["token"],
                price=a["price"],
                price_sort=min(a["price"], _INT64_MAX),
                license_duration=a["licenseDuration"],
                version=1,
                listed=a["listed"],
                content_hash="0x" + bytes(a["contentHash"]).hex(),
                **_uri_columns(a["uri"]),
                vault=a["vault"],
                **origin,
            )
        )
        for position, parent in enumerate(a["parents"]):
            session.merge(AssetParentRow(asset_id=a["assetId"], parent_id=parent, position=position))
        session.merge(VaultRevenueRow(asset_id=a["assetId"], vault=a["vault"], token=a["token"], received=0))
        # Payees are fixed at creation, so reading them now gives what they will always be.
        for payee, shares in RevenueVaultContract(self.chain, a["vault"]).payees().items():
            session.merge(AssetPayeeRow(asset_id=a["assetId"], payee=payee, shares=shares))

    def _on_AssetVersionPublished(self, session: Session, event: Any, _origin: dict[str, Any]) -> None:
        a = event["args"]
        row = session.get(AssetRow, a["assetId"])
        row.version, row.content_hash = a["version"], "0x" + bytes(a["contentHash"]).hex()
        columns = _uri_columns(a["uri"])
        row.uri, row.uri_folded = columns["uri"], columns["uri_folded"]

    def _on_PriceUpdated(self, session: Session, event: Any, _origin: dict[str, Any]) -> None:
        row = session.get(AssetRow, event["args"]["assetId"])
        row.price, row.price_sort = event["args"]["price"], min(event["args"]["price"], _INT64_MAX)

    def _on_ListingChanged(self, session: Session, event: Any, _origin: dict[str, Any]) -> None:
        session.get(AssetRow, event["args"]["assetId"]).listed = event["args"]["listed"]

    def _on_LicensePurchased(self, session: Session, event: Any, origin: dict[str, Any]) -> None:
        a = event["args"]
        expires = "perpetual" if a["expiresAt"] == PERPETUAL else str(a["expiresAt"])
        session.add(LicenseRow(asset_id=a["assetId"], buyer=a["buyer"], price=a["price"], expires_at=expires,
                               **origin))  # fmt: skip

    # ------------------------------------------------------------------ RevenueVault

    def _on_PaymentReleased(self, session: Session, event: Any, origin: dict[str, Any]) -> None:
        a = event["args"]
        session.add(ReleaseRow(vault=event["address"], token=a["token"], payee=a["payee"], amount=a["amount"],
                               **origin))  # fmt: skip

    def _on_vault_received(self, session: Session, log: Any) -> None:
        """An ERC-20 Transfer of a vault's own token into it (see :func:`_received_by_a_vault`)."""
        vault = Web3.to_checksum_address(bytes(log["topics"][2])[-20:])
        row = session.scalars(select(VaultRevenueRow).where(VaultRevenueRow.vault == vault)).one()
        row.received = row.received + int.from_bytes(bytes(log["data"]), "big")

    # ------------------------------------------------------------------ PaymentChannels

    def _on_ChannelOpened(self, session: Session, event: Any, origin: dict[str, Any]) -> None:
        a = event["args"]
        session.merge(
            ChannelRow(channel_id=a["channelId"], asset_id=a["assetId"], payer=a["payer"], token=a["token"],
                       signer=a["signer"], deposit=a["deposit"], claimed=0, expiry=a["expiry"], closed=False,
                       **origin)
        )  # fmt: skip

    def _on_ChannelToppedUp(self, session: Session, event: Any, _origin: dict[str, Any]) -> None:
        session.get(ChannelRow, event["args"]["channelId"]).deposit = event["args"]["deposit"]

    def _on_ChannelExtended(self, session: Session, event: Any, _origin: dict[str, Any]) -> None:
        session.get(ChannelRow, event["args"]["channelId"]).expiry = event["args"]["expiry"]

    def _on_ChannelClaimed(self, session: Session, event: Any, _origin: dict[str, Any]) -> None:
        session.get(ChannelRow, event["args"]["channelId"]).claimed = event["args"]["totalClaimed"]

    def _on_ChannelClosed(self, session: Session, event: Any, _origin: dict[str, Any]) -> None:
        session.get(ChannelRow, event["args"]["channelId"]).expiry = event["args"]["expiry"]

    def _on_ChannelSettled(self, session: Session, event: Any, _origin: dict[str, Any]) -> None:
        row = session.get(ChannelRow, event["args"]["channelId"])
        row.closed, row.claimed = True, event["args"]["claimed"]

    # ------------------------------------------------------------------ AgentRegistry

    def _on_Registered(self, session: Session, event: Any, origin: dict[str, Any]) -> None:
        a = event["args"]
        session.merge(AgentRow(agent_id=a["agentId"], owner=a["owner"], uri=storable_text(a["agentURI"]),
                               wallet=a["owner"], **origin))  # fmt: skip

    def _on_URIUpdated(self, session: Session, event: Any, _origin: dict[str, Any]) -> None:
        session.get(AgentRow, event["args"]["agentId"]).uri = storable_text(event["args"]["newURI"])

    def _on_MetadataSet(self, session: Session, event: Any, _origin: dict[str, Any]) -> None:
        a = event["args"]
        agent = session.get(AgentRow, a["agentId"])
        value = bytes(a["metadataValue"])
        if a["metadataKey"] == "agentWallet":
            if agent is not None:  # MetadataSet for the wallet is emitted just before Registered
                agent.wallet = Web3.to_checksum_address(value) if value else None
            return
        key = a["metadataKey"]
        key_hash = hashlib.sha256(key.encode()).hexdigest()
        session.merge(AgentMetadataRow(agent_id=a["agentId"], key_hash=key_hash, key=storable_text(key),
                                       value=value.hex()))  # fmt: skip

    def _on_Transfer(self, session: Session, event: Any, _origin: dict[str, Any]) -> None:
        a = event["args"]
        agent = session.get(AgentRow, a["tokenId"])
        if agent is not None:
            agent.owner = a["to"]

    # ------------------------------------------------------------------ ReputationRegistry

    def _on_NewFeedback(self, session: Session, event: Any, origin: dict[str, Any]) -> None:
        a = event["args"]
        session.add(
            FeedbackRow(subject_kind="asset" if a["subjectKind"] == 0 else "agent", subject_id=a["subjectId"],
                        client=a["clientAddress"], value=a["value"], value_decimals=a["valueDecimals"],
                        score=a["value"] / 10 ** a["valueDecimals"], tag1=storable_text(a["tag1"]),
                        tag2=storable_text(a["tag2"]), **origin)
        )  # fmt: skip


def _received_by_a_vault(log: Any, address: str, vault_tokens: dict[str, str]) -> bool:
    """Whether ``log`` (emitted by ``address``) is an ERC-20 Transfer of a vault's own token into that vault."""
    topics = log["topics"]
    if len(topics) != 3 or bytes(topics[0]) != _ERC20_TRANSFER or len(bytes(log["data"])) != 32:
        return False
    to = Web3.to_checksum_address(bytes(topics[2])[-20:])
    return vault_tokens.get(to) == address


def _event_signature(entry: dict[str, Any]) -> str:
    from marketplace.chain.errors import _abi_type

    return f"{entry['name']}({','.join(_abi_type(p) for p in entry['inputs'])})"


def _uri_columns(uri: str) -> dict[str, str]:
    """An asset's ``uri`` and ``uri_folded`` columns."""
    stored = storable_text(uri)
    return {"uri": stored, "uri_folded": stored.casefold()}


def _origin(log: Any) -> dict[str, Any]:
    return {
        "block_number": log["blockNumber"],
        "tx_hash": "0x" + bytes(log["transactionHash"]).hex(),
        "log_index": log["logIndex"],
    }
