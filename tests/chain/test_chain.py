"""The chain layer: error decoding, snapshots, time travel, manifests, node lifecycle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from eth_abi import encode
from eth_account import Account
from eth_utils import keccak

from marketplace.chain import AnvilNode, ChainError, ContractRevert, InsufficientFunds, connect, decode_revert_data
from marketplace.chain.chain import with_gas_margin
from marketplace.chain.deployment import DeploymentError, load_deployment, read_manifest
from marketplace.chain.identity import ChainIdentity
from marketplace.chain.units import caip2
from marketplace.payments.x402 import ChainFacilitatorSigner


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie still answers kill(0); it is dead for our purposes
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


# ---------------------------------------------------------------------- revert decoding (all backends)


def test_revert_on_estimate_and_on_mined_failure_decode_alike(chain, token, alice):
    with pytest.raises(ContractRevert) as estimated:
        token.mint(alice, alice.address, 5)
    with pytest.raises(ContractRevert) as mined:
        chain.send(token.contract.functions.mint(alice.address, 5), alice, gas=120_000)
    assert estimated.value.error == mined.value.error == "AccessControlUnauthorizedAccount"
    assert estimated.value.args_by_name == mined.value.args_by_name
    assert mined.value.tx_hash is not None and mined.value.tx_hash.startswith("0x")
    assert "AccessControlUnauthorizedAccount(account=" + alice.address in str(mined.value)


def test_revert_in_call_decodes(chain, token, alice, bob):
    fn = token.contract.functions.transferFrom(alice.address, bob.address, 1)
    with pytest.raises(ContractRevert) as info:
        chain.call(fn, sender=bob.address)
    assert info.value.error == "ERC20InsufficientAllowance"
    assert info.value.args_by_name == {"spender": bob.address, "allowance": 0, "needed": 1}


def test_a_sender_without_gas_money_gets_insufficient_funds_before_anything_is_sent(chain, token, admin, alice):
    """Issue 13 §4: a wallet with no ETH got a 40-line traceback ending in "Insufficient funds for gas"."""
    poor = Account.create()
    token.transfer(alice, poor.address, 5)
    nonce = chain.w3.eth.get_transaction_count(poor.address)
    attempts = {
        "estimated": lambda: token.approve(poor, admin.address, 5),
        "explicit gas": lambda: chain.send(token.contract.functions.transfer(admin.address, 5), poor, gas=100_000),
        "ether": lambda: chain.send_eth(poor, admin.address, 1),
    }
    for what, attempt in attempts.items():
        with pytest.raises(InsufficientFunds) as refused:
            attempt()
        assert (refused.value.address, refused.value.balance, refused.value.chain_id) == (poor.address, 0, 31337), what
        assert str(refused.value) == f"{poor.address} has no ETH to pay gas on chain 31337: run `agentmarket faucet`"
    chain.send_eth(admin, poor.address, 10**9)  # some gas money, not enough for a transfer
    with pytest.raises(InsufficientFunds, match=r"has 1e-09 ETH, not enough to pay this transaction's gas"):
        token.approve(poor, admin.address, 5)
    assert chain.w3.eth.get_transaction_count(poor.address) == nonce  # nothing was sent
    assert token.balance_of(poor.address) == 5


def test_the_x402_signer_sends_raw_calldata_through_the_chain_pipeline(chain, token, admin, alice, bob):
    """Issue 14 §4: the facilitator's signer had its own estimate/sign/send copy. Its raw calldata now takes
    Chain.submit: a revert surfaces before anything is sent, decoded (its text says "reverted", which the x402
    SDK reads as a revert), the gas limit has Chain.send's margin, a relayer without ETH gets InsufficientFunds."""
    signer = ChainFacilitatorSigner(chain, alice)
    too_much = token.balance_of(alice.address) + 1
    overdraw = token.contract.functions.transfer(bob.address, too_much)._encode_transaction_data()
    nonce = chain.w3.eth.get_transaction_count(alice.address)
    with pytest.raises(ContractRevert, match="reverted") as reverted:
        signer.send_transaction(token.address, bytes.fromhex(overdraw[2:]))
    assert reverted.value.error == "ERC20InsufficientBalance"
    assert reverted.value.args_by_name["needed"] == too_much
    assert chain.w3.eth.get_transaction_count(alice.address) == nonce  # nothing was sent

    token.mint(admin, alice.address, 5)
    pay = token.contract.functions.transfer(bob.address, 5)
    estimate = chain.estimate_gas(pay, alice.address)
    before = token.balance_of(bob.address)
    tx_hash = signer.send_transaction(token.address, bytes.fromhex(pay._encode_transaction_data()[2:]))
    assert signer.wait_for_transaction_receipt(tx_hash).status == 1
    assert chain.w3.eth.get_transaction(tx_hash)["gas"] == with_gas_margin(estimate) == estimate * 5 // 4
    assert token.balance_of(bob.address) - before == 5

    poor = Account.create()
    token.mint(admin, poor.address, 5)  # the transfer itself would succeed: only the gas is missing
    with pytest.raises(InsufficientFunds) as refused:
        ChainFacilitatorSigner(chain, poor).send_transaction(
            token.address, bytes.fromhex(pay._encode_transaction_data()[2:])
        )
    assert (refused.value.address, refused.value.balance) == (poor.address, 0)
    assert chain.w3.eth.get_transaction_count(poor.address) == 0


