"""One world for a simulation run and for the demo: a chain with the contracts deployed, the marketplace
gateway, funded parties with their SDK clients, and the end of a run (settle the channels, release
royalties up the lineage, withdraw, reconcile what the chain holds with a run's own ledger).

``simulation.engine`` (a seeded scenario, the gateway in process behind a ``TestClient``) and
``simulation.demo`` (the story, the gateway served by uvicorn on 127.0.0.1) both stand on it::

    with World(chain_target, fee_bps=100, work_dir=work) as world:
        builder = world.party("builder", 0, tusd=to_units(50))
        client = builder.wallet.client  # its payments go through the wallet's guard
        ...
        world.settle()
        payout = world.release_and_withdraw(models=[model_id], payees=[builder, ...], assets=[...])
        reconcile([Holding("builder 0", chain=..., ledger=...)])

Every account is derived from the seed and its role, so the same seed gives the same addresses, the
same transactions and the same gas. Amounts are in base units of the payment token.
"""

from __future__ import annotations

import hashlib
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Literal, TypeVar

from eth_account import Account
from eth_account.signers.local import LocalAccount
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import SecretStr
from web3 import Web3

from agents import AgentWallet, AuditLedger, Budget
from marketplace.api import Settings, create_app
from marketplace.api.app import attach_model_handler
from marketplace.api.server import server_config
from marketplace.chain import Chain, connect
from marketplace.chain.deployment import Deployment, deploy_all
from marketplace.chain.lineage import Release
from marketplace.chain.market import Market
from marketplace.errors import AgentmarketError
from marketplace.inference import ModelHandler
from simulation.results import ChainActivity

_T = TypeVar("_T")

GAS_ETH = 10**18  # given to each generated account for gas (wei)

#: Where the gateway runs: in this process behind a TestClient (no socket), served by uvicorn on 127.0.0.1, or
#: nowhere (``none``: the fast engine checks vouchers with the gateway's own gate, in process, without a server).
Gateway = Literal["in_process", "http", "none"]

#: The base URL of an in-process gateway (the SIWE domain its clients sign for).
IN_PROCESS_URL = "http://testserver"


class LedgerMismatch(AgentmarketError):
    """What the chain holds differs from what the run's own ledger says it should."""


def derived_account(seed: int, role: str, index: int) -> LocalAccount:
    """A key derived from the seed, so the same scenario and seed give the same addresses."""
    return Account.from_key(hashlib.sha256(f"agentmarket-sim/{seed}/{role}/{index}".encode()).digest())


@dataclass(frozen=True)
class Party:
    """A participant: its deterministic account and its agent wallet (caps and audit ledger)."""

    role: str
    index: int
    account: LocalAccount
    wallet: AgentWallet

    @property
    def address(self) -> str:
        """The party's checksummed address."""
        return self.account.address


@dataclass(frozen=True)
class Settled:
    """What one settler round claimed: ``claimed`` base units into model vaults, over ``channels`` channels."""

    claimed: int
    channels: int


@dataclass(frozen=True)
class Payout:
    """The end of a run: royalties forwarded up the lineage, what each payee withdrew (address -> base
    units, every token summed) and the protocol fee the treasury holds from the vaults released."""

    forwarded: tuple[Release, ...]
    withdrawn: dict[str, int]
    protocol_fee: int


@dataclass(frozen=True)
class Holding:
    """One line of a reconciliation: what ``who`` holds on ``chain`` against what ``source`` says (base units)."""

    who: str
    chain: int
    ledger: int
    source: str = "ledger"


def reconcile(holdings: Iterable[Holding]) -> None:
    """Fail loudly unless every holding agrees with the ledger, to the unit.

    Raises ``LedgerMismatch`` naming every line that differs (``who: chain X, ledger Y``).
    """
    problems = [f"{h.who}: chain {h.chain}, {h.source} {h.ledger}" for h in holdings if h.chain != h.ledger]
    if problems:
        raise LedgerMismatch("the chain disagrees with the simulation's ledger: " + "; ".join(problems))


