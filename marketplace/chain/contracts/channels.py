"""The PaymentChannels contract: metered access paid by ceiling vouchers (``PaymentChannels.sol``)."""

from __future__ import annotations

from eth_account.signers.local import LocalAccount
from eth_utils import to_checksum_address
from web3.types import TxReceipt

from marketplace.chain.contracts.base import ContractWrapper
from marketplace.chain.eip712 import sign_voucher
from marketplace.chain.records import Channel


class PaymentChannelsContract(ContractWrapper):
    """Metered access: channels, ceiling vouchers and claims of what was served (see ``PaymentChannels.sol``)."""

    artifact = "PaymentChannels"

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
        return self._emitted(receipt, "ChannelOpened", "channelId")

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