def test_caip2_ids_are_built_in_one_place(chain):
    assert caip2(chain.chain_id) == "eip155:31337" == caip2(31337)
    identity = ChainIdentity.of(chain)
    assert str(identity).startswith("eip155:31337/genesis:0x") and ChainIdentity.parse(str(identity)) == identity


def test_decode_error_string_panic_and_unknown():
    reason = keccak(text="Error(string)")[:4] + encode(["string"], ["nope"])
    assert decode_revert_data(reason).args_by_name == {"reason": "nope"}
    panic = decode_revert_data(keccak(text="Panic(uint256)")[:4] + encode(["uint256"], [0x11]))
    assert (panic.error, panic.args_by_name) == ("Panic", {"code": "0x11"})
    assert decode_revert_data(b"\xde\xad\xbe\xef").error == "Unknown"


# ---------------------------------------------------------------------- state and time (all backends)


def test_snapshot_and_revert_restore_state(chain, token, admin, bob):
    snapshot = chain.snapshot()
    token.mint(admin, bob.address, 123)
    assert token.balance_of(bob.address) == 123
    chain.revert(snapshot)
    assert token.balance_of(bob.address) == 0


def test_time_travel_mines_exact_timestamp_and_refuses_the_past(chain):
    target = chain.timestamp() + 1_000
    chain.time_travel(target)
    assert chain.timestamp() == target
    chain.increase_time(10)
    assert chain.timestamp() == target + 10
    with pytest.raises(ChainError, match="back in time"):
        chain.time_travel(target)


# ---------------------------------------------------------------------- manifests (all backends)


def test_manifest_round_trip_and_mismatches(chain, deployment, tmp_path):
    path = deployment.save(tmp_path / "deployment.json")
    loaded = load_deployment(path, chain)
    assert loaded.address("TestUSD") == deployment.address("TestUSD")
    assert read_manifest(path).deploy_block == deployment.deploy_block >= 1

    other_chain = json.loads(path.read_text()) | {"chainId": 8453}
    (tmp_path / "other.json").write_text(json.dumps(other_chain))
    with pytest.raises(DeploymentError, match=r"chain id 8453.*chain id 31337"):
        load_deployment(tmp_path / "other.json", chain)

    moved = json.loads(path.read_text())
    moved["contracts"]["TestUSD"]["address"] = chain.accounts[5].address
    (tmp_path / "moved.json").write_text(json.dumps(moved))
    with pytest.raises(DeploymentError, match=r"TestUSD .* has no code"):
        load_deployment(tmp_path / "moved.json", chain)

    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DeploymentError, match="malformed"):
        read_manifest(tmp_path / "bad.json")


# ---------------------------------------------------------------------- connecting


def test_unreachable_rpc_names_the_url():
    with pytest.raises(ChainError, match=r"http://127\.0\.0\.1:9/ .*check the URL"):
        connect("http://127.0.0.1:9/")


def test_unknown_target_is_refused():
    with pytest.raises(ChainError, match="embedded"):
        connect("ganache")


def test_missing_anvil_binary_says_how_to_install(monkeypatch, tmp_path):
    monkeypatch.setenv("AGENTMARKET_ANVIL", str(tmp_path / "no-anvil"))
    with pytest.raises(ChainError, match="npm ci --prefix contracts"):
        connect("anvil")


@pytest.mark.backend("anvil")
def test_anvil_node_stops_and_rpc_backend_connects():
    with AnvilNode() as node:
        pid = node.pid
        with connect(node.url) as chain:
            assert (chain.kind, chain.chain_id) == ("rpc", 31337)
            assert chain.balance(chain.accounts[9].address) == 10_000 * 10**18
    assert not _pid_alive(pid)


@pytest.mark.backend("anvil")
def test_anvil_dies_with_its_owner_even_on_sigkill(tmp_path):
    script = (
        "from marketplace.chain import AnvilNode; import time\n"
        "node = AnvilNode(); node.start(); print(node.pid, flush=True); time.sleep(60)"
    )
    owner = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        anvil_pid = int(owner.stdout.readline())
        assert _pid_alive(anvil_pid)
        owner.kill()
        owner.wait()
        deadline = time.monotonic() + 5
        while _pid_alive(anvil_pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _pid_alive(anvil_pid), "anvil outlived its owner"
    finally:
        owner.kill()
