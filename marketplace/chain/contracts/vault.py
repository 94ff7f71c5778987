"""An asset's RevenueVault: the pull splitter its payments go into (``RevenueVault.sol``)."""

from __future__ import annotations

from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from marketplace.chain.contracts.base import ContractWrapper


class RevenueVaultContract(ContractWrapper):
    """One asset's pull splitter."""

    artifact = "RevenueVault"

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
