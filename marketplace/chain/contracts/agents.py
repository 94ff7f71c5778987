"""The AgentRegistry contract: ERC-8004 agent identities, wallet binding, spend permissions (``AgentRegistry.sol``)."""

from __future__ import annotations

from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from marketplace.chain.contracts.base import ContractWrapper
from marketplace.chain.eip712 import Signature, sign_agent_wallet
from marketplace.chain.records import AgentRecord, SpendPermission


class AgentRegistryContract(ContractWrapper):
    """ERC-8004 identities, wallet binding and owner-set spend permissions."""

    artifact = "AgentRegistry"

    def register(self, owner: LocalAccount, uri: str = "", metadata: dict[str, bytes] | None = None) -> int:
        """Register an agent owned by ``owner``; returns its id."""
        entries = [(k, v) for k, v in (metadata or {}).items()]
        fn = self.contract.get_function_by_signature("register(string,(string,bytes)[])")(uri, entries)
        receipt = self.chain.send(fn, owner)
        return self._emitted(receipt, "Registered", "agentId")

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
