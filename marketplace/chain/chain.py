"""The one chain interface every other layer uses, whatever node sits behind it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from eth_account import Account
from eth_account.signers.local import LocalAccount
from eth_typing import ChecksumAddress
from hexbytes import HexBytes
from web3 import Web3
from web3.contract import Contract
from web3.contract.contract import ContractFunction
from web3.logs import DISCARD
from web3.types import TxReceipt

from marketplace.chain.artifacts import Artifact, load_artifact
from marketplace.chain.errors import (
    ChainError,
    ContractRevert,
    InsufficientFunds,
    is_insufficient_funds,
    raise_revert,
    revert_from_exception,
)
from marketplace.errors import AgentmarketError

#: Gas headroom added to an estimate: the 63/64 rule and storage refunds can make a call that
#: needs exactly the estimate fail.
_GAS_MARGIN_NUMERATOR, _GAS_MARGIN_DENOMINATOR = 5, 4
#: The priority fee (wei per gas) of a :class:`RawCall`.
_RAW_CALL_TIP = 10**9


def with_gas_margin(estimate: int) -> int:
    """The gas limit sent for an ``estimate``: a quarter more (x 5/4, rounded down)."""
    return estimate * _GAS_MARGIN_NUMERATOR // _GAS_MARGIN_DENOMINATOR


@dataclass(frozen=True)
class BackendHooks:
    """What differs between backends, given by the backend that builds a :class:`Chain`."""

    kind: str
    time_travel: Callable[[Web3, int], None]
    close: Callable[[], None] = lambda: None
    rpc_url: str | None = None
    receipt_poll_latency: float = 0.002


@dataclass(frozen=True)
class PendingTransaction:
    """A signed transaction the node accepted: what was signed (``tx``) and its ``hash``."""

    tx: dict[str, Any]
    hash: HexBytes


class Chain:
    """A connected chain: deploy, call, send locally signed transactions, read events, travel in time.

    Build one with :func:`marketplace.chain.connect`; close it (or use it as a context manager) to
    stop a node it started.
    """

    def __init__(self, w3: Web3, hooks: BackendHooks, dev_accounts: list[LocalAccount]) -> None:
        self.w3 = w3
        self.kind = hooks.kind
        self.rpc_url = hooks.rpc_url
        self.accounts = dev_accounts
        self._hooks = hooks
        self.chain_id: int = w3.eth.chain_id

    # ------------------------------------------------------------------ lifecycle

    def close(self) -> None:
        """Release the backend (stops an anvil node this chain started)."""
        self._hooks.close()

    def __enter__(self) -> Chain:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ contracts

    def contract(self, artifact: str | Artifact, address: str) -> Contract:
        """A web3 contract object for the deployed ``artifact`` at ``address``."""
        art = load_artifact(artifact) if isinstance(artifact, str) else artifact
        return self.w3.eth.contract(address=Web3.to_checksum_address(address), abi=art.abi)

    def deploy(self, artifact: str | Artifact, *args: Any, sender: LocalAccount, gas: int | None = None) -> Contract:
        """Deploy ``artifact`` with constructor ``args``; returns the contract at its new address."""
        art = load_artifact(artifact) if isinstance(artifact, str) else artifact
        factory = self.w3.eth.contract(abi=art.abi, bytecode=art.bytecode)
        receipt = self.send(factory.constructor(*args), sender, gas=gas)
        return self.contract(art, receipt["contractAddress"])

    # ------------------------------------------------------------------ calls and transactions

    def call(self, fn: ContractFunction, *, sender: str | None = None, block: int | str = "latest") -> Any:
        """Run a read-only call; a revert raises :class:`ContractRevert`."""
        tx = {"from": sender} if sender else {}
        try:
            return fn.call(tx, block_identifier=block)
        except Exception as exc:
            raise_revert(exc)
            raise

    def estimate_gas(self, fn: Any, sender: str, *, value: int = 0) -> int:
        """The gas ``fn`` (a contract function or constructor, or a :class:`RawCall`) needs from ``sender``
        sending ``value`` wei, as the node estimates it (no margin: see :func:`with_gas_margin`).

        A revert raises :class:`ContractRevert`; a sender that cannot pay raises :class:`InsufficientFunds`.
        """
        try:
            return fn.estimate_gas({"from": sender, "value": value})
        except Exception as exc:
            if is_insufficient_funds(exc):
                raise self._insufficient_funds(sender) from None
            raise_revert(exc)
            raise

    def submit(self, fn: Any, sender: LocalAccount, *, gas: int | None = None, value: int = 0) -> PendingTransaction:
        """The transaction pipeline up to the node: estimate, add the margin, sign with ``sender``'s key,
        broadcast; returns without waiting (:meth:`wait` waits, :meth:`send` does it all).

        ``fn`` is a contract function or constructor, or a :class:`RawCall` (an address and calldata).
        With ``gas=None`` the gas is estimated first (a revert surfaces before anything is sent) and
        :func:`with_gas_margin` added; give ``gas`` explicitly on hot paths. A revert raises
        :class:`ContractRevert`; a sender that cannot pay the gas (or ``value``, in wei) raises
        :class:`InsufficientFunds` before anything is sent.
        """
        if gas is None:
            gas = with_gas_margin(self.estimate_gas(fn, sender.address, value=value))
        params: dict[str, Any] = {"from": sender.address, "value": value, "gas": gas}
        params["nonce"] = self.w3.eth.get_transaction_count(sender.address, "pending")
        tx = fn.build_transaction(params)
        return PendingTransaction(tx, self.broadcast(sender.sign_transaction(tx).raw_transaction))

    def send(self, fn: Any, sender: LocalAccount, *, gas: int | None = None, value: int = 0) -> TxReceipt:
        """Sign ``fn`` (a contract function or constructor, or a :class:`RawCall`) with ``sender``'s key,
        send it, wait (:meth:`submit`, then :meth:`wait`).

        With ``gas=None`` the gas is estimated first (a revert surfaces before anything is sent);
        give ``gas`` explicitly on hot paths. Any revert raises :class:`ContractRevert` (a mined
        transaction that failed is replayed to learn why); a sender that cannot pay the gas (or
        ``value``, in wei) raises :class:`InsufficientFunds` before anything is sent.
        """
        pending = self.submit(fn, sender, gas=gas, value=value)
        receipt = self.wait(pending.hash)
        if receipt["status"] == 0:
            raise self._explain_failure(pending.tx, receipt)
        return receipt

    def send_eth(self, sender: LocalAccount, to: str, value: int) -> TxReceipt:
        """Send ``value`` wei of the native coin (gas money) from ``sender`` to ``to``
        (:class:`InsufficientFunds` if ``sender`` cannot pay it and the gas)."""
        return self.send(RawCall(self, to), sender, gas=21_000, value=value)

    def send_raw(self, raw_transaction: bytes) -> TxReceipt:
        """Broadcast an already signed transaction and wait for its receipt (status not checked).

        :class:`InsufficientFunds` when its sender cannot pay its gas and value (nothing was sent).
        """
        return self.wait(self.broadcast(raw_transaction))

    def broadcast(self, raw_transaction: bytes) -> HexBytes:
        """Broadcast an already signed transaction; returns its hash without waiting.

        :class:`InsufficientFunds` when its sender cannot pay its gas and value, :class:`ContractRevert`
        when the node refuses it as a revert (nothing was sent either way).
        """
        try:
            return self.w3.eth.send_raw_transaction(raw_transaction)
        except Exception as exc:
            if is_insufficient_funds(exc):
                raise self._insufficient_funds(Account.recover_transaction(raw_transaction)) from None
            raise_revert(exc)
            raise

    def wait(self, tx_hash: HexBytes | str, *, timeout: float = 30) -> TxReceipt:
        """The receipt of the transaction ``tx_hash`` once mined (status not checked); web3's
        ``TimeExhausted`` after ``timeout`` seconds."""
        return self.w3.eth.wait_for_transaction_receipt(
            tx_hash, timeout=timeout, poll_latency=self._hooks.receipt_poll_latency
        )

    def _insufficient_funds(self, address: str) -> InsufficientFunds:
        """What to tell when ``address`` cannot pay for a transaction (its balance read now)."""
        from marketplace.chain.backends import LOCAL_CHAIN_ID  # backends build chains: import at use

        remedy = "run `agentmarket faucet`" if self.chain_id == LOCAL_CHAIN_ID else "send it ETH for gas"
        return InsufficientFunds(address, self.balance(address), self.chain_id, remedy)

    def _explain_failure(self, tx: dict[str, Any], receipt: TxReceipt) -> ContractRevert:
        """Replay a mined, failed transaction as a call on its parent state to learn why it reverted."""
        tx_hash = "0x" + bytes(receipt["transactionHash"]).hex()
        call = {k: tx[k] for k in ("from", "to", "data", "value", "gas") if k in tx}
        try:
            self.w3.eth.call(call, block_identifier=receipt["blockNumber"] - 1)
        except Exception as exc:
            revert = revert_from_exception(exc, tx_hash)
            if revert is not None:
                return revert
        if receipt["gasUsed"] >= tx.get("gas", 0):
            return ContractRevert("OutOfGas", {"gas": tx.get("gas", 0)}, b"", tx_hash)
        return ContractRevert("Unknown", {}, b"", tx_hash)

    # ------------------------------------------------------------------ events

    @staticmethod
    def events(contract: Contract, receipt: TxReceipt, event_name: str) -> list[dict[str, Any]]:
        """The ``event_name`` events ``contract`` emitted in ``receipt``, as plain dicts of args."""
        event = getattr(contract.events, event_name)()
        return [dict(log["args"]) for log in event.process_receipt(receipt, errors=DISCARD)]

    # ------------------------------------------------------------------ state and time

    def balance(self, address: str) -> int:
        """Native-coin balance of ``address`` in wei."""
        return self.w3.eth.get_balance(Web3.to_checksum_address(address))

    def block_number(self) -> int:
        """Number of the latest block."""
        return self.w3.eth.block_number

    def timestamp(self) -> int:
        """Timestamp of the latest block."""
        return self.w3.eth.get_block("latest")["timestamp"]

    def snapshot(self) -> Any:
        """Take a snapshot of the whole chain state; returns an id for :meth:`revert`."""
        return self._rpc("evm_snapshot", [])

    def revert(self, snapshot_id: Any) -> None:
        """Return the chain to a snapshot taken by :meth:`snapshot`."""
        result = self._rpc("evm_revert", [snapshot_id])
        if result is False:
            raise ChainError(f"{self.kind} chain refused to revert to snapshot {snapshot_id!r}")

    def mine(self) -> None:
        """Mine one empty block."""
        self._rpc("evm_mine", [])

    def time_travel(self, to_timestamp: int) -> None:
        """Mine a block whose timestamp is ``to_timestamp`` (must be in the future of the head)."""
        head = self.timestamp()
        if to_timestamp <= head:
            raise ChainError(f"cannot travel back in time: head is at {head}, asked for {to_timestamp}")
        self._hooks.time_travel(self.w3, to_timestamp)

    def increase_time(self, seconds: int) -> None:
        """Mine a block ``seconds`` after the head block."""
        self.time_travel(self.timestamp() + seconds)

    def _rpc(self, method: str, params: list[Any]) -> Any:
        response = self.w3.provider.make_request(method, params)
        if "error" in response:
            message = response["error"].get("message", response["error"])
            raise ChainError(f"{self.kind} chain does not support {method}: {message}")
        return response["result"]


def to_address(value: str) -> ChecksumAddress:
    """Checksum an address, with a clear error when ``value`` is not one."""
    if not Web3.is_address(value):
        raise AgentmarketError(f"not an Ethereum address: {value!r} (want 0x followed by 40 hex digits)")
    return Web3.to_checksum_address(value)


@dataclass(frozen=True)
class RawCall:
    """A transaction to ``to`` with calldata ``data`` (empty: a plain transfer), for :meth:`Chain.send`
    and :meth:`Chain.submit` where no web3 contract function exists (raw calldata from the x402 SDK,
    ETH for gas). Like a contract function it has ``estimate_gas(params)`` and ``build_transaction(params)``;
    its fees are EIP-1559: twice the head's base fee plus a 1 gwei tip."""

    chain: Chain
    to: str
    data: bytes = b""

    def estimate_gas(self, params: dict[str, Any]) -> int:
        """The node's gas estimate for this call with ``params`` (``from``, ``value``)."""
        return self.chain.w3.eth.estimate_gas({**params, "to": to_address(self.to), "data": self.data})

    def build_transaction(self, params: dict[str, Any]) -> dict[str, Any]:
        """The unsigned transaction: ``params`` (``from``, ``value``, ``gas``, ``nonce``) plus its fees."""
        base_fee = self.chain.w3.eth.get_block("latest").get("baseFeePerGas", 0)
        return {
            **params,
            "to": to_address(self.to),
            "data": self.data,
            "chainId": self.chain.chain_id,
            "maxFeePerGas": 2 * base_fee + _RAW_CALL_TIP,
            "maxPriorityFeePerGas": _RAW_CALL_TIP,
        }
