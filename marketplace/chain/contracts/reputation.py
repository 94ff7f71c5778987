"""The ReputationRegistry contract: paid-for feedback on assets and agents (``ReputationRegistry.sol``)."""

from __future__ import annotations

from collections.abc import Sequence

from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from marketplace.chain.contracts.base import ContractWrapper
from marketplace.chain.records import Feedback, FeedbackSummary, RaterPayment, SubjectKind


class ReputationContract(ContractWrapper):
    """Feedback on a [0, 100] scale, accepted only from accounts whose payment for the subject
    qualifies them (licenses that paid at least the deployment's floor in all, each at the price of its
    day, or a channel whose claims reached max(the current price, the floor)), once per account and
    subject; never from the subject's owner, operators or agent wallet."""

    artifact = "ReputationRegistry"

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