class World:
    """A chain with the contracts deployed and a marketplace gateway on it; a context manager.

    ``chain_target``: ``embedded``, ``anvil`` or an RPC URL. ``fee_bps``: the protocol fee (basis points).
    ``gateway``: ``in_process`` (a ``TestClient``, SIWE domain ``testserver``), ``http`` (uvicorn on a
    free port of 127.0.0.1) or ``none`` (no gateway: :meth:`party`, :meth:`settle` and
    :meth:`release_and_withdraw` need one; :attr:`relayer` is still the settlement key).
    The gateway settles with the chain's last dev account (named here, not a key
    made at random, so the same seed gives the same transactions and gas), every ``settle_interval``
    seconds. ``say`` hears one line per step of the set-up. Entering deploys and starts the gateway;
    leaving stops the gateway and the chain (and an anvil it started).
    """

    def __init__(
        self,
        chain_target: str,
        *,
        fee_bps: int,
        seed: int,
        work_dir: Path,
        gateway: Gateway = "in_process",
        settle_interval: int = 10**6,
        say: Callable[[str], None] = lambda _line: None,
    ) -> None:
        self.chain_target, self.fee_bps, self.seed, self.work_dir = chain_target, fee_bps, seed, work_dir
        self.gateway, self.settle_interval, self.say = gateway, settle_interval, say
        self._stack = ExitStack()
        self._chain: Chain | None = None
        self._market: Market | None = None
        self._app: FastAPI | None = None
        self._http: TestClient | None = None
        self.base_url = ""
        self.first_block = 0
        self.names: dict[str, str] = {}  # address -> who it is, for every account the world funded

    # ------------------------------------------------------------------ set-up and shut-down

    def __enter__(self) -> World:
        try:
            chain = self._chain = self._stack.enter_context(connect(self.chain_target))
            self.first_block = chain.block_number() + 1
            self.say(f"connected to the {chain.kind} chain (chain id {chain.chain_id})")
            deployment = deploy_all(chain, self.deployer, fee_bps=self.fee_bps)
            self._market = deployment.market(chain)
            self.names[self.deployer.address] = "protocol treasury"
            contracts = len(deployment.contracts)
            self.say(f"deployed {contracts} contracts (TestUSD, Marketplace, vaults, channels, registries)")
            if self.gateway != "none":
                self._start_gateway(deployment)
        except BaseException:
            self._close()
            raise
        return self

    @property
    def relayer(self) -> LocalAccount:
        """The gateway's settlement key (the channels' ``receiverAuthorizer``): the chain's last dev account."""
        return self.chain.accounts[-1]

    def _start_gateway(self, deployment: Deployment) -> None:
        relayer = SecretStr(Web3.to_hex(self.relayer.key))
        chain = self.chain
        manifest = deployment.save(self.work_dir / "deployment.json")
        if self.gateway == "in_process":
            settings = Settings.load(manifest=manifest, data_dir=self.work_dir / "server", siwe_domain="testserver",
                                     settle_interval=self.settle_interval, relayer_key=relayer)  # fmt: skip
            self._app = create_app(settings, chain=chain)
            self._http = self._stack.enter_context(TestClient(self._app))
            self.base_url = IN_PROCESS_URL
            self.say("marketplace server in process")
        else:  # a free port, so that the login domain (127.0.0.1:port) is the one the clients reach
            settings = Settings.load(manifest=manifest, data_dir=self.work_dir / "server", port=_free_port(),
                                     settle_interval=self.settle_interval, relayer_key=relayer)  # fmt: skip
            self._app = create_app(settings, chain=chain)
            self.base_url = self._stack.enter_context(serving(self._app))
            self.say(f"marketplace server (uvicorn) on {self.base_url}")

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self._close()

    def _close(self) -> None:
        """Stop the gateway and the chain; from then on the world refuses to be used."""
        try:
            self._stack.close()
        finally:
            self._chain = self._market = self._app = self._http = None
            self.base_url = ""

    # ------------------------------------------------------------------ what the world holds

    @property
    def chain(self) -> Chain:
        """The connected chain (inside the ``with`` block)."""
        return _set_up(self._chain)

    @property
    def market(self) -> Market:
        """The deployed contracts."""
        return _set_up(self._market)

    @property
    def app(self) -> FastAPI:
        """The gateway's FastAPI app."""
        return _set_up(self._app)

    @property
    def deployer(self) -> LocalAccount:
        """The account that deployed the contracts, funds every party and receives the protocol fee."""
        return self.chain.accounts[0]

    def balance(self, address: str) -> int:
        """``address``'s payment-token balance (base units), read from the chain."""
        return self.market.token.balance_of(address)

    def activity(self) -> ChainActivity:
        """Gas used and transactions, summed over every block since the world was set up."""
        chain, gas, txs = self.chain, 0, 0
        for number in range(self.first_block, chain.block_number() + 1):
            block = chain.w3.eth.get_block(number)
            gas += block["gasUsed"]
            txs += len(block["transactions"])
        return ChainActivity(kind=chain.kind, chain_id=chain.chain_id, gas_used=gas, tx_count=txs)

    # ------------------------------------------------------------------ parties

    def fund(self, role: str, index: int = 0, *, tusd: int = 0) -> LocalAccount:
        """The account of ``role`` number ``index`` (derived from the seed), given gas and ``tusd`` base units."""
        account = derived_account(self.seed, role, index)
        self.chain.send_eth(self.deployer, account.address, GAS_ETH)
        if tusd:
            self.market.token.mint(self.deployer, account.address, tusd)
        self.names[account.address] = role
        return account

    def party(self, role: str, index: int = 0, *, tusd: int = 0, cap: int | None = None) -> Party:
        """A funded party (see ``fund``) with an agent wallet whose run, asset and call caps are ``cap``
        (default ``tusd``) and whose audit ledger is ``work_dir/ledgers/<role>-<index>.jsonl``."""
        account = self.fund(role, index, tusd=tusd)
        limit = tusd if cap is None else cap
        ledger = AuditLedger(self.work_dir / "ledgers" / f"{role}-{index}.jsonl")
        options = {"http": self._http} if self._http is not None else {}
        caps = Budget(run_cap=limit, asset_cap=limit, call_ceiling=limit)
        wallet = AgentWallet.connect(account, caps, ledger, self.base_url, self.chain, **options)
        return Party(role, index, account, wallet)

    def serve_model(self, model_id: int, handler: ModelHandler) -> None:
        """Have the gateway answer paid calls to ``model_id`` with ``handler``."""
        attach_model_handler(self.app, model_id, handler)

    # ------------------------------------------------------------------ the end of a run

    def settle(self) -> Settled:
        """One round of the gateway's settler: claim every voucher answered and not yet claimed."""
        settled = self.app.state.services.settler.settle_once()
        return Settled(claimed=sum(s.amount for s in settled if s.outcome == "claimed"), channels=len(settled))

    def release_and_withdraw(self, *, models: Sequence[int], payees: Sequence[Party], assets: Sequence[int]) -> Payout:
        """Royalties up every model's lineage (children first), then every payee withdraws through its
        client, then the treasury releases its fee from the vault of every asset of ``assets``."""
        forwarded = [release for model in models for release in self.market.release_upstream(self.deployer, model)]
        withdrawn = {party.address: sum(party.wallet.client.withdraw().values()) for party in payees}
        fee, token, treasury = 0, self.market.token.address, self.deployer
        for asset_id in assets:
            vault = self.market.vault(asset_id)
            if vault.claimable(token, treasury.address) > 0:
                vault.release(treasury, token, treasury.address)
            fee += vault.released(token, treasury.address)
        return Payout(forwarded=tuple(forwarded), withdrawn=withdrawn, protocol_fee=fee)


def _set_up(value: _T | None) -> _T:
    """``value``, set when the world was entered; raises ``AgentmarketError`` outside the ``with`` block."""
    if value is None:
        raise AgentmarketError("the world is not set up: use it inside `with World(...) as world:`")
    return value


def _free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def serving(app: FastAPI) -> Iterator[str]:
    """Run ``app`` with uvicorn on 127.0.0.1 (its settings' port) in a thread; yields its base URL, stops it after."""
    import uvicorn

    port = app.state.settings.port
    server = uvicorn.Server(server_config(app))  # the app's settings' limits and port, as `serve` has them
    thread = threading.Thread(target=server.run, name="agentmarket-world-server", daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise AgentmarketError(f"the marketplace server did not start on 127.0.0.1:{port}")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)
