"""An agent's wallet: its key, its X25519 key, its one client, a budget checked before anything is signed, and
an audit ledger.

**Whatever a model asks for goes through the guard.** An agent pays only through :class:`AgentWallet`, and the
wallet pays only through one method, :meth:`AgentWallet._pay`: a license (``buy_license``), a channel deposit
(``open_channel``), a voucher call (``invoke``), an x402 model call (``call_over_x402``) and an x402 download
(``buy_over_x402``) each hand ``_pay`` a ``send`` function, and ``_pay`` checks the caps with
:class:`BudgetGuard`, reserves the amount, runs ``send`` (the only place the SDK's paying methods are called),
records the payment in the :class:`AuditLedger`, and gives the reservation back when the payment failed. The
tools a model calls (:mod:`agents.tools`, the MCP server, the runtime and the roles) hold the wallet, and reach
its client only through it; ``tests/agents/test_agent_corridor.py`` proves both halves (every paying method refused by
caps of 0 against a live server with nothing signed, and no call of an SDK paying method in ``agents/``
outside a ``send`` given to ``_pay``).

Budget rules (one run = one ``AgentWallet`` instance):

- A license purchase commits its price against the run cap and the asset's cap; the price must not be
  above the per-call ceiling.
- Opening a channel commits the whole deposit against the run cap and the asset's cap when it is
  opened (the money leaves the wallet and is locked). The asset's per-call price must not be above the
  per-call ceiling.
- An x402 payment (a download, or one model call) commits its price like a license.
- Vouchers draw down *within* a deposit already counted: they add nothing to the run or asset spend,
  but each call's price must be under the per-call ceiling and the voucher total under the deposit.

So the ledger's committed total (licenses + deposits + x402) is exactly the agent's tUSD balance drop,
and never exceeds the run cap. Vouchers are logged too (kind ``voucher``) but kept out of ``total()``.

Every payment passes the price the guard checked down to what signs it, so nothing is signed above it:
``buy`` as the contract's ``maxPrice``, an x402 download as ``max_amount``, a channel or x402 model call as
``max_price`` (the SDK refuses with ``PriceChanged`` when the model's owner raises the price mid-call; the wallet raises
``PaymentRefused``).

An x402 request that fails after the authorization was signed leaves none behind: the SDK cancels it on
chain (EIP-3009 ``cancelAuthorization``, paid in gas by the agent). If it cannot (no ETH for gas), the
authorization may still be settled until its ``validBefore``: the wallet counts it against the budget as
spent, logs it as ``x402_outstanding`` (kept out of ``total()``: no money left yet) and keeps it in
:attr:`AgentWallet.outstanding`; :meth:`AgentWallet.reconcile` later logs it as ``x402`` if it was settled, or
gives its amount back to the budget once it expired unused. Between the two, the ledger's ``total()`` is
at most the balance drop, and ``total()`` plus what is outstanding at least that.

The owner's on-chain spend permission is the second line: a wallet built with ``agent_id`` that cannot
cover a payment the guard allowed pulls the shortfall from its owner (``AgentRegistry.spendFromOwner``,
capped per period by the chain) and logs it as ``owner_top_up`` (an inflow, also kept out of ``total()``).

Every payment path runs in the same order: **check, fund, sign**. What the chain and the server say
is checked first (the asset's price, token and listing; an x402 402 against the chain; the server's
channel terms), the owner's money is pulled only for a payment that passed, and only then is anything
signed. So a lying gateway, or a payment the contract would refuse, never uses up the owner's per-period cap.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Generic, Literal, TypeVar

from eth_account import Account
from eth_account.signers.local import LocalAccount
from nacl.public import PrivateKey

from agents.errors import AgentError, NotFound, OverBudget, PaymentRefused, translate
from marketplace.chain import ContractRevert
from marketplace.chain.contracts import TestUSD
from marketplace.chain.records import Asset
from marketplace.client import ApiClientError, MarketplaceClient
from marketplace.client.checks import X402Terms
from marketplace.client.sdk import X402AuthorizationOutstanding, X402DeliveryError
from marketplace.errors import AgentmarketError
from marketplace.protocol.wire import InvokeResponse, X402Settlement
from marketplace.wallet_file import encryption_keypair

KEY_ENV = "AGENTMARKET_AGENT_KEY"
PaymentKind = Literal["license", "channel_deposit", "voucher", "x402", "x402_outstanding", "owner_top_up"]
#: Kinds whose amount left the wallet (vouchers only spend a deposit already counted).
COMMITTED_KINDS: frozenset[str] = frozenset({"license", "channel_deposit", "x402"})
R = TypeVar("R")


def account_from_env(variable: str = KEY_ENV) -> LocalAccount:
    """The account of the hex private key in the environment variable ``variable`` (``AgentError`` if it is
    unset or not a key)."""
    key = os.environ.get(variable)
    if not key:
        raise AgentError(f"set {variable} to the agent's private key (hex), or use a keystore file")
    try:
        return Account.from_key(key)
    except ValueError:
        raise AgentError(f"{variable} does not hold a valid private key") from None


@dataclass(frozen=True)
class Budget:
    """Spending limits in token base units (1 tUSD = 1,000,000)."""

    run_cap: int
    asset_cap: int
    call_ceiling: int

    def __post_init__(self) -> None:
        if min(self.run_cap, self.asset_cap, self.call_ceiling) < 0:
            raise ValueError("budget limits cannot be negative")


@dataclass(frozen=True)
class AuditEntry:
    """One signed payment: ``ref`` is the transaction hash, or ``voucher:<channel>:<answered so far>``."""

    time: float
    asset_id: int
    amount: int
    kind: PaymentKind
    ref: str
    run: str = ""
    channel_id: int | None = None


class AuditLedger:
    """An append-only JSONL file of payments."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)

    def append(self, entry: AuditEntry) -> None:
        """Write one entry (flushed and fsynced before returning)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps(asdict(entry)) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def entries(self, run: str | None = None) -> list[AuditEntry]:
        """Every entry (of ``run`` only, if given), oldest first."""
        if not self.path.exists():
            return []
        with self.path.open() as handle:
            rows = [AuditEntry(**json.loads(line)) for line in handle if line.strip()]
        return [row for row in rows if run is None or row.run == run]

    def total(self, asset_id: int | None = None, *, run: str | None = None) -> int:
        """Money that left the wallet (licenses, deposits, x402), optionally for one asset and/or run."""
        return sum(
            e.amount
            for e in self.entries(run)
            if e.kind in COMMITTED_KINDS and (asset_id is None or e.asset_id == asset_id)
        )


@dataclass
class BudgetGuard:
    """Counts this run's committed spend and refuses, with ``OverBudget``, what would pass a cap."""

    budget: Budget
    spent: int = 0
    per_asset: dict[int, int] = field(default_factory=dict)

    def check(self, asset_id: int, amount: int, unit_price: int) -> None:
        """Raise ``OverBudget`` unless committing ``amount`` to ``asset_id`` (at ``unit_price`` a call) fits."""
        if unit_price > self.budget.call_ceiling:
            raise OverBudget("per_call", self.budget.call_ceiling, 0, unit_price, asset_id)
        if self.spent + amount > self.budget.run_cap:
            raise OverBudget("run", self.budget.run_cap, self.spent, amount, asset_id)
        on_asset = self.per_asset.get(asset_id, 0)
        if on_asset + amount > self.budget.asset_cap:
            raise OverBudget("asset", self.budget.asset_cap, on_asset, amount, asset_id)

    def check_draw(self, asset_id: int, price: int, deposit: int, drawn: int) -> None:
        """Raise ``OverBudget`` unless one call at ``price`` may be drawn from a channel's ``deposit`` of which
        ``drawn`` is spent: the per-call ceiling as for any payment, then the deposit (kind ``channel``). The
        draw commits nothing: the deposit was counted when the channel was opened."""
        self.check(asset_id, 0, price)
        if drawn + price > deposit:
            raise OverBudget("channel", deposit, drawn, price, asset_id)

    def commit(self, asset_id: int, amount: int) -> None:
        """Record committed spend."""
        self.spent += amount
        self.per_asset[asset_id] = self.per_asset.get(asset_id, 0) + amount

    def release(self, asset_id: int, amount: int) -> None:
        """Give back spend committed for a payment that can no longer happen (an x402 authorization that
        expired unused)."""
        self.spent -= amount
        self.per_asset[asset_id] = self.per_asset.get(asset_id, 0) - amount

    @property
    def remaining(self) -> int:
        """What the run may still commit."""
        return self.budget.run_cap - self.spent


