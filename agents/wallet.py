"""An agent's wallet: its key, its X25519 key, a budget checked before anything is signed, and an audit ledger.

Budget rules (one run = one ``AgentWallet`` instance):

- A license purchase commits its price against the run cap and the asset's cap; the price must not be
  above the per-call ceiling.
- Opening a channel commits the whole deposit against the run cap and the asset's cap when it is
  opened (the money leaves the wallet and is locked). The asset's per-call price must not be above the
  per-call ceiling.
- Vouchers draw down *within* a deposit already counted: they add nothing to the run or asset spend,
  but each call's price must be under the per-call ceiling and the voucher total under the deposit.

So the ledger's committed total (licenses + deposits + x402) is exactly the agent's tUSD balance drop,
and never exceeds the run cap. Vouchers are logged too (kind ``voucher``) but kept out of ``total()``.

Every payment passes the price the guard checked down to what signs it, so nothing is signed above it:
``buy`` as the contract's ``maxPrice``, an x402 download as ``max_amount``, a channel call as ``max_price``
(the SDK refuses with ``PriceChanged`` when the model's owner raises the price mid-call; the wallet raises
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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from eth_account import Account
from eth_account.signers.local import LocalAccount
from nacl.public import PrivateKey

from agents.errors import AgentError, NotFound, OverBudget, PaymentRefused, translate
from marketplace.chain import ContractRevert
from marketplace.chain.contracts import TestUSD
from marketplace.chain.records import Asset
from marketplace.client import ApiClientError, MarketplaceClient
from marketplace.client.checks import PaymentTermsRefused
from marketplace.client.sdk import X402AuthorizationOutstanding, X402DeliveryError
from marketplace.errors import AgentmarketError
from marketplace.wallet_file import encryption_keypair, load_wallet

KEY_ENV = "AGENTMARKET_AGENT_KEY"
PaymentKind = Literal["license", "channel_deposit", "voucher", "x402", "x402_outstanding", "owner_top_up"]
#: Kinds whose amount left the wallet (vouchers only spend a deposit already counted).
COMMITTED_KINDS: frozenset[str] = frozenset({"license", "channel_deposit", "x402"})


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
class LedgerEntry:
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

    def append(self, entry: LedgerEntry) -> None:
        """Write one entry (flushed and fsynced before returning)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as handle:
            handle.write(json.dumps(asdict(entry)) + "\n")
            handle.flush()
            os.fsync(handle.fileno())

    def entries(self, run: str | None = None) -> list[LedgerEntry]:
        """Every entry (of ``run`` only, if given), oldest first."""
        if not self.path.exists():
            return []
        with self.path.open() as handle:
            rows = [LedgerEntry(**json.loads(line)) for line in handle if line.strip()]
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


@dataclass
class ChannelState:
    """A channel this wallet opened in this run."""

    asset_id: int
    deposit: int
    drawn: int = 0


