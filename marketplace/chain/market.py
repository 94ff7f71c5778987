"""The :class:`Market` facade: every contract of a deployment, bound to a chain."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from eth_account.signers.local import LocalAccount

from marketplace.chain.chain import Chain
from marketplace.chain.contracts import (
    AgentRegistryContract,
    MarketplaceContract,
    PaymentChannelsContract,
    ReputationContract,
    RevenueVaultContract,
    TestUSD,
)

if TYPE_CHECKING:
    from marketplace.chain.lineage import Release


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
