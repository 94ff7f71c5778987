"""Typed wrappers of the deployed contracts, one per contract on :class:`~.base.ContractWrapper`.

Reads return the record types of :mod:`marketplace.chain.records`; writes sign with the acting
account's key, go through :meth:`Chain.send <marketplace.chain.chain.Chain.send>` and return the
receipt (or the new id).
"""

from marketplace.chain.contracts.agents import AgentRegistryContract
from marketplace.chain.contracts.base import ContractWrapper
from marketplace.chain.contracts.channels import PaymentChannelsContract
from marketplace.chain.contracts.marketplace import MarketplaceContract
from marketplace.chain.contracts.reputation import ReputationContract
from marketplace.chain.contracts.token import TestUSD
from marketplace.chain.contracts.vault import RevenueVaultContract

__all__ = [
    "AgentRegistryContract",
    "ContractWrapper",
    "MarketplaceContract",
    "PaymentChannelsContract",
    "ReputationContract",
    "RevenueVaultContract",
    "TestUSD",
]