class AgentWallet:
    """An agent's account, encryption key, budget guard and audit ledger. All payments go through here."""

    def __init__(
        self, account: LocalAccount, budget: Budget, ledger: AuditLedger, *, agent_id: int | None = None
    ) -> None:
        self.account = account
        self.encryption_key: PrivateKey = encryption_keypair(account)
        self.guard = BudgetGuard(budget)
        self.ledger = ledger
        self.run = uuid.uuid4().hex
        self.channels: dict[int, ChannelState] = {}
        #: x402 authorizations of failed requests that could not be cancelled, by nonce (see the module).
        self.outstanding: dict[str, OutstandingAuthorization] = {}
        # With an agent id, a payment the wallet's balance cannot cover first pulls the shortfall from the
        # owner under the on-chain spend permission (the second line: the chain caps it per period).
        self.agent_id = agent_id

    @classmethod
    def from_keystore(cls, path: Path, password: str, budget: Budget, ledger: AuditLedger) -> AgentWallet:
        """Unlock a keystore (v3) file."""
        return cls(load_wallet(path, password), budget, ledger)

    @classmethod
    def from_env(cls, budget: Budget, ledger: AuditLedger, variable: str = KEY_ENV) -> AgentWallet:
        """Use the hex private key in the environment variable ``variable``."""
        key = os.environ.get(variable)
        if not key:
            raise AgentError(f"set {variable} to the agent's private key (hex), or use a keystore file")
        try:
            return cls(Account.from_key(key), budget, ledger)
        except ValueError:
            raise AgentError(f"{variable} does not hold a valid private key") from None

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

    def client(self, base_url: str, chain: Any, **options: Any) -> MarketplaceClient:
        """A MarketplaceClient signing with this wallet and decrypting with its X25519 key."""
        return MarketplaceClient.connect(base_url, self.account, chain, encryption_key=bytes(self.encryption_key),
                                         **options)  # fmt: skip

    # ------------------------------------------------------------------ payments

    def buy_license(self, client: MarketplaceClient, asset_id: int, max_price: int | None = None) -> LedgerEntry:
        """Buy a license to ``asset_id`` after the budget check; the contract refuses a price above the checked one."""
        self._own(client)
        asset = self._asset(client, asset_id)
        price = asset.price
        if max_price is not None and price > max_price:
            raise OverBudget("max_price", max_price, 0, price, asset_id)
        self.guard.check(asset_id, price, price)
        if not asset.listed:  # the contract would refuse it (AssetDelisted): fund nothing for it
            raise PaymentRefused(f"asset {asset_id} is not listed: it cannot be bought now")
        self._fund(client, price, asset.token)
        try:
            receipt = client.buy(asset_id, max_price=price)
        except (ApiClientError, ContractRevert) as exc:
            raise translate(exc, payment=True) from exc
        self.guard.commit(asset_id, price)
        return self._log(asset_id, price, "license", "0x" + bytes(receipt["transactionHash"]).hex())

    def open_channel(self, client: MarketplaceClient, asset_id: int, deposit: int, ttl: int = 3600) -> LedgerEntry:
        """Lock ``deposit`` in a channel for metered calls to ``asset_id`` (counted in full against the caps)."""
        self._own(client)
        if deposit <= 0:
            raise PaymentRefused(f"a channel deposit must be positive, not {deposit}")
        self.guard.check(asset_id, deposit, self._price(client, asset_id))
        try:  # the server's terms first (its channels contract must be this deployment's), then the money
            authorizer = client.receiver_authorizer()
        except ApiClientError as exc:
            raise translate(exc, payment=True) from exc
        except AgentmarketError as exc:
            raise PaymentRefused(str(exc)) from exc
        self._fund(client, deposit, client.market.token.address)
        try:
            channel_id = client.open_channel(asset_id, deposit, ttl=ttl, receiver_authorizer=authorizer)
        except (ApiClientError, ContractRevert) as exc:
            raise translate(exc, payment=True) from exc
        self.guard.commit(asset_id, deposit)
        self.channels[channel_id] = ChannelState(asset_id, deposit)
        return self._log(asset_id, deposit, "channel_deposit", f"channel:{channel_id}", channel_id)

    def invoke(
        self, client: MarketplaceClient, model_id: int, payload: Any, channel_id: int
    ) -> tuple[dict[str, Any], LedgerEntry]:
        """Call a served model paying with a voucher on one of this run's channels; returns (result, entry).

        The model's price is checked against the per-call ceiling and the channel's deposit, then passed to the
        SDK as the call's ``max_price``: an owner who reprices mid-call gets ``PaymentRefused``, no voucher for
        the new price, and the entry logs what was signed for.
        """
        self._own(client)
        channel = self.channels.get(channel_id)
        if channel is None or channel.asset_id != model_id:
            raise PaymentRefused(f"channel {channel_id} is not a channel this agent opened for model {model_id}")
        price = self._price(client, model_id)
        if price > self.guard.budget.call_ceiling:
            raise OverBudget("per_call", self.guard.budget.call_ceiling, 0, price, model_id)
        if channel.drawn + price > channel.deposit:
            raise OverBudget("channel", channel.deposit, channel.drawn, price, model_id)
        try:  # the price checked here is the most the SDK may sign for this call, whatever happens mid-call
            result = client.invoke(model_id, payload, channel_id=channel_id, max_price=price)
        except (ApiClientError, ContractRevert) as exc:
            raise translate(exc, payment=True) from exc
        except AgentmarketError as exc:  # repriced mid-call, or asked more than counted: nothing more signed
            raise PaymentRefused(str(exc)) from exc
        # The client's own count, not the server's: one answered call is one price.
        channel.drawn += price
        return result, self._log(model_id, price, "voucher", f"voucher:{channel_id}:{channel.drawn}", channel_id)

    def buy_over_x402(self, client: MarketplaceClient, asset_id: int) -> tuple[bytes, LedgerEntry]:
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
        self._own(client)
        price = self._price(client, asset_id)
        self.guard.check(asset_id, price, price)
        try:  # the SDK checks the 402 against the chain, then this funds the checked amount, then it signs
            paid = client.download_x402(
                asset_id, max_amount=price, before_signing=lambda terms: self._fund(client, terms.amount, terms.asset)
            )
        except PaymentTermsRefused as exc:
            raise PaymentRefused(str(exc)) from exc
        except X402DeliveryError as exc:  # the money moved: it counts, whatever came back
            self.guard.commit(asset_id, exc.payment.amount)
            self._log(asset_id, exc.payment.amount, "x402", exc.payment.transaction or f"x402:{exc.nonce}")
            raise AgentError(str(exc)) from exc
        except X402AuthorizationOutstanding as exc:  # it may still move: spent for the budget until it expires
            terms = exc.payment
            self.guard.commit(asset_id, terms.amount)
            self.outstanding[exc.nonce] = OutstandingAuthorization(
                asset_id, terms.amount, exc.token, terms.pay_to, exc.nonce, exc.valid_before
            )
            self._log(asset_id, terms.amount, "x402_outstanding", f"x402:{exc.nonce}")
            raise AgentError(str(exc)) from exc
        except (ApiClientError, ContractRevert) as exc:
            raise translate(exc, payment=True) from exc
        self.guard.commit(asset_id, price)
        return paid.content, self._log(asset_id, price, "x402", paid.payment.transaction)

    def reconcile(self, client: MarketplaceClient) -> list[LedgerEntry]:
        """Settle the books of :attr:`outstanding` authorizations with the chain; returns the entries logged.

        One that was used on chain is logged as ``x402`` (the money left: ``total()`` counts it now); one
        that expired unused (the chain's latest block is at or past its ``validBefore``) gives its amount
        back to the budget and leaves the ledger as it is; any other stays outstanding.
        """
        self._own(client)
        logged = []
        for nonce, held in list(self.outstanding.items()):
            outcome = client.authorization_outcome(held.token, nonce, held.valid_before)
            if outcome == "used":
                logged.append(self._log(held.asset_id, held.amount, "x402", f"x402:{nonce}"))
            elif outcome == "expired":
                self.guard.release(held.asset_id, held.amount)
            else:
                continue
            del self.outstanding[nonce]
        return logged

    # ------------------------------------------------------------------ internals

    def _fund(self, client: MarketplaceClient, amount: int, token_address: str) -> None:
        """Make sure the wallet holds ``amount`` of the token at ``token_address``: pull any shortfall from
        the owner under the spend permission for that token (logged as ``owner_top_up``); PaymentRefused if
        the permission does not allow it. Call it only for a payment already checked (see the module)."""
        market = client.market
        token = market.token if token_address.lower() == market.token.address.lower() else None
        balance = (token or TestUSD(market.chain, token_address)).balance_of(self.address)
        shortfall = amount - balance
        if shortfall <= 0 or self.agent_id is None:
            return
        try:
            receipt = client.market.agents.spend_from_owner(
                self.account, self.agent_id, token_address, self.address, shortfall
            )
        except ContractRevert as exc:
            raise PaymentRefused(f"the owner's spend permission does not cover {shortfall} more: {exc}") from exc
        self._log(0, shortfall, "owner_top_up", "0x" + bytes(receipt["transactionHash"]).hex())

    def _own(self, client: MarketplaceClient) -> None:
        if client.address != self.address:
            raise AgentError(f"the client signs as {client.address}, not as this agent ({self.address})")

    @classmethod
    def _price(cls, client: MarketplaceClient, asset_id: int) -> int:
        """The asset's current on-chain price (NotFound for an unknown asset)."""
        return cls._asset(client, asset_id).price

    @staticmethod
    def _asset(client: MarketplaceClient, asset_id: int) -> Asset:
        """The asset as the chain says now (NotFound for an unknown asset)."""
        try:
            return client.market.marketplace.asset(asset_id)
        except ContractRevert as exc:
            if exc.error == "UnknownAsset":
                raise NotFound(f"asset {asset_id} does not exist") from exc
            raise translate(exc, payment=False) from exc

    def _log(
        self, asset_id: int, amount: int, kind: PaymentKind, ref: str, channel_id: int | None = None
    ) -> LedgerEntry:
        entry = LedgerEntry(time.time(), asset_id, amount, kind, ref, self.run, channel_id)
        self.ledger.append(entry)
        return entry
