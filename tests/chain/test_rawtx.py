"""The raw transaction signer and the batch sender (marketplace.chain.rawtx) against eth-account and both chains."""

from __future__ import annotations

import pytest
from eth_account import Account
from web3 import Web3

from marketplace.chain import ContractRevert
from marketplace.chain.rawtx import BatchSender, Calldata, RawSigner
from marketplace.chain.units import to_units


@pytest.mark.parametrize(
    ("nonce", "value", "data", "gas"),
    [
        (0, 0, b"", 21_000),
        (1, 10**18, b"\x00\x01", 100_000),
        (2**40, 1, bytes(range(256)) * 3, 3_000_000),
        (127, 0x7F, b"\x05", 21_000),
        (128, 0x80, b"\x80", 21_000),
        (55, 2**256 - 1, b"\xff" * 55, 60_000),
        (56, 256, b"\x01" * 56, 60_000),
        (3, 3, b"\x01" * 70_000, 3_000_000),
    ],
)
def test_signature_is_byte_identical_to_eth_account(nonce: int, value: int, data: bytes, gas: int) -> None:
    """coincurve on the hand-built EIP-1559 digest signs exactly what eth-account's sign_transaction signs."""
    account = Account.from_key(b"\x11" * 32)
    to = "0x" + "ab" * 20
    ours = RawSigner(account).sign(chain_id=31337, nonce=nonce, to=to, data=data, gas=gas, max_fee=3 * 10**9,
                                   tip=10**9, value=value)  # fmt: skip
    theirs = account.sign_transaction({"type": 2, "chainId": 31337, "nonce": nonce, "to": Web3.to_checksum_address(to),
                                       "data": data, "gas": gas, "maxFeePerGas": 3 * 10**9,
                                       "maxPriorityFeePerGas": 10**9, "value": value, "accessList": []})  # fmt: skip
    assert ours == bytes(theirs.raw_transaction)


def test_calldata_matches_web3_encoding(chain, market) -> None:
    """eth_abi calldata from the ABI equals web3's contract-object encoding."""
    calldata = Calldata(market.token.contract.abi)
    to = chain.accounts[1].address
    assert calldata.encode("approve", to, 5) == bytes.fromhex(market.token.contract.encode_abi("approve", [to, 5])[2:])
    with pytest.raises(KeyError, match="no function"):
        calldata.encode("noSuchFunction")


def test_batch_sends_checks_receipts_and_fails_loudly(chain, market) -> None:
    """A batch moves exactly what it says on the real token; a transaction that reverts stops the flush with
    the contract's own error (no silent skip)."""
    sender = BatchSender(chain)
    calldata = Calldata(market.token.contract.abi)
    deployer, payee = chain.accounts[0], chain.accounts[2].address
    before = market.token.balance_of(payee)
    for _ in range(5):
        sender.queue(deployer, market.token.address, calldata.encode("mint", payee, to_units(1)), gas=200_000)
    flushed = sender.flush()
    assert market.token.balance_of(payee) - before == to_units(5)
    assert len(flushed.receipts) == 5 and flushed.gas_used > 0
    broke = chain.accounts[3]  # holds no tUSD: the transfer reverts on chain
    sender.queue(broke, market.token.address, calldata.encode("transfer", payee, 1), gas=200_000, label="broke pays")
    with pytest.raises(ContractRevert) as failed:
        sender.flush()
    assert "ERC20InsufficientBalance" in failed.value.error
    assert any("broke pays" in note for note in failed.value.__notes__)
