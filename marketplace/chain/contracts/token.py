"""The TestUSD stablecoin: ERC-20 + EIP-2612 permit + EIP-3009 transfer authorizations (``TestUSD.sol``)."""

from __future__ import annotations

from eth_account.signers.local import LocalAccount
from web3.types import TxReceipt

from marketplace.chain.contracts.base import ContractWrapper
from marketplace.chain.eip712 import (
    TransferAuthorization,
    sign_authorization,
    sign_cancel_authorization,
    sign_permit,
)

_TRANSFER_WITH_AUTH_BYTES = "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)"
_TRANSFER_WITH_AUTH_VRS = (
    "transferWithAuthorization(address,address,uint256,uint256,uint256,bytes32,uint8,bytes32,bytes32)"
)
_RECEIVE_WITH_AUTH_BYTES = "receiveWithAuthorization(address,address,uint256,uint256,uint256,bytes32,bytes)"
_CANCEL_AUTH_BYTES = "cancelAuthorization(address,bytes32,bytes)"


class TestUSD(ContractWrapper):
    """The deployed TestUSD token at ``address`` on ``chain``."""

    __test__ = False  # not a pytest test class, despite the name

    artifact = "TestUSD"

    # ------------------------------------------------------------------ reads

    def name(self) -> str:
        """Token name ("Test USD")."""
        return self.chain.call(self.contract.functions.name())

    def symbol(self) -> str:
        """Token symbol ("tUSD")."""
        return self.chain.call(self.contract.functions.symbol())

    def decimals(self) -> int:
        """Token decimals (6)."""
        return self.chain.call(self.contract.functions.decimals())

    def total_supply(self) -> int:
        """Total supply in atomic units."""
        return self.chain.call(self.contract.functions.totalSupply())

    def balance_of(self, account: str) -> int:
        """Balance of ``account`` in atomic units."""
        return self.chain.call(self.contract.functions.balanceOf(account))

    def allowance(self, owner: str, spender: str) -> int:
        """What ``spender`` may still pull from ``owner``."""
        return self.chain.call(self.contract.functions.allowance(owner, spender))

    def permit_nonce(self, owner: str) -> int:
        """The EIP-2612 nonce ``owner``'s next permit must carry."""
        return self.chain.call(self.contract.functions.nonces(owner))

    def authorization_state(self, authorizer: str, nonce: bytes) -> bool:
        """True if the EIP-3009 ``nonce`` of ``authorizer`` was used or cancelled."""
        return self.chain.call(self.contract.functions.authorizationState(authorizer, nonce))

    # ------------------------------------------------------------------ writes

    def mint(self, minter: LocalAccount, to: str, amount: int) -> TxReceipt:
        """Mint ``amount`` to ``to`` (``minter`` must hold MINTER_ROLE): the local faucet."""
        return self.chain.send(self.contract.functions.mint(to, amount), minter)

    def transfer(self, sender: LocalAccount, to: str, amount: int) -> TxReceipt:
        """Plain ERC-20 transfer."""
        return self.chain.send(self.contract.functions.transfer(to, amount), sender)

    def approve(self, owner: LocalAccount, spender: str, amount: int) -> TxReceipt:
        """Plain ERC-20 approval."""
        return self.chain.send(self.contract.functions.approve(spender, amount), owner)

    def permit(self, owner: LocalAccount, spender: str, value: int, deadline: int, relayer: LocalAccount) -> TxReceipt:
        """Sign an EIP-2612 permit with ``owner``'s key and have ``relayer`` submit it."""
        sig = sign_permit(owner, self.domain, spender, value, self.permit_nonce(owner.address), deadline)
        fn = self.contract.functions.permit(owner.address, spender, value, deadline, sig.v, sig.r, sig.s)
        return self.chain.send(fn, relayer)

    def sign_transfer(
        self,
        signer: LocalAccount,
        to: str,
        value: int,
        *,
        valid_before: int,
        valid_after: int = 0,
        nonce: bytes | None = None,
        receive: bool = False,
    ) -> TransferAuthorization:
        """Sign an EIP-3009 authorization moving ``value`` from ``signer`` to ``to``."""
        primary = "ReceiveWithAuthorization" if receive else "TransferWithAuthorization"
        return sign_authorization(
            signer,
            self.domain,
            to,
            value,
            valid_after=valid_after,
            valid_before=valid_before,
            nonce=nonce,
            primary_type=primary,
        )

    def transfer_with_authorization(
        self, auth: TransferAuthorization, relayer: LocalAccount, *, vrs: bool = False, gas: int | None = None
    ) -> TxReceipt:
        """Relay a signed EIP-3009 transfer (``vrs`` picks the (v, r, s) overload over bytes)."""
        if vrs:
            fn = self.contract.get_function_by_signature(_TRANSFER_WITH_AUTH_VRS)(*auth.call_args_vrs())
        else:
            fn = self.contract.get_function_by_signature(_TRANSFER_WITH_AUTH_BYTES)(*auth.call_args())
        return self.chain.send(fn, relayer, gas=gas)

    def receive_with_authorization(self, auth: TransferAuthorization, payee: LocalAccount) -> TxReceipt:
        """Submit a signed EIP-3009 receive; only the payee may (front-running protection)."""
        fn = self.contract.get_function_by_signature(_RECEIVE_WITH_AUTH_BYTES)(*auth.call_args())
        return self.chain.send(fn, payee)

    def cancel_authorization(self, authorizer: LocalAccount, nonce: bytes, relayer: LocalAccount) -> TxReceipt:
        """Cancel an unused EIP-3009 nonce of ``authorizer``."""
        sig = sign_cancel_authorization(authorizer, self.domain, nonce)
        fn = self.contract.get_function_by_signature(_CANCEL_AUTH_BYTES)(authorizer.address, nonce, sig.packed)
        return self.chain.send(fn, relayer)
