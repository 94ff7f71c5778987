"""The base every contract wrapper stands on: a deployed contract on a :class:`Chain`.

Reads go through :meth:`Chain.call <marketplace.chain.chain.Chain.call>` and writes through
:meth:`Chain.send <marketplace.chain.chain.Chain.send>` (the one transaction pipeline: estimate, margin,
sign, send, wait, a revert raised as :class:`~marketplace.chain.errors.ContractRevert`).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any, ClassVar

from web3.types import TxReceipt

from marketplace.chain.chain import Chain
from marketplace.chain.eip712 import Domain


class ContractWrapper:
    """The deployed contract named :attr:`artifact` at ``address`` on ``chain``.

    ``contract`` is its web3 contract object, ``address`` its checksummed address.
    """

    #: The contract's artifact (and Solidity contract) name.
    artifact: ClassVar[str]

    def __init__(self, chain: Chain, address: str) -> None:
        self.chain = chain
        self.contract = chain.contract(self.artifact, address)
        self.address = self.contract.address

    @cached_property
    def domain(self) -> Domain:
        """The contract's EIP-712 domain, read from the contract (EIP-5267 ``eip712Domain()``)."""
        _fields, name, version, chain_id, verifying_contract, _salt, _ext = self.chain.call(
            self.contract.functions.eip712Domain()
        )
        return Domain(name, version, chain_id, verifying_contract)

    def events(self, receipt: TxReceipt, event: str) -> list[dict[str, Any]]:
        """The ``event`` events this contract emitted in ``receipt``, as dicts of their arguments."""
        return self.chain.events(self.contract, receipt, event)

    def _emitted(self, receipt: TxReceipt, event: str, arg: str) -> Any:
        """Argument ``arg`` of the one ``event`` this contract emitted in ``receipt``."""
        (emitted,) = self.events(receipt, event)
        return emitted[arg]