@dataclass(frozen=True)
class OutstandingAuthorization:
    """An x402 authorization the agent signed for a request that failed, and could not cancel: whoever received
    it may settle it until ``valid_before`` (Unix seconds). ``amount`` is in base units of ``token``."""

    asset_id: int
    amount: int
    token: str
    pay_to: str
    nonce: str
    valid_before: int


@dataclass(frozen=True)
class Sent(Generic[R]):
    """What a payment's ``send`` returns to :meth:`AgentWallet._pay`: its result, the ledger ref (a transaction
    hash, ``channel:<id>``, ``voucher:<channel>:<drawn>``), and the channel it paid into or from, if any."""

    result: R
    ref: str
    channel_id: int | None = None


@dataclass
class ChannelState:
    """A channel this wallet opened in this run."""

    asset_id: int
    deposit: int
    drawn: int = 0


class AgentWallet:
    """An agent's account, encryption key, budget guard, audit ledger and the one client it pays with.

    Build it with :meth:`connect` (or from a :class:`MarketplaceClient` made for the agent's account with its
    X25519 key). The client is the wallet's for its whole life (:attr:`client`): payment methods take none.
    The binding is checked where it can change, and only there:

    - at construction: the client must decrypt with this account's X25519 key (``AgentError`` otherwise), and
      an ``agent_id`` must be bound on chain to this account (``AgentRegistry.getAgentWallet``);
    - when :attr:`agent_id` is set later (the on-chain binding is checked again);
    - in :meth:`_pay`, before each payment: ``client.account`` is a public attribute anyone holding the client
      could reassign, so the wallet compares the client's signer with its own account (one comparison, no I/O)
      and refuses with ``AgentError`` before anything is checked or signed. (The chain checks the agent binding
      again itself when the owner's money is pulled: ``spendFromOwner`` reverts ``NotAgentWallet``.)
    """

    def __init__(
        self, client: MarketplaceClient, budget: Budget, ledger: AuditLedger, *, agent_id: int | None = None
    ) -> None:
        self.client = client
        self.account: LocalAccount = client.account
        self.encryption_key: PrivateKey = encryption_keypair(self.account)
        if client.encryption_key != bytes(self.encryption_key):
            raise AgentError(
                f"the client for {self.address} does not decrypt with the agent's X25519 key: build it with "
                "AgentWallet.connect (or MarketplaceClient.connect(..., encryption_key=...))"
            )
        self.guard = BudgetGuard(budget)
        self.ledger = ledger
        self.run = uuid.uuid4().hex
        self.channels: dict[int, ChannelState] = {}
        #: x402 authorizations of failed requests that could not be cancelled, by nonce (see the module).
        self.outstanding: dict[str, OutstandingAuthorization] = {}
        self._agent_id: int | None = None
        self.agent_id = agent_id

    @classmethod
    def connect(
        cls,
        account: LocalAccount,
        budget: Budget,
        ledger: AuditLedger,
        base_url: str,
        chain: Any,
        *,
        agent_id: int | None = None,
        **options: Any,
    ) -> AgentWallet:
        """A wallet for ``account`` paying through a new :class:`MarketplaceClient` of the server at ``base_url``
        (``chain`` a Chain or RPC URL; ``options`` go to :meth:`MarketplaceClient.connect`, e.g. ``trusted``,
        ``http``), signing as ``account`` and decrypting with its X25519 key."""
        client = MarketplaceClient.connect(base_url, account, chain,
                                           encryption_key=bytes(encryption_keypair(account)), **options)  # fmt: skip
        return cls(client, budget, ledger, agent_id=agent_id)

    @property
    def agent_id(self) -> int | None:
        """The agent identity (ERC-8004 ``AgentRegistry`` token id) whose owner tops this wallet up, or None.

        With an agent id, a payment the wallet's balance cannot cover first pulls the shortfall from the owner
        under the on-chain spend permission (the second line: the chain caps it per period). Setting it checks
        that the chain binds that agent to this account (``AgentError`` naming the bound wallet otherwise)."""
        return self._agent_id

    @agent_id.setter
    def agent_id(self, agent_id: int | None) -> None:
        if agent_id is not None:
            try:
                bound = self.client.market.agents.agent_wallet(agent_id)
            except ContractRevert as exc:
                raise AgentError(f"agent {agent_id} cannot be read on chain: {exc}") from exc
            if bound is None or bound.lower() != self.address.lower():
                raise AgentError(
                    f"agent {agent_id} acts from {bound or 'no wallet'}, not from this wallet ({self.address}): "
                    "its owner binds it with AgentRegistry.setAgentWallet"
                )
        self._agent_id = agent_id

    @property
    def address(self) -> str:
        """The agent's address."""
        return self.account.address

    @property
    def public_encryption_key(self) -> bytes:
        """The X25519 public key to publish as the agent's ``encryptionKey`` metadata."""
        return bytes(self.encryption_key.public_key)

    @property
    def locked(self) -> int:
        """Deposits of this run not yet drawn by vouchers."""
        return sum(c.deposit - c.drawn for c in self.channels.values())

    # ------------------------------------------------------------------ payments (each one through _pay)

    def buy_license(self, asset_id: int, max_price: int | None = None) -> AuditEntry:
        """Buy a license to ``asset_id`` after the budget check; the contract refuses a price above the checked one.

        Raises ``OverBudget`` (a cap, or the price above ``max_price``), ``NotFound``, ``PaymentRefused``."""
        asset = self._asset(asset_id)
        price = asset.price
        if max_price is not None and price > max_price:
            raise OverBudget("max_price", max_price, 0, price, asset_id)

        def send() -> Sent[None]:
            if not asset.listed:  # the contract would refuse it (AssetDelisted): fund nothing for it
                raise PaymentRefused(f"asset {asset_id} is not listed: it cannot be bought now")
            self._fund(price, asset.token)
            receipt = self.client.buy(asset_id, max_price=price)
            return Sent(None, "0x" + bytes(receipt["transactionHash"]).hex())

        return self._pay("license", asset_id, price, send)[1]

    def open_channel(self, asset_id: int, deposit: int, ttl: int = 3600) -> AuditEntry:
        """Lock ``deposit`` in a channel for metered calls to ``asset_id`` (counted in full against the caps)."""
        if deposit <= 0:
            raise PaymentRefused(f"a channel deposit must be positive, not {deposit}")

        def send() -> Sent[None]:
            authorizer = self.client.channel_receiver(asset_id)  # a model this server runs, its terms; then money
            self._fund(deposit, self.client.market.token.address)
            channel_id = self.client.open_channel(asset_id, deposit, ttl=ttl, receiver_authorizer=authorizer)
            self.channels[channel_id] = ChannelState(asset_id, deposit)
            return Sent(None, f"channel:{channel_id}", channel_id)

        return self._pay("channel_deposit", asset_id, deposit, send, unit_price=self._price(asset_id))[1]

    def invoke(self, model_id: int, payload: Any, channel_id: int) -> tuple[InvokeResponse, AuditEntry]:
        """Call a served model paying with a voucher on one of this run's channels; returns (result, entry).

        The model's price is checked against the per-call ceiling and the channel's deposit, then passed to the
        SDK as the call's ``max_price``: an owner who reprices mid-call gets ``PaymentRefused``, no voucher for
        the new price, and the entry logs what was signed for.
        """
        channel = self.channels.get(channel_id)
        if channel is None or channel.asset_id != model_id:
            raise PaymentRefused(f"channel {channel_id} is not a channel this agent opened for model {model_id}")
        price = self._price(model_id)

        def send() -> Sent[dict[str, Any]]:
            # The price checked is the most the SDK may sign for this call, whatever happens mid-call.
            result = self.client.invoke(model_id, payload, channel_id=channel_id, max_price=price)
            channel.drawn += price  # the client's own count, not the server's: one answered call is one price
            return Sent(result, f"voucher:{channel_id}:{channel.drawn}", channel_id)

        return self._pay("voucher", model_id, price, send, channel=channel)

    def call_over_x402(self, model_id: int, payload: Any) -> tuple[InvokeResponse, AuditEntry]:
        """Call a served model paying this one call over x402 v2; returns (result, entry). Checked against the
        caps first; signed and counted as :meth:`buy_over_x402` (the SDK checks the 402 against the chain, the
        owner tops the wallet up only then, and the authorization is of the checked price at most)."""
        price = self._price(model_id)

        def send() -> Sent[InvokeResponse]:
            result = self.client.invoke(model_id, payload, max_price=price, before_signing=self._fund_terms)
            settlement = result.payment
            if not isinstance(settlement, X402Settlement):
                raise PaymentRefused(f"the server answered an x402 call to model {model_id} with a channel receipt")
            return Sent(result, settlement.transaction)

        return self._pay("x402", model_id, price, send)

    def buy_over_x402(self, asset_id: int) -> tuple[bytes, AuditEntry]:
        """Pay for one download of ``asset_id`` over x402 v2; returns (content, entry). Checked against the caps first.

        The SDK (:meth:`MarketplaceClient.download_x402`) signs an EIP-3009 authorization only for what
        the chain says — the asset's vault, its token and network, and exactly its on-chain price, which
        must not exceed the price the guard checked — so a hostile server cannot bend it:
        ``PaymentRefused`` (nothing signed, nothing pulled from the owner) otherwise, as for a payment the
        server refuses; the owner's spend permission is drawn on only once the 402 passed. A payment
        that moved on chain without the content arriving intact is still counted and logged (its ref
        is ``x402:<nonce>`` when the server named no transaction), then raises ``AgentError``. A failed
        request's authorization is cancelled by the SDK; one it could not cancel (no ETH for gas) is counted
        against the budget, logged as ``x402_outstanding`` and kept in :attr:`outstanding` until
        :meth:`reconcile` (see the module), then raises ``AgentError`` saying until when it may be settled.
        """
        price = self._price(asset_id)

        def send() -> Sent[bytes]:
            # The SDK checks the 402 against the chain, then this funds the checked amount, then it signs.
            paid = self.client.download_x402(asset_id, max_amount=price, before_signing=self._fund_terms)
            return Sent(paid.content, paid.payment.transaction)

        return self._pay("x402", asset_id, price, send)

    def reconcile(self) -> list[AuditEntry]:
        """Settle the books of :attr:`outstanding` authorizations with the chain; returns the entries logged.

        One that was used on chain is logged as ``x402`` (the money left: ``total()`` counts it now); one
        that expired unused (the chain's latest block is at or past its ``validBefore``) gives its amount
        back to the budget and leaves the ledger as it is; any other stays outstanding.
        """
        logged = []
        for nonce, held in list(self.outstanding.items()):
            outcome = self.client.authorization_outcome(held.token, nonce, held.valid_before)
            if outcome == "used":
                logged.append(self._log(held.asset_id, held.amount, "x402", f"x402:{nonce}"))
            elif outcome == "expired":
                self.guard.release(held.asset_id, held.amount)
            else:
                continue
            del self.outstanding[nonce]
        return logged

    # ------------------------------------------------------------------ the corridor

    def _pay(
        self,
        kind: Literal["license", "channel_deposit", "voucher", "x402"],
        asset_id: int,
        amount: int,
        send: Callable[[], Sent[R]],
        *,
        unit_price: int | None = None,
        channel: ChannelState | None = None,
    ) -> tuple[R, AuditEntry]:
        """The one way a payment leaves this wallet: check, reserve, pay, record — or give the reservation back.

        1. The client must still sign as this wallet's account (``AgentError``).
        2. :class:`BudgetGuard` checks ``amount`` (base units) at ``unit_price`` a call (default ``amount``)
           against the caps, or for a ``voucher`` (``channel`` given) the price against the per-call ceiling
           and the channel's undrawn deposit: ``OverBudget``, with nothing funded or signed.
        3. ``amount`` is reserved against the run and the asset (a voucher reserves nothing: its deposit was).
        4. ``send()`` runs the payment (it funds from the owner and calls the SDK's paying method) and returns
           a :class:`Sent` (result, ledger ref, channel).
        5. The entry is appended to the :class:`AuditLedger`; returns (result, entry).

        A failure gives the reservation back — except for x402, when money moved or may still move:
        ``X402DeliveryError`` (paid, nothing delivered) keeps what was paid, logs it as ``x402`` and raises
        ``AgentError``; ``X402AuthorizationOutstanding`` keeps it, logs ``x402_outstanding`` and holds it in
        :attr:`outstanding` until :meth:`reconcile`. Other failures become typed agent errors: a 404
        ``NotFound``; a refused payment, a revert, or anything the SDK refused (``PriceChanged``,
        ``X402TermsRefused``, a server that asks more than counted) ``PaymentRefused``.
        """
        if self.client.address != self.address:
            raise AgentError(f"the client signs as {self.client.address}, not as this agent ({self.address})")
        if channel is None:
            self.guard.check(asset_id, amount, amount if unit_price is None else unit_price)
        else:
            self.guard.check_draw(asset_id, amount, channel.deposit, channel.drawn)
        reserved = 0 if channel is not None else amount
        if reserved:
            self.guard.commit(asset_id, reserved)
        try:
            sent = send()
        except X402DeliveryError as exc:  # the money moved: it counts, whatever came back
            self.guard.release(asset_id, reserved - exc.payment.amount)
            self._log(asset_id, exc.payment.amount, "x402", exc.payment.transaction or f"x402:{exc.nonce}")
            raise AgentError(str(exc)) from exc
        except X402AuthorizationOutstanding as exc:  # it may still move: spent for the budget until it expires
            terms = exc.payment
            self.guard.release(asset_id, reserved - terms.amount)
            self.outstanding[exc.nonce] = OutstandingAuthorization(
                asset_id, terms.amount, exc.token, terms.pay_to, exc.nonce, exc.valid_before
            )
            self._log(asset_id, terms.amount, "x402_outstanding", f"x402:{exc.nonce}")
            raise AgentError(str(exc)) from exc
        except BaseException as exc:
            if reserved:
                self.guard.release(asset_id, reserved)
            if isinstance(exc, AgentError):
                raise
            if isinstance(exc, ApiClientError | ContractRevert):
                raise translate(exc, payment=True) from exc
            if isinstance(exc, AgentmarketError):  # refused by the SDK before signing (or more): nothing more paid
                raise PaymentRefused(str(exc)) from exc
            raise
        return sent.result, self._log(asset_id, amount, kind, sent.ref, sent.channel_id)

    # ------------------------------------------------------------------ internals

    def _fund_terms(self, terms: X402Terms) -> None:
        """``_fund`` for x402 terms the SDK checked against the chain (its ``before_signing`` hook)."""
        self._fund(terms.amount, terms.asset)

    def _fund(self, amount: int, token_address: str) -> None:
        """Make sure the wallet holds ``amount`` of the token at ``token_address``: pull any shortfall from
        the owner under the spend permission for that token (logged as ``owner_top_up``); PaymentRefused if
        the permission does not allow it. Call it only for a payment already checked (see the module)."""
        market = self.client.market
        token = market.token if token_address.lower() == market.token.address.lower() else None
        balance = (token or TestUSD(market.chain, token_address)).balance_of(self.address)
        shortfall = amount - balance
        if shortfall <= 0 or self.agent_id is None:
            return
        try:
            receipt = market.agents.spend_from_owner(
                self.account, self.agent_id, token_address, self.address, shortfall
            )
        except ContractRevert as exc:
            raise PaymentRefused(f"the owner's spend permission does not cover {shortfall} more: {exc}") from exc
        self._log(0, shortfall, "owner_top_up", "0x" + bytes(receipt["transactionHash"]).hex())

    def _price(self, asset_id: int) -> int:
        """The asset's current on-chain price (NotFound for an unknown asset)."""
        return self._asset(asset_id).price

    def _asset(self, asset_id: int) -> Asset:
        """The asset as the chain says now (NotFound for an unknown asset)."""
        try:
            return self.client.market.marketplace.asset(asset_id)
        except ContractRevert as exc:
            if exc.error == "UnknownAsset":
                raise NotFound(f"asset {asset_id} does not exist") from exc
            raise translate(exc, payment=False) from exc

    def _log(
        self, asset_id: int, amount: int, kind: PaymentKind, ref: str, channel_id: int | None = None
    ) -> AuditEntry:
        entry = AuditEntry(time.time(), asset_id, amount, kind, ref, self.run, channel_id)
        self.ledger.append(entry)
        return entry
