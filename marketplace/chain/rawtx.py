"""Transactions at volume: calldata encoded with eth_abi, EIP-1559 transactions signed with coincurve on a
hand-built digest, nonces tracked locally, and batches sent at once (a JSON-RPC batch on a node) with every
receipt checked.

:meth:`Chain.send <marketplace.chain.chain.Chain.send>` estimates gas, reads the nonce and waits for each
receipt: right for one payment, ~100 transactions/s at best. A simulation of thousands of agents sends
tens of thousands, so here:

- :class:`Calldata` encodes a contract function call from the contract's ABI (the 4-byte selector and
  ``eth_abi.encode`` of the arguments: 6-44 µs against ~200-400 µs through a web3 contract object);
- :class:`RawSigner` signs an EIP-1559 (EIP-2718 type 2) transaction: the RLP payload is built and hashed by hand and
  signed with libsecp256k1 through coincurve (RFC 6979, low s), byte-identical to eth-account's
  ``sign_transaction`` (a test proves it) at ~50 µs instead of ~370 µs;
- :class:`BatchSender` queues signed transactions (each sender's nonce counted here, read from the chain
  once) and :meth:`BatchSender.flush` sends them, then checks every receipt: a failed transaction raises
  :class:`~marketplace.chain.errors.ContractRevert` (replayed to say why) naming it, so a run never goes on
  past a payment that did not happen.

Transactions queued together must not depend on one another's effects unless they share a sender (the
nonce orders those): a node may execute one batch's requests concurrently (anvil does; the repository's
anvil runs with ``--order fifo``). Put a transaction that needs another sender's in a later flush.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import requests
from coincurve import PrivateKey
from eth_abi import decode, encode
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_canonical_address

from marketplace.chain.chain import Chain, to_address
from marketplace.chain.errors import ChainError

#: The priority fee (wei per gas) of every transaction sent here (as :class:`~marketplace.chain.chain.RawCall`).
TIP = 10**9
#: The lowest fee cap (wei per gas) of every transaction sent here.
MAX_FEE_FLOOR = 100 * 10**9
#: The block gas limit set on a node (one segment of a flush is mined as one block).
BLOCK_GAS_LIMIT = 300_000_000
#: The most transactions of one sender in a node's pool at once.
MAX_PER_SENDER = 256
#: The most transactions mined in one block (one segment of a flush): anvil builds a block's receipts in time
#: quadratic in its transactions (250: ~70 us each; 1,000: ~270 us; 4,000: ~3 ms), so blocks stay small.
MAX_PER_BLOCK = 250
#: Requests per JSON-RPC batch sent to a node.
RPC_BATCH = 500
#: Raw transaction bytes per batch (hex doubles them on the wire; anvil refuses bodies of a few MB).
RPC_BATCH_BYTES = 200_000


def _abi_type(item: dict[str, Any]) -> str:
    """The canonical type of one ABI input (tuples spelled out), as in a function signature."""
    kind = item["type"]
    if kind.startswith("tuple"):
        return "(" + ",".join(_abi_type(c) for c in item["components"]) + ")" + kind[len("tuple") :]
    return kind


class Calldata:
    """Encode calls to one contract's functions from its ABI: ``calldata.encode("buy", 1, 2) -> bytes``.

    Raises ``KeyError`` naming an unknown or overloaded function (an overloaded name is ambiguous)."""

    def __init__(self, abi: Sequence[dict[str, Any]]) -> None:
        self._functions: dict[str, tuple[bytes, list[str]]] = {}
        self._outputs: dict[str, list[str]] = {}
        self._overloaded: set[str] = set()
        for item in abi:
            if item.get("type") != "function":
                continue
            name = item["name"]
            if name in self._functions:  # overloaded: ambiguous by name, so not encodable here
                self._overloaded.add(name)
            types = [_abi_type(i) for i in item["inputs"]]
            selector = keccak(f"{name}({','.join(types)})".encode())[:4]
            self._functions[name] = (selector, types)
            self._outputs[name] = [_abi_type(o) for o in item.get("outputs", [])]

    def encode(self, function: str, *args: Any) -> bytes:
        """The calldata of ``function(*args)``: selector ‖ ABI-encoded arguments."""
        if function in self._overloaded:
            raise KeyError(f"function {function!r} is overloaded: this encoder takes unambiguous names only")
        try:
            selector, types = self._functions[function]
        except KeyError:
            raise KeyError(f"the contract has no function {function!r}") from None
        return selector + encode(types, list(args))

    def decode(self, function: str, data: bytes) -> tuple[Any, ...]:
        """What ``function`` returned (``data``, ABI-encoded), as a tuple of its outputs."""
        return tuple(decode(self._outputs[function], data))


class RawSigner:
    """Signs EIP-1559 transactions for one key with coincurve (byte-identical to eth-account's)."""

    def __init__(self, account: LocalAccount) -> None:
        self.address = account.address
        self._key = PrivateKey(bytes(account.key))

    def sign(
        self,
        *,
        chain_id: int,
        nonce: int,
        to: str,
        data: bytes,
        gas: int,
        max_fee: int,
        tip: int = TIP,
        value: int = 0,
    ) -> bytes:
        """The signed raw transaction (``0x02 ‖ rlp([...])``, EIP-2718/EIP-1559) with an empty access list.

        The digest is ``keccak(0x02 ‖ rlp([chainId, nonce, maxPriorityFeePerGas, maxFeePerGas, gas, to, value,
        data, accessList]))``; the signature's y parity, r and s are appended to that list."""
        # RLP of integers is their minimal big-endian bytes; the fields are strings and the access list an
        # empty list (0xc0), so the payload is their encodings end to end (EIP-1559's field order).
        payload = b"".join([_rlp(_be(chain_id)), _rlp(_be(nonce)), _rlp(_be(tip)), _rlp(_be(max_fee)), _rlp(_be(gas)),
                            _rlp(_address(to)), _rlp(_be(value)), _rlp(data), b"\xc0"])  # fmt: skip
        digest = keccak(b"\x02" + _rlp_list(payload))
        signature = self._key.sign_recoverable(digest, hasher=None)  # r ‖ s ‖ recovery id
        r, s = signature[:32].lstrip(b"\x00"), signature[32:64].lstrip(b"\x00")
        return b"\x02" + _rlp_list(payload + _rlp(_be(signature[64])) + _rlp(r) + _rlp(s))


@dataclass
class _Queued:
    label: str
    raw: bytes
    tx_hash: bytes
    tx: dict[str, Any]


@dataclass
class Flushed:
    """What one :meth:`BatchSender.flush` sent: receipts in the order queued (dicts with ``status``,
    ``gasUsed``, ``logs``, hex strings on a node), their labels, and the gas they used."""

    receipts: list[dict[str, Any]] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    gas_used: int = 0


class BatchSender:
    """Queue signed transactions and send them in batches; every receipt is checked.

    One sender per chain and run: it owns the nonces of the accounts it signs for (read from the chain the
    first time, or told with :meth:`fresh` for accounts known to have sent nothing).
    ``max_fee`` (wei per
    gas) defaults to a hundred times the head's base fee (at least :data:`MAX_FEE_FLOOR`) plus :data:`TIP`.
    ``gas_used`` and ``sent`` count everything flushed.
    """

    def __init__(self, chain: Chain, *, max_fee: int | None = None) -> None:
        self.chain = chain
        self.chain_id = chain.chain_id
        self.base_fee = int(chain.w3.eth.get_block("latest").get("baseFeePerGas", 0))
        if max_fee is None:
            max_fee = max(100 * self.base_fee, MAX_FEE_FLOOR) + TIP
        self.max_fee = max_fee
        self.gas_used = 0
        self.sent = 0
        self._nonces: dict[str, int] = {}
        self._signers: dict[str, RawSigner] = {}
        self._queue: list[_Queued] = []
        self._session = requests.Session() if chain.rpc_url else None
        if self._session is not None:
            self._rpc([("evm_setBlockGasLimit", [hex(BLOCK_GAS_LIMIT)])])

    def fresh(self, address: str) -> None:
        """Note that ``address`` has sent no transaction yet (its next nonce is 0), saving a read."""
        self._nonces.setdefault(to_address(address), 0)

    def queue(self, sender: LocalAccount, to: str, data: bytes = b"", *, gas: int, value: int = 0,
              label: str = "") -> None:  # fmt: skip
        """Sign a transaction from ``sender`` to ``to`` (``data``, ``gas`` limit, ``value`` wei) and queue it."""
        address = sender.address
        signer = self._signers.get(address)
        if signer is None:
            signer = self._signers[address] = RawSigner(sender)
        nonce = self._nonces.get(address)
        if nonce is None:
            nonce = self.chain.w3.eth.get_transaction_count(address, "pending")
        self._nonces[address] = nonce + 1
        raw = signer.sign(chain_id=self.chain_id, nonce=nonce, to=to, data=data, gas=gas, max_fee=self.max_fee,
                          value=value)  # fmt: skip
        tx = {"from": address, "to": to, "data": data, "value": value, "gas": gas}
        self._queue.append(_Queued(label or f"transaction from {address}", raw, keccak(raw), tx))

    @property
    def pending(self) -> int:
        """Transactions queued and not yet flushed."""
        return len(self._queue)

    def flush(self) -> Flushed:
        """Send everything queued, wait for every receipt, check them; returns them in queue order.

        Raises :class:`ContractRevert` (why, from a replay of the transaction) for the first one that failed,
        :class:`ChainError` when the node refused one or no receipt came within 60 s. A failure stops the
        run: the sender's nonces are no longer trustworthy.
        """
        queued, self._queue = self._queue, []
        if not queued:
            return Flushed()
        receipts = self._flush_rpc(queued) if self._session is not None else [self._send_one(item) for item in queued]
        flushed = Flushed(labels=[q.label for q in queued])
        for item, receipt in zip(queued, receipts, strict=True):
            if _int(receipt["status"]) != 1:
                mined = {"transactionHash": item.tx_hash, "blockNumber": _int(receipt["blockNumber"]),
                         "gasUsed": _int(receipt["gasUsed"])}  # fmt: skip
                revert = self.chain._explain_failure(item.tx, mined)  # type: ignore[arg-type]  # the chain's replay
                revert.add_note(f"failed: {item.label}")
                raise revert
            flushed.gas_used += _int(receipt["gasUsed"])
        flushed.receipts = receipts
        self.gas_used += flushed.gas_used
        self.sent += len(queued)
        return flushed

    def call_many(self, calls: Sequence[tuple[str, bytes]]) -> list[bytes]:
        """Read-only calls (contract address, calldata) at the head; their return data, in order (one
        JSON-RPC batch per :data:`RPC_BATCH` calls on a node). Raises :class:`ChainError` for a call that
        reverted."""
        if self._session is None:
            return [bytes(self.chain.w3.eth.call({"to": to_address(to), "data": data})) for to, data in calls]
        results: list[bytes] = []
        for start in range(0, len(calls), RPC_BATCH):
            chunk = calls[start : start + RPC_BATCH]
            answers = self._rpc([("eth_call", [{"to": to, "data": "0x" + d.hex()}, "latest"]) for to, d in chunk])
            for (to, _data), answer in zip(chunk, answers, strict=True):
                if "error" in answer:
                    raise ChainError(f"a read of {to} failed: {answer['error'].get('message', answer)}")
                results.append(bytes.fromhex(answer["result"][2:]))
        return results

    def blocks(self, first: int, last: int) -> list[tuple[int, int]]:
        """(gas used, transaction count) of every block from ``first`` to ``last``, read in batches on a node."""
        if self._session is None:
            found = []
            for number in range(first, last + 1):
                block = self.chain.w3.eth.get_block(number)
                found.append((int(block["gasUsed"]), len(block["transactions"])))
            return found
        numbers = list(range(first, last + 1))
        found = []
        for start in range(0, len(numbers), RPC_BATCH):
            chunk = numbers[start : start + RPC_BATCH]
            for answer in self._rpc([("eth_getBlockByNumber", [hex(n), False]) for n in chunk]):
                block = answer["result"]
                found.append((int(block["gasUsed"], 16), len(block["transactions"])))
        return found

    def _send_one(self, item: _Queued) -> dict[str, Any]:
        """Embedded chain: it mines every transaction as it arrives."""
        tx_hash = self.chain.broadcast(item.raw)
        return dict(self.chain.w3.eth.get_transaction_receipt(tx_hash))

    def _rpc(self, calls: list[tuple[str, list[Any]]]) -> list[dict[str, Any]]:
        """One JSON-RPC batch; the answers in the order of ``calls``."""
        assert self._session is not None and self.chain.rpc_url is not None
        body = [{"jsonrpc": "2.0", "id": i, "method": m, "params": p} for i, (m, p) in enumerate(calls)]
        response = self._session.post(self.chain.rpc_url, json=body, timeout=120)
        response.raise_for_status()
        answers = response.json()
        if not isinstance(answers, list):
            raise ChainError(f"the node answered a batch of {len(calls)} {calls[0][0]} with {answers}")
        return sorted(answers, key=lambda a: a["id"])

    def _flush_rpc(self, queued: list[_Queued]) -> list[dict[str, Any]]:
        """:meth:`_flush_segment` by segments that fit in one block (gas limits summed, at most
        :data:`MAX_PER_BLOCK` transactions) and hold at most :data:`MAX_PER_SENDER` transactions of one sender:
        anvil's pool silently drops transactions that a block mined on request leaves out. Automine is off
        for the whole flush (anvil's automine, fed a batch, leaves ready transactions in its pool for good or
        loses some: foundry-rs/foundry#10122) and back on after it."""
        segments: list[list[_Queued]] = [[]]
        counts: dict[str, int] = {}
        gas = 0
        for item in queued:
            sender = item.tx["from"]
            full = len(segments[-1]) >= MAX_PER_BLOCK or gas + item.tx["gas"] > BLOCK_GAS_LIMIT
            if segments[-1] and (full or counts.get(sender, 0) >= MAX_PER_SENDER):
                segments.append([])
                counts, gas = {}, 0
            segments[-1].append(item)
            counts[sender] = counts.get(sender, 0) + 1
            gas += item.tx["gas"]
        _off, head = self._rpc([("evm_setAutomine", [False]), ("eth_blockNumber", [])])
        seen = int(head["result"], 16)  # receipts are read from every block mined after this one
        receipts: list[dict[str, Any]] = []
        try:
            for segment in segments:
                got, seen = self._flush_segment(segment, seen)
                receipts += got
        finally:
            self._rpc([("evm_setAutomine", [True])])
        return receipts

    def _flush_segment(self, queued: list[_Queued], seen: int) -> tuple[list[dict[str, Any]], int]:
        """A node with automine off: every transaction into the pool (batched, with the next block's base fee),
        then blocks mined on request until every receipt is there; returns the receipts and the last block
        read (``seen`` is the one before). The base fee of each block mined here is held at the one the sender
        started with: full blocks would raise it 12.5% each, past any fee cap."""
        chunks = _chunks(queued)
        for number, chunk in enumerate(chunks):
            calls = [("eth_sendRawTransaction", ["0x" + q.raw.hex()]) for q in chunk]
            if number == len(chunks) - 1:  # the same round trip sets the base fee of the block mined next
                calls.append(("anvil_setNextBlockBaseFeePerGas", [hex(self.base_fee)]))
            answers = self._rpc(calls)
            for item, answer in zip(chunk, answers, strict=False):
                if "error" in answer:
                    raise ChainError(f"the node refused {item.label}: {answer['error'].get('message', answer)}")
        index_of = {"0x" + q.tx_hash.hex(): i for i, q in enumerate(queued)}
        receipts: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + 120
        first = True
        while len(receipts) < len(queued):
            if time.monotonic() > deadline:
                (status,) = self._rpc([("txpool_status", [])])
                item = next(q for i, q in enumerate(queued) if i not in receipts)
                raise ChainError(f"no receipt within 120 s for {len(queued) - len(receipts)} transactions, the "
                                 f"first {item.label} (the node's pool: {status.get('result', status)})")  # fmt: skip
            if not first:
                self._rpc([("anvil_setNextBlockBaseFeePerGas", [hex(self.base_fee)])])
            first = False
            self._rpc([("evm_mine", [])])
            # The block just mined is normally the only new one: its receipts come with the head's number.
            head, block = self._rpc([("eth_blockNumber", []), ("eth_getBlockReceipts", [hex(seen + 1)])])
            last = int(head["result"], 16)
            blocks = [block] + (self._rpc([("eth_getBlockReceipts", [hex(n)]) for n in range(seen + 2, last + 1)])
                                if last > seen + 1 else [])  # fmt: skip
            for found in blocks:
                for receipt in found.get("result") or []:
                    index = index_of.get(receipt["transactionHash"])
                    if index is not None:
                        receipts[index] = receipt
            seen = max(seen, last)
        return [receipts[i] for i in range(len(queued))], seen


def _chunks(items: list[_Queued]) -> list[list[_Queued]]:
    """``items`` in batches of at most :data:`RPC_BATCH` transactions and :data:`RPC_BATCH_BYTES` of raw bytes
    (a node refuses a request body beyond its limit)."""
    chunks: list[list[_Queued]] = []
    size = 0
    for item in items:
        if not chunks or len(chunks[-1]) >= RPC_BATCH or size + len(item.raw) > RPC_BATCH_BYTES:
            chunks.append([])
            size = 0
        chunks[-1].append(item)
        size += len(item.raw)
    return chunks


def _rlp(item: bytes) -> bytes:
    """The RLP encoding of one byte string (the Ethereum Yellow Paper, appendix B)."""
    size = len(item)
    if size == 1 and item[0] < 0x80:
        return item
    if size < 56:
        return bytes([0x80 + size]) + item
    length = _be(size)
    return bytes([0xB7 + len(length)]) + length + item


def _rlp_list(payload: bytes) -> bytes:
    """The RLP encoding of a list whose items' encodings, end to end, are ``payload``."""
    size = len(payload)
    if size < 56:
        return bytes([0xC0 + size]) + payload
    length = _be(size)
    return bytes([0xF7 + len(length)]) + length + payload


@functools.lru_cache(maxsize=4096)
def _address(address: str) -> bytes:
    """A hex address's 20 bytes (validated once per address)."""
    return to_canonical_address(address)


def _be(value: int) -> bytes:
    """``value`` as RLP wants an integer: big-endian, no leading zero bytes (0 is empty)."""
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


def _int(value: Any) -> int:
    """A receipt field as an int (a node sends hex strings, the embedded chain ints)."""
    return int(value, 16) if isinstance(value, str) else int(value)


def topic_id(receipt: dict[str, Any], emitter: str, topic0: bytes) -> list[int]:
    """The first indexed argument (a uint256 id) of every log of ``emitter`` with event signature hash
    ``topic0`` in ``receipt`` (e.g. ``AssetPublished``'s ``assetId``, ``ChannelOpened``'s ``channelId``)."""
    found = []
    for log in receipt["logs"]:
        topics = [bytes.fromhex(t[2:]) if isinstance(t, str) else bytes(t) for t in log["topics"]]
        if log["address"].lower() == emitter.lower() and topics and topics[0] == topic0:
            found.append(int.from_bytes(topics[1], "big"))
    return found
