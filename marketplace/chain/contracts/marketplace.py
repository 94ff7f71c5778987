"""The Marketplace contract: publishing assets and buying licenses (``Marketplace.sol``)."""

from __future__ import annotations

import os

from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from marketplace.chain.contracts.base import ContractWrapper
from marketplace.chain.contracts.token import TestUSD
from marketplace.chain.eip712 import sign_authorization, sign_permit
from marketplace.chain.records import Asset, AssetKind, License, PurchaseAuthorization


class MarketplaceContract(ContractWrapper):
    """The Marketplace: publishing assets and buying licenses."""

    artifact = "Marketplace"

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
        return self._emitted(receipt, "AssetPublished", "assetId")

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
