"""Turn a revert on any backend into one Python exception naming the Solidity error and its arguments.

The embedded chain (eth-tester) raises ``TransactionFailed`` with the revert bytes only inside its
message text; anvil and other JSON-RPC nodes make web3 raise ``ContractCustomError`` /
``ContractLogicError`` with ``.data``. Both end up as :class:`ContractRevert`.
"""

from __future__ import annotations

import ast
import re
from functools import cache
from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import is_checksum_address, keccak, to_checksum_address
from web3.exceptions import ContractCustomError, ContractLogicError, ContractPanicError

from marketplace.chain.artifacts import artifact_names, load_artifact
from marketplace.errors import AgentmarketError

_ERROR_STRING_SELECTOR = keccak(text="Error(string)")[:4]
_PANIC_SELECTOR = keccak(text="Panic(uint256)")[:4]


class ChainError(AgentmarketError):
    """A chain could not be reached or did not behave as a chain should."""


class InsufficientFunds(ChainError):
    """The sender cannot pay for a transaction: its gas at the current fee (plus any value sent).

    ``address`` is the sender, ``balance`` its native-coin balance in wei, ``chain_id`` the chain's id,
    ``remedy`` what to do (e.g. "run `agentmarket faucet`" on a local chain). Raised by
    :meth:`~marketplace.chain.chain.Chain.send` and the other sending methods before anything is sent,
    whatever the backend says (anvil and other nodes: JSON-RPC error -32003 "insufficient funds for gas
    * price + value"; the embedded chain: "cannot afford txn gas").
    """

    def __init__(self, address: str, balance: int, chain_id: int, remedy: str) -> None:
        self.address, self.balance, self.chain_id = address, balance, chain_id
        where = f"on chain {chain_id}"
        if balance == 0:
            super().__init__(f"{address} has no ETH to pay gas {where}: {remedy}")
        else:
            eth = f"{balance / 10**18:.6g}"
            super().__init__(f"{address} has {eth} ETH, not enough to pay this transaction's gas {where}: {remedy}")


_INSUFFICIENT_FUNDS = re.compile(r"insufficient funds|cannot afford txn gas|not have enough balance", re.IGNORECASE)


def is_insufficient_funds(exc: BaseException) -> bool:
    """True if a backend's exception says the sender cannot pay the gas (or value) of a transaction."""
    return bool(_INSUFFICIENT_FUNDS.search(str(exc)))


class ContractRevert(AgentmarketError):
    """A contract call or transaction reverted.

    ``error`` is the Solidity error name (``Error`` for a require string, ``Panic`` for a panic,
    ``Unknown`` when the selector is not in any artifact), ``args`` its decoded arguments by name.
    """

    def __init__(self, error: str, args: dict[str, Any], data: bytes, tx_hash: str | None = None) -> None:
        self.error = error
        self.args_by_name = args
        self.data = data
        self.tx_hash = tx_hash
        rendered = ", ".join(f"{k}={_render(v)}" for k, v in args.items())
        super().__init__(f"reverted with {error}({rendered})")


def _render(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, str) and not is_checksum_address(value):
        return repr(value)
    return str(value)


def _abi_type(param: dict[str, Any]) -> str:
    """Canonical ABI type of a parameter, expanding tuples."""
    kind = param["type"]
    if kind.startswith("tuple"):
        inner = ",".join(_abi_type(c) for c in param["components"])
        return f"({inner}){kind[len('tuple') :]}"
    return kind


@cache
def _error_registry() -> dict[bytes, tuple[str, list[str], list[str]]]:
    """selector -> (error name, argument names, argument types) over every artifact's ABI."""
    registry: dict[bytes, tuple[str, list[str], list[str]]] = {}
    for name in artifact_names():
        for entry in load_artifact(name).abi:
            if entry.get("type") != "error":
                continue
            types = [_abi_type(p) for p in entry["inputs"]]
            selector = keccak(text=f"{entry['name']}({','.join(types)})")[:4]
            names = [p["name"] or f"arg{i}" for i, p in enumerate(entry["inputs"])]
            registry[selector] = (entry["name"], names, types)
    return registry


def decode_revert_data(data: bytes, tx_hash: str | None = None) -> ContractRevert:
    """Decode raw revert bytes into a :class:`ContractRevert`."""
    selector, body = data[:4], data[4:]
    if selector == _ERROR_STRING_SELECTOR:
        (reason,) = abi_decode(["string"], body)
        return ContractRevert("Error", {"reason": reason}, data, tx_hash)
    if selector == _PANIC_SELECTOR:
        (code,) = abi_decode(["uint256"], body)
        return ContractRevert("Panic", {"code": hex(code)}, data, tx_hash)
    known = _error_registry().get(selector)
    if known is None:
        return ContractRevert("Unknown", {"data": data} if data else {}, data, tx_hash)
    name, names, types = known
    values = [
        to_checksum_address(v) if t == "address" else v for t, v in zip(types, abi_decode(types, body), strict=True)
    ]
    return ContractRevert(name, dict(zip(names, values, strict=True)), data, tx_hash)


_BYTES_IN_MESSAGE = re.compile(r"(b'(?:[^'\\]|\\.)*'|b\"(?:[^\"\\]|\\.)*\")")


def revert_from_exception(exc: BaseException, tx_hash: str | None = None) -> ContractRevert | None:
    """The :class:`ContractRevert` hidden in a backend's exception, or None if it is not a revert."""
    if isinstance(exc, ContractRevert):
        return exc
    if isinstance(exc, ContractCustomError | ContractPanicError | ContractLogicError):
        data = exc.data
        if isinstance(data, str) and data.startswith("0x"):
            return decode_revert_data(bytes.fromhex(data[2:]), tx_hash)
        if isinstance(data, bytes | bytearray):
            return decode_revert_data(bytes(data), tx_hash)
        return ContractRevert("Error", {"reason": str(exc)}, b"", tx_hash)
    if type(exc).__name__ == "TransactionFailed":  # eth_tester.exceptions, imported lazily
        message = str(exc.args[0]) if exc.args else ""
        match = _BYTES_IN_MESSAGE.search(message)
        if match:
            return decode_revert_data(ast.literal_eval(match.group(1)), tx_hash)
        reason = message.removeprefix("execution reverted").lstrip(": ")
        return ContractRevert("Error", {"reason": reason} if reason else {}, b"", tx_hash)
    return None


def raise_revert(exc: BaseException, tx_hash: str | None = None) -> None:
    """Raise the :class:`ContractRevert` hidden in a backend's exception ``exc`` (its chain of causes
    cut), if it is a revert; return if not, for the caller to re-raise ``exc``::

        except Exception as exc:
            raise_revert(exc)
            raise
    """
    revert = revert_from_exception(exc, tx_hash)
    if revert is not None:
        raise revert from None
