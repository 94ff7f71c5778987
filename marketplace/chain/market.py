"""Typed wrappers of the marketplace contracts: Marketplace, RevenueVault, PaymentChannels,
AgentRegistry and ReputationRegistry. Reads return dataclasses; writes sign with the acting
account's key and return receipts (or the new id)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from functools import cached_property
from typing import TYPE_CHECKING

from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from web3.types import TxReceipt

from marketplace.chain.chain import Chain
from marketplace.chain.eip712 import (
    Domain,
    Signature,
    sign_agent_wallet,
    sign_authorization,
    sign_permit,
    sign_voucher,
)
from marketplace.chain.token import TestUSD

if TYPE_CHECKING:
    from marketplace.chain.lineage import Release

PERPETUAL = 2**64 - 1
BPS = 10_000
#: ``PaymentChannels.CLAIM_WINDOW``: seconds after a channel's expiry during which its receiver may still claim.
CLAIM_WINDOW = 15 * 60
#: Largest voucher ceiling and claim total (``uint128``).
UINT128_MAX = 2**128 - 1


class AssetKind(IntEnum):
    """What an asset is (the Solidity enum's order)."""

    DATASET = 0
    MODEL = 1


class SubjectKind(IntEnum):
    """What feedback is about (the Solidity enum's order)."""

    ASSET = 0
    AGENT = 1


@dataclass(frozen=True)
class Asset:
    """A listed dataset or model."""

    asset_id: int
    kind: AssetKind
    owner: str
    token: str
    price: int
    license_duration: int
    version: int
    listed: bool
    content_hash: bytes
    uri: str
    vault: str
    parents: tuple[int, ...]


@dataclass(frozen=True)
class License:
    """An account's license to an asset; ``expires_at`` 0 means never bought."""

    asset_id: int
    account: str
    expires_at: int

    @property
    def perpetual(self) -> bool:
        """True for a license that never ends."""
        return self.expires_at == PERPETUAL

    def active_at(self, timestamp: int) -> bool:
        """True if the license is valid at ``timestamp``."""
        return self.expires_at > timestamp


@dataclass(frozen=True)
class Channel:
    """A payment channel's on-chain state (amounts in base units of ``token``, times in unix seconds).

    Calls are served until ``expiry`` (the asset owner's ``close`` moves it to the closing time);
    ``receiver_authorizer`` may claim until ``claim_deadline``; then anyone may reclaim the rest for
    the payer, which sets ``settled``.
    """

    channel_id: int
    payer: str
    expiry: int
    settled: bool
    signer: str
    asset_id: int
    receiver_authorizer: str
    token: str
    deposit: int
    claimed: int

    @property
    def unclaimed(self) -> int:
        """What the deposit still holds."""
        return self.deposit - self.claimed

    @property
    def claim_deadline(self) -> int:
        """The first second at which claims are refused (and reclaim allowed): expiry plus the claim window."""
        return self.expiry + CLAIM_WINDOW


@dataclass(frozen=True)
class AgentRecord:
    """An ERC-8004 agent identity as the marketplace reads it."""

    agent_id: int
    owner: str
    uri: str
    wallet: str | None
    encryption_key: bytes | None
    endpoint: str | None


@dataclass(frozen=True)
class SpendPermission:
    """An owner's grant letting one agent wallet spend the owner's tokens (amounts in token base
    units, ``period`` and ``period_start`` in seconds).

    ``grantor`` is the zero address once revoked (or if never granted); ``wallet`` is the wallet it
    was granted to; ``epoch`` and ``binding`` the agent's ownership epoch and wallet-binding count at
    the grant. ``active`` is true while the agent wallet can use it (granted, not revoked, the agent
    not moved and its wallet not bound again since); ``remaining`` is what is left in the current
    period (0 when not active).
    """

    grantor: str
    allowance: int
    period: int
    period_start: int
    spent_in_period: int
    remaining: int
    wallet: str = "0x0000000000000000000000000000000000000000"
    epoch: int = 0
    active: bool = False
    binding: int = 0


@dataclass(frozen=True)
class FeedbackSummary:
    """Count and average of the paid-for feedback about a subject; ``average_raw`` is on the
    [0, 100] scale with ``decimals`` decimals (0 when ``count`` is 0)."""

    count: int
    average_raw: int
    decimals: int

    @property
    def average(self) -> float:
        """The average value as a float."""
        return self.average_raw / 10**self.decimals


@dataclass(frozen=True)
class Feedback:
    """One rater's feedback: ``value / 10**value_decimals`` lies in [0, 100]."""

    value: int
    value_decimals: int
    tag1: str
    tag2: str

    @property
    def score(self) -> float:
        """The value on the [0, 100] scale."""
        return self.value / 10**self.value_decimals


@dataclass(frozen=True)
class RaterPayment:
    """What an account paid into an asset's vault by one proof and what qualifies a rater (token base
    units): by its licenses (each bought at the price of its day), ``required`` = the deployment's floor;
    by one channel's claims, ``required`` = max(the asset's current price, the floor)."""

    paid: int
    required: int

    @property
    def qualifies(self) -> bool:
        """True if the payment is enough to rate."""
        return self.paid >= self.required


@dataclass(frozen=True)
class PurchaseAuthorization:
    """A buyer's signed EIP-3009 ReceiveWithAuthorization bound to one asset purchase."""

    asset_id: int
    buyer: str
    value: int
    valid_after: int
    valid_before: int
    salt: bytes
    signature: bytes


def _domain_of(chain: Chain, contract) -> Domain:
    _fields, name, version, chain_id, verifying_contract, _salt, _ext = chain.call(contract.functions.eip712Domain())
    return Domain(name, version, chain_id, verifying_contract)


def _event_arg(chain: Chain, contract, receipt: TxReceipt, event: str, arg: str) -> int:
    (emitted,) = chain.events(contract, receipt, event)
    return emitted[arg]


class MarketplaceContract:
    """The Marketplace: publishing assets and buying licenses."""

    def __init__(self, chain: Chain, address: str) -> None:
        self.chain = chain
        self.contract = chain.contract("Marketplace", address)
        self.address = self.contract.address

    # ------------------------------------------------------------------ publishing

    def publish(
        self,
        owner: LocalAccount,
        *,
        kind: AssetKind,
        content_hash: bytes,
        uri: str,
        price: int,
        token: str,
        payees: list[tuple[str, int]],
        parents: list[tuple[int, int]] = (),  # type: ignore[assignment]
        license_duration: int = 0,
        listed: bool = True,
    ) -> int:
        """Publish an asset; returns its id.

        ``content_hash`` is the sha256 of the content (32 bytes); ``price`` in ``token`` base units;
        ``payees`` and ``parents`` are (address or asset id, bps) pairs whose bps sum to 10,000;
        ``license_duration`` in seconds (0 = perpetual). ``listed=False`` publishes it unlisted: nobody
        can buy it (``AssetDelisted``) until the owner's :meth:`set_listed` — what
        :meth:`MarketplaceClient.publish <marketplace.client.sdk.MarketplaceClient.publish>` does,
        listing only once the server has verified the uploaded content.

        Raises ContractRevert: InvalidToken, PriceTooLarge, NoPayees, TooManyPayees, TooManyParents,
        LengthMismatch, ZeroShare, UnknownParent, SharesDoNotSum.
        """
        fn = self.contract.functions.publish(
            int(kind),
            content_hash,
            uri,
            price,
            token,
            license_duration,
            [p for p, _ in payees],
            [s for _, s in payees],
            [p for p, _ in parents],
            [s for _, s in parents],
            listed,
        )
        receipt = self.chain.send(fn, owner)
        return _event_arg(self.chain, self.contract, receipt, "AssetPublished", "assetId")

    def publish_version(self, owner: LocalAccount, asset_id: int, content_hash: bytes, uri: str) -> TxReceipt:
        """Publish new content for an asset (owner only); ``content_hash`` is its sha256.

        The asset is unlisted from then on, until the owner lists it again (:meth:`set_listed`) once the
        new version's content is uploaded: nobody buys a version whose content is not there.
        Raises ContractRevert UnknownAsset, NotAssetOwner.
        """
        return self.chain.send(self.contract.functions.publishVersion(asset_id, content_hash, uri), owner)

    def set_price(self, owner: LocalAccount, asset_id: int, price: int) -> TxReceipt:
        """Change the price (owner only)."""
        return self.chain.send(self.contract.functions.setPrice(asset_id, price), owner)

    def set_listed(self, owner: LocalAccount, asset_id: int, listed: bool) -> TxReceipt:
        """List (buyable) or delist (owner only; existing licenses stay). Raises ContractRevert
        UnknownAsset, NotAssetOwner."""
        return self.chain.send(self.contract.functions.setListed(asset_id, listed), owner)

    # ------------------------------------------------------------------ buying

    def buy(self, buyer: LocalAccount, asset_id: int, max_price: int, *, gas: int | None = None) -> TxReceipt:
        """Buy a license; the buyer must have approved the marketplace for the price."""
        return self.chain.send(self.contract.functions.buy(asset_id, max_price), buyer, gas=gas)

    def buy_with_permit(self, buyer: LocalAccount, asset_id: int, max_price: int, deadline: int) -> TxReceipt:
        """Buy a license, approving the price with an EIP-2612 permit in the same transaction."""
        asset = self.asset(asset_id)
        token = TestUSD(self.chain, asset.token)
        sig = sign_permit(buyer, token.domain, self.address, asset.price, token.permit_nonce(buyer.address), deadline)
        fn = self.contract.functions.buyWithPermit(asset_id, max_price, deadline, sig.v, sig.r, sig.s)
        return self.chain.send(fn, buyer)

    def authorization_nonce(self, asset_id: int, salt: bytes) -> bytes:
        """The EIP-3009 nonce binding an authorization to one purchase of ``asset_id``."""
        return self.chain.call(self.contract.functions.authorizationNonce(asset_id, salt))

    def sign_purchase(
        self, buyer: LocalAccount, asset_id: int, *, valid_before: int, valid_after: int = 0, salt: bytes | None = None
    ) -> PurchaseAuthorization:
        """The buyer signs (no transaction) an authorization a relayer can use to buy for it."""
        asset = self.asset(asset_id)
        salt = salt if salt is not None else os.urandom(32)
        token = TestUSD(self.chain, asset.token)
        auth = sign_authorization(
            buyer,
            token.domain,
            self.address,
            asset.price,
            valid_after=valid_after,
            valid_before=valid_before,
            nonce=self.authorization_nonce(asset_id, salt),
            primary_type="ReceiveWithAuthorization",
        )
        return PurchaseAuthorization(
            asset_id, buyer.address, asset.price, valid_after, valid_before, salt, auth.signature.packed
        )

    def buy_with_authorization(
        self, auth: PurchaseAuthorization, relayer: LocalAccount, *, gas: int | None = None
    ) -> TxReceipt:
        """Submit a buyer's signed purchase; the relayer pays the gas, the buyer gets the license."""
        fn = self.contract.functions.buyWithAuthorization(
            auth.asset_id, auth.buyer, auth.value, auth.valid_after, auth.valid_before, auth.salt, auth.signature
        )
        return self.chain.send(fn, relayer, gas=gas)

    # ------------------------------------------------------------------ reads

    def asset_count(self) -> int:
        """Number of assets published."""
        return self.chain.call(self.contract.functions.assetCount())

    def asset(self, asset_id: int) -> Asset:
        """Everything about an asset (raises ContractRevert UnknownAsset)."""
        v = self.chain.call(self.contract.functions.getAsset(asset_id))
        return Asset(
            asset_id=v[0],
            kind=AssetKind(v[1]),
            owner=v[2],
            token=v[3],
            price=v[4],
            license_duration=v[5],
            version=v[6],
            listed=v[7],
            content_hash=bytes(v[8]),
            uri=v[9],
            vault=v[10],
            parents=tuple(v[11]),
        )

    def vault_of(self, asset_id: int) -> str:
        """The asset's RevenueVault address."""
        return self.chain.call(self.contract.functions.vaultOf(asset_id))

    def has_access(self, asset_id: int, account: str) -> bool:
        """True while ``account`` holds an unexpired license."""
        return self.chain.call(self.contract.functions.hasAccess(asset_id, account))

    def license_paid(self, asset_id: int, account: str) -> int:
        """What ``account`` paid for licenses to ``asset_id``, all purchases together (base units)."""
        return self.chain.call(self.contract.functions.licensePaid(asset_id, account))

    def license(self, asset_id: int, account: str) -> License:
        """``account``'s license to ``asset_id``."""
        return License(asset_id, account, self.chain.call(self.contract.functions.licenseExpiry(asset_id, account)))

    def fee_bps(self) -> int:
        """The protocol fee in basis points."""
        return self.chain.call(self.contract.functions.feeBps())

    def treasury(self) -> str:
        """Where the protocol fee goes."""
        return self.chain.call(self.contract.functions.treasury())


class RevenueVaultContract:
    """One asset's pull splitter."""

    def __init__(self, chain: Chain, address: str) -> None:
        self.chain = chain
        self.contract = chain.contract("RevenueVault", address)
        self.address = self.contract.address

    def claimable(self, token: str, payee: str) -> int:
        """What ``payee`` could be sent now."""
        return self.chain.call(self.contract.functions.claimable(token, payee))

    def release(self, caller: LocalAccount, token: str, payee: str, *, gas: int | None = None) -> TxReceipt:
        """Send ``payee`` its claimable amount (anyone may call)."""
        return self.chain.send(self.contract.functions.release(token, payee), caller, gas=gas)

    def payees(self) -> dict[str, int]:
        """Payee -> shares (out of 100,000,000)."""
        accounts, shares = self.chain.call(self.contract.functions.payees())
        return dict(zip(accounts, shares, strict=True))

    def total_received(self, token: str) -> int:
        """Everything of ``token`` the vault ever received."""
        return self.chain.call(self.contract.functions.totalReceived(token))

    def released(self, token: str, payee: str) -> int:
        """What ``payee`` was sent so far."""
        return self.chain.call(self.contract.functions.released(token, payee))

    def total_released(self, token: str) -> int:
        """What the vault sent out so far."""
        return self.chain.call(self.contract.functions.totalReleased(token))


class PaymentChannelsContract:
    """Metered access: channels, ceiling vouchers and claims of what was served (see ``PaymentChannels.sol``)."""

    def __init__(self, chain: Chain, address: str) -> None:
        self.chain = chain
        self.contract = chain.contract("PaymentChannels", address)
        self.address = self.contract.address

    @cached_property
    def domain(self) -> Domain:
        """The EIP-712 domain vouchers are signed under."""
        return _domain_of(self.chain, self.contract)

    def open(
        self,
        payer: LocalAccount,
        asset_id: int,
        token: str,
        deposit: int,
        expiry: int,
        signer: str | None = None,
        *,
        receiver_authorizer: str,
    ) -> int:
        """Open a channel (the payer must have approved ``deposit``); returns its id.

        ``signer`` signs vouchers (default: the payer); ``receiver_authorizer`` alone may claim (the
        gateway's settlement key, which the server advertises). Reverts ``TokenMismatch``,
        ``InvalidAmount``, ``InvalidExpiry``, ``ZeroSigner``, ``ZeroReceiverAuthorizer``.
        """
        fn = self.contract.functions.open(asset_id, token, deposit, expiry, signer or payer.address,
                                          receiver_authorizer)  # fmt: skip
        receipt = self.chain.send(fn, payer)
        return _event_arg(self.chain, self.contract, receipt, "ChannelOpened", "channelId")

    def top_up(self, payer: LocalAccount, channel_id: int, amount: int) -> TxReceipt:
        """Add to the deposit (payer only, before expiry)."""
        return self.chain.send(self.contract.functions.topUp(channel_id, amount), payer)

    def extend(self, payer: LocalAccount, channel_id: int, new_expiry: int) -> TxReceipt:
        """Move the expiry later (payer only, before expiry)."""
        return self.chain.send(self.contract.functions.extend(channel_id, new_expiry), payer)

    def sign_voucher(self, signer: LocalAccount, channel_id: int, max_claimable_amount: int) -> bytes:
        """A voucher letting the receiver claim up to ``max_claimable_amount`` in total (65 packed bytes)."""
        return sign_voucher(signer, self.domain, channel_id, max_claimable_amount).packed

    def claim(
        self,
        receiver: LocalAccount,
        channel_id: int,
        max_claimable_amount: int,
        total_claimed: int,
        signature: bytes,
        *,
        gas: int | None = None,
    ) -> TxReceipt:
        """The receiver authorizer claims ``total_claimed`` in total under a voucher for ``max_claimable_amount``;
        the increase goes into the asset's vault."""
        fn = self.contract.functions.claim(channel_id, max_claimable_amount, total_claimed, signature)
        return self.chain.send(fn, receiver, gas=gas)

    def claim_and_settle(
        self,
        receiver: LocalAccount,
        channel_id: int,
        max_claimable_amount: int = 0,
        total_claimed: int = 0,
        signature: bytes = b"",
        *,
        gas: int | None = None,
    ) -> TxReceipt:
        """The receiver's final claim (skipped when ``total_claimed`` adds nothing), then the rest back to the payer."""
        fn = self.contract.functions.claimAndSettle(channel_id, max_claimable_amount, total_claimed, signature)
        return self.chain.send(fn, receiver, gas=gas)

    def close(self, owner: LocalAccount, channel_id: int) -> TxReceipt:
        """The asset owner ends service now (the expiry becomes now; claims stay open for the claim window)."""
        return self.chain.send(self.contract.functions.close(channel_id), owner)

    def reclaim(self, caller: LocalAccount, channel_id: int) -> TxReceipt:
        """After expiry plus the claim window, return the unclaimed deposit to the payer (anyone may call)."""
        return self.chain.send(self.contract.functions.reclaim(channel_id), caller)

    def channel(self, channel_id: int) -> Channel:
        """A channel's state (raises ContractRevert ``UnknownChannel``)."""
        c = self.chain.call(self.contract.functions.getChannel(channel_id))
        return Channel(channel_id, *c)

    def channels_of(self, payer: str, *, from_block: int = 0) -> list[Channel]:
        """Every channel ``payer`` opened (its ``ChannelOpened`` events since ``from_block``, e.g. the
        deployment's block), in id order, each with its state now."""
        events = self.contract.events.ChannelOpened.get_logs(
            argument_filters={"payer": to_checksum_address(payer)}, from_block=from_block, to_block="latest"
        )
        return [self.channel(channel_id) for channel_id in sorted({event["args"]["channelId"] for event in events})]

    def payment(self, channel_id: int) -> tuple[str, int, int]:
        """``(payer, asset id, claimed)``: what the channel paid into its asset's vault so far."""
        payer, asset_id, claimed = self.chain.call(self.contract.functions.payment(channel_id))
        return payer, asset_id, claimed

    def voucher_digest(self, channel_id: int, max_claimable_amount: int) -> bytes:
        """The EIP-712 digest the contract checks a voucher's signature against."""
        return bytes(self.chain.call(self.contract.functions.voucherDigest(channel_id, max_claimable_amount)))


class AgentRegistryContract:
    """ERC-8004 identities, wallet binding and owner-set spend permissions."""

    def __init__(self, chain: Chain, address: str) -> None:
        self.chain = chain
        self.contract = chain.contract("AgentRegistry", address)
        self.address = self.contract.address

    @cached_property
    def domain(self) -> Domain:
        """The EIP-712 domain wallet bindings are signed under."""
        return _domain_of(self.chain, self.contract)

    def register(self, owner: LocalAccount, uri: str = "", metadata: dict[str, bytes] | None = None) -> int:
        """Register an agent owned by ``owner``; returns its id."""
        entries = [(k, v) for k, v in (metadata or {}).items()]
        fn = self.contract.get_function_by_signature("register(string,(string,bytes)[])")(uri, entries)
        receipt = self.chain.send(fn, owner)
        return _event_arg(self.chain, self.contract, receipt, "Registered", "agentId")

    def set_agent_uri(self, owner: LocalAccount, agent_id: int, uri: str) -> TxReceipt:
        """Point the agent at a new registration file."""
        return self.chain.send(self.contract.functions.setAgentURI(agent_id, uri), owner)

    def set_metadata(self, owner: LocalAccount, agent_id: int, key: str, value: bytes) -> TxReceipt:
        """Set one metadata entry."""
        return self.chain.send(self.contract.functions.setMetadata(agent_id, key, value), owner)

    def get_metadata(self, agent_id: int, key: str) -> bytes:
        """One metadata entry (empty if unset)."""
        return bytes(self.chain.call(self.contract.functions.getMetadata(agent_id, key)))

    def sign_wallet_binding(self, wallet: LocalAccount, agent_id: int, owner: str, deadline: int) -> Signature:
        """The wallet's consent to act for ``agent_id``."""
        return sign_agent_wallet(wallet, self.domain, agent_id, owner, deadline)

    def set_agent_wallet(
        self, owner: LocalAccount, agent_id: int, wallet: str, deadline: int, signature: bytes
    ) -> TxReceipt:
        """Bind ``wallet`` (which signed ``signature``) to the agent."""
        return self.chain.send(self.contract.functions.setAgentWallet(agent_id, wallet, deadline, signature), owner)

    def unset_agent_wallet(self, owner: LocalAccount, agent_id: int) -> TxReceipt:
        """Remove the wallet binding."""
        return self.chain.send(self.contract.functions.unsetAgentWallet(agent_id), owner)

    def agent_wallet(self, agent_id: int) -> str | None:
        """The wallet the agent acts from (None if unset)."""
        wallet = self.chain.call(self.contract.functions.getAgentWallet(agent_id))
        return None if int(wallet, 16) == 0 else wallet

    def agent(self, agent_id: int) -> AgentRecord:
        """The agent's identity, wallet and the metadata the marketplace reads."""
        owner = self.chain.call(self.contract.functions.ownerOf(agent_id))
        key = self.get_metadata(agent_id, "encryptionKey")
        endpoint = self.get_metadata(agent_id, "endpoint")
        return AgentRecord(
            agent_id=agent_id,
            owner=owner,
            uri=self.chain.call(self.contract.functions.tokenURI(agent_id)),
            wallet=self.agent_wallet(agent_id),
            encryption_key=key or None,
            endpoint=endpoint.decode() if endpoint else None,
        )

    def grant_spend_permission(
        self, owner: LocalAccount, agent_id: int, token: str, allowance: int, period: int, *, wallet: str
    ) -> TxReceipt:
        """Let ``wallet`` (the agent's wallet now) pull ``allowance`` (base units) per ``period`` seconds
        of ``token`` from ``owner``, while this wallet binding lasts (any rebinding or transfer ends it).
        Re-granting within a period keeps what it already spent.

        Raises ContractRevert: NotAgentOwner (not the owner; operators may not grant), WalletNotBound
        (``wallet`` is not the agent's wallet now), InvalidPeriod, ZeroAddress.
        """
        fn = self.contract.functions.grantSpendPermission(agent_id, token, wallet, allowance, period)
        return self.chain.send(fn, owner)

    def revoke_spend_permission(self, grantor: LocalAccount, agent_id: int, token: str) -> TxReceipt:
        """Withdraw the permission (its grantor may, also after the agent changed hands).

        Raises ContractRevert: NoSpendPermission (none, or already revoked), NotGrantor.
        """
        return self.chain.send(self.contract.functions.revokeSpendPermission(agent_id, token), grantor)

    def spend_permission(self, agent_id: int, token: str) -> SpendPermission:
        """The permission, whether the agent wallet can use it now, and what is left of it this period."""
        (grantor, period, start, wallet, epoch, binding, allowance, spent), active, remaining = self.chain.call(
            self.contract.functions.spendPermission(agent_id, token)
        )
        return SpendPermission(grantor, allowance, period, start, spent, remaining, wallet, epoch, active, binding)

    def ownership_epoch(self, agent_id: int) -> int:
        """How many times the agent NFT has moved; permissions of an earlier epoch are dead."""
        return self.chain.call(self.contract.functions.ownershipEpoch(agent_id))

    def wallet_binding_epoch(self, agent_id: int) -> int:
        """How many times the agent's wallet was bound or unbound; permissions granted before are dead."""
        return self.chain.call(self.contract.functions.walletBindingEpoch(agent_id))

    def spend_from_owner(self, wallet: LocalAccount, agent_id: int, token: str, to: str, amount: int) -> TxReceipt:
        """The agent wallet pulls ``amount`` of the owner's tokens to ``to``."""
        return self.chain.send(self.contract.functions.spendFromOwner(agent_id, token, to, amount), wallet)


class ReputationContract:
    """Feedback on a [0, 100] scale, accepted only from accounts whose payment for the subject
    qualifies them (licenses that paid at least the deployment's floor in all, each at the price of its
    day, or a channel whose claims reached max(the current price, the floor)), once per account and
    subject; never from the subject's owner, operators or agent wallet."""

    def __init__(self, chain: Chain, address: str) -> None:
        self.chain = chain
        self.contract = chain.contract("ReputationRegistry", address)
        self.address = self.contract.address

    def give_feedback(
        self,
        author: LocalAccount,
        *,
        subject_kind: SubjectKind,
        subject_id: int,
        value: int,
        paid_asset_id: int,
        value_decimals: int = 0,
        channel_id: int = 0,
        tag1: str = "",
        tag2: str = "",
        feedback_uri: str = "",
        feedback_hash: bytes = b"\x00" * 32,
        gas: int | None = None,
    ) -> TxReceipt:
        """Rate a subject the author paid for (by its licenses of ``paid_asset_id``, or by the claims of
        its channel ``channel_id`` for it); ``value / 10**value_decimals`` must lie in [0, 100].

        Raises ContractRevert: InsufficientPayment, NotChannelPayer, ChannelForOtherAsset,
        PaymentForOtherAsset, AssetNotOfAgent, SelfFeedback, AlreadyRated, ValueOutOfRange,
        InvalidValueDecimals. ``gas`` skips the estimate (a revert then costs a mined transaction).
        """
        feedback = (
            int(subject_kind),
            subject_id,
            value,
            value_decimals,
            tag1,
            tag2,
            feedback_uri,
            feedback_hash,
            paid_asset_id,
            channel_id,
        )
        return self.chain.send(self.contract.functions.giveFeedback(feedback), author, gas=gas)

    def summary(
        self,
        subject_kind: SubjectKind,
        subject_id: int,
        clients: Sequence[str] | None = None,
        *,
        tag1: str = "",
        tag2: str = "",
    ) -> FeedbackSummary:
        """Count and average of the feedback about a subject.

        With ``clients`` (ERC-8004 ``getSummary``): only those raters' feedback (each counted once),
        whose tags equal ``tag1`` / ``tag2`` (empty matches any); an empty list raises ContractRevert
        ClientAddressesRequired. Without (``None``): every rater's, in O(1) (``getUnfilteredSummary``;
        tags are not filtered there, so passing a tag without clients raises ValueError).
        """
        if clients is None:
            if tag1 or tag2:
                raise ValueError("filtering by tag needs the raters to trust: pass clients")
            fn = self.contract.functions.getUnfilteredSummary(int(subject_kind), subject_id)
        else:
            fn = self.contract.functions.getSummary(int(subject_kind), subject_id, list(clients), tag1, tag2)
        count, average, decimals = self.chain.call(fn)
        return FeedbackSummary(count, average, decimals)

    def payment_of(self, paid_asset_id: int, account: str, channel_id: int = 0) -> RaterPayment:
        """What ``account`` paid into ``paid_asset_id``'s vault by its licenses (``channel_id`` 0) or by
        that channel's claims, and what qualifies a rater. Raises ContractRevert NotChannelPayer,
        ChannelForOtherAsset, UnknownAsset, UnknownChannel."""
        paid, required = self.chain.call(self.contract.functions.paymentOf(paid_asset_id, channel_id, account))
        return RaterPayment(paid, required)

    def feedback(self, subject_kind: SubjectKind, subject_id: int, client: str) -> Feedback:
        """``client``'s feedback about a subject (ContractRevert NoFeedback if none)."""
        value, decimals, tag1, tag2 = self.chain.call(
            self.contract.functions.readFeedback(int(subject_kind), subject_id, client)
        )
        return Feedback(value, decimals, tag1, tag2)

    def clients(self, subject_kind: SubjectKind, subject_id: int) -> list[str]:
        """Every account that rated the subject, in the order they rated."""
        return list(self.chain.call(self.contract.functions.getClients(int(subject_kind), subject_id)))

    def min_payment(self) -> int:
        """The deployment's payment floor for raters (token base units)."""
        return self.chain.call(self.contract.functions.minPayment())

    def has_rated(self, subject_kind: SubjectKind, subject_id: int, account: str) -> bool:
        """True if ``account`` already rated the subject."""
        return self.chain.call(self.contract.functions.hasRated(int(subject_kind), subject_id, account))


@dataclass(frozen=True)
class Market:
    """Every contract of a deployment, bound to a chain."""

    chain: Chain
    token: TestUSD
    marketplace: MarketplaceContract
    channels: PaymentChannelsContract
    agents: AgentRegistryContract
    reputation: ReputationContract

    def vault(self, asset_id: int) -> RevenueVaultContract:
        """The RevenueVault of ``asset_id``."""
        return RevenueVaultContract(self.chain, self.marketplace.vault_of(asset_id))

    def release_upstream(self, caller: LocalAccount, asset_id: int) -> list[Release]:
        """Push ``asset_id``'s royalties up its lineage: its vault releases to every payee that is a vault
        (its parents), then those vaults to theirs, children first, in every token that reaches each vault
        along the way (a model priced in another token than its parent pays the parent's vault, and the
        grandparent, in that token too). Anyone may call it; ``caller`` pays the gas.

        Returns the releases sent (amounts in base units of each one's token), only those that moved
        money: one transaction each. See :mod:`marketplace.chain.lineage` (:func:`plan_release`,
        :func:`execute`): raises :class:`~marketplace.chain.lineage.ReleaseIncomplete` if a release
        failed (the rest stays claimable; calling again finishes), AgentmarketError for an unknown asset.
        """
        from marketplace.chain.lineage import Lineage, execute, plan_release

        return execute(self.chain, caller, plan_release(self.chain, Lineage.of_market(self), asset_id))
