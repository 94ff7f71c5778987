"""``kill -9`` the server while paid calls are in flight, restart it: every answered call is still paid.

A real ``agentmarket node`` and ``agentmarket serve --model ID=time:sleep`` run as subprocesses.
Four threads call the model, each paying on its own channel (opened with the ``receiverAuthorizer``
the server advertises in ``GET /v1/payments``) with vouchers for what it was answered so far plus
this call. Each call's price is reserved, the model sleeps a quarter second, and the call is
committed to the ledger before its answer is sent; the server is killed (SIGKILL, no shutdown, no
final settlement) while every thread has a call in flight. Nothing is claimed before the kill
(settle interval: an hour). The server restarts on the same data directory with a one-second settle
interval, and its settler claims, per channel, exactly what its ledger committed: every call that
was answered, and at most one more per thread (committed, its answer cut off by the kill); calls
still running at the kill were never committed and cost nothing.
"""

from __future__ import annotations

import contextlib
import signal
import sqlite3
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from eth_account.signers.local import LocalAccount

from marketplace.chain import rpc_chain
from marketplace.chain.deployment import load_deployment
from marketplace.chain.market import Market
from marketplace.chain.records import AssetKind
from marketplace.chain.units import to_units
from marketplace.payments.channels import HEADER, Voucher, VoucherLedger
from tests.helpers.cli import free_port, spawn_cli

pytestmark = pytest.mark.backend("anvil")

PRICE = to_units("0.01")
DEPOSIT = to_units(5)
PAYERS = (1, 2, 3, 4)  # dev accounts; one thread and one channel each
PROVIDER = 5
#: The model's input: ``time.sleep`` holds each call this long after its debit was committed.
CALL_SECONDS = 0.25
ANSWERS_BEFORE_KILL = 3  # per thread


@dataclass
class Caller:
    """One thread: its channel, the debited total of every 200 it got, and how it ended."""

    payer: LocalAccount
    channel: int
    answered: list[int] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    ended_by: str = ""

    @property
    def paid(self) -> int:
        """What the answers so far cost in total (the server's ``debited`` in the last receipt)."""
        return self.answered[-1] if self.answered else 0


def _call_until_the_server_dies(url: str, market: Market, model: int, caller: Caller) -> None:
    with httpx.Client(base_url=url, timeout=30) as http:
        while True:
            cumulative = caller.paid + PRICE
            signature = market.channels.sign_voucher(caller.payer, caller.channel, cumulative)
            header = Voucher(caller.channel, cumulative, signature).to_header()
            try:
                response = http.post(f"/v1/models/{model}/invoke", json={"input": CALL_SECONDS},
                                     headers={HEADER: header})  # fmt: skip
            except httpx.TransportError as exc:
                caller.ended_by = type(exc).__name__
                return
            if response.status_code != 200:
                caller.unexpected.append(f"{response.status_code} {response.text}")
                return
            caller.answered.append(int(response.json()["payment"]["debited"]))


def _wait_until(ready, what: str, process: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, f"{what}: the process exited\n{log.read_text()}"
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s\n{log.read_text()}"
        time.sleep(0.05)


def _answers(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def _debited(ledger: Path) -> dict[int, int]:
    """The ledger's committed debit per channel, read (read-only) while the server writes it."""
    with contextlib.closing(sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=5)) as db:
        return {channel: int(debited) for channel, debited in db.execute("SELECT channel_id, debited FROM channels")}


def test_kill_9_mid_stream_then_restart_claims_every_answered_call(tmp_path: Path):
    rpc_port, api_port = free_port(), free_port()
    rpc, url = f"http://127.0.0.1:{rpc_port}", f"http://127.0.0.1:{api_port}"
    manifest, data_dir = tmp_path / ".agentmarket" / "deployment.json", tmp_path / "server"
    node_log, server_log = tmp_path / "node.log", tmp_path / "server.log"
    with contextlib.ExitStack() as stack:
        node = stack.enter_context(spawn_cli(["node", "--port", str(rpc_port)], tmp_path, node_log))
        _wait_until(manifest.exists, "agentmarket node", node, node_log)
        chain = stack.enter_context(rpc_chain(rpc))
        market = load_deployment(manifest, chain).market(chain)
        admin, provider = chain.accounts[0], chain.accounts[PROVIDER]
        model = market.marketplace.publish(
            provider, kind=AssetKind.MODEL, content_hash=b"\x05" * 32, uri="ipfs://sleeper", price=PRICE,
            token=market.token.address, payees=[(provider.address, 10_000)],
        )  # fmt: skip
        vault = market.marketplace.vault_of(model)
        serve = ["serve", "--rpc", rpc, "--manifest", str(manifest), "--port", str(api_port),
                 "--data-dir", str(data_dir), "--model", f"{model}=time:sleep"]  # fmt: skip

        # 1. Paid calls from four threads; SIGKILL while every thread has a call in flight.
        with spawn_cli(serve, tmp_path, server_log, {"AGENTMARKET_SETTLE_INTERVAL": "3600"}) as server:
            _wait_until(lambda: _answers(url), "agentmarket serve", server, server_log)
            receiver = httpx.get(f"{url}/v1/payments", timeout=10).json()["payment_channel"]["receiverAuthorizer"]
            callers = []
            for index in PAYERS:
                payer = chain.accounts[index]
                market.token.mint(admin, payer.address, DEPOSIT)
                market.token.approve(payer, market.channels.address, DEPOSIT)
                channel = market.channels.open(payer, model, market.token.address, DEPOSIT, chain.timestamp() + 3600,
                                               receiver_authorizer=receiver)  # fmt: skip
                callers.append(Caller(payer, channel))
            assert market.channels.domain  # read once here, not by four threads at once
            threads = [
                threading.Thread(target=_call_until_the_server_dies, args=(url, market, model, caller), daemon=True)
                for caller in callers
            ]
            for thread in threads:
                thread.start()

            def mid_call() -> bool:
                """Every thread was answered enough and waits for its next call, whose model sleeps now."""
                if any(len(caller.answered) < ANSWERS_BEFORE_KILL for caller in callers):
                    return False
                debited = _debited(data_dir / "channels.sqlite3")
                return all(debited.get(caller.channel, 0) == caller.paid for caller in callers)

            _wait_until(mid_call, "calls in flight", server, server_log, timeout=30)
            time.sleep(CALL_SECONDS / 2)  # inside the next calls' sleep: reserved, not committed
            server.kill()
            assert server.wait(timeout=10) == -signal.SIGKILL
            for thread in threads:
                thread.join(timeout=30)
                assert not thread.is_alive()
        assert [c.unexpected for c in callers] == [[]] * len(callers)
        assert all(c.ended_by for c in callers)  # every thread was cut off by the kill, none stopped on its own
        assert all(len(c.answered) >= ANSWERS_BEFORE_KILL for c in callers)
        answered = {c.channel: c.paid for c in callers}

        def claimed_on_chain() -> dict[int, int]:
            return {channel: market.channels.channel(channel).claimed for channel in answered}

        # 2. Nothing was claimed before the kill; the ledger kept every answered debit, and at
        #    most one call more per thread (the one in flight).
        assert claimed_on_chain() == dict.fromkeys(answered, 0)
        assert market.token.balance_of(vault) == 0
        with VoucherLedger(data_dir / "channels.sqlite3") as ledger:
            entries = ledger.entries()
        assert all(entry.debited <= entry.ceiling for entry in entries)  # every debit under a signed ceiling
        committed = {entry.channel_id: entry.debited for entry in entries}
        assert set(committed) == set(answered)
        for channel, paid in answered.items():  # answered, or committed with its answer cut off by the kill
            assert committed[channel] in (paid, paid + PRICE), (channel, paid, committed[channel])

        # 3. Restart on the same data directory: the settler claims each channel's answered calls.
        with spawn_cli(serve, tmp_path, server_log, {"AGENTMARKET_SETTLE_INTERVAL": "1"}) as server:
            _wait_until(lambda: _answers(url), "agentmarket serve (restarted)", server, server_log)
            _wait_until(lambda: claimed_on_chain() == committed, "the settler's claims", server, server_log, timeout=30)
            server.send_signal(signal.SIGTERM)  # uvicorn shuts down gracefully, then re-raises the signal
            assert server.wait(timeout=30) == -signal.SIGTERM, server_log.read_text()
        claimed = claimed_on_chain()
        assert claimed == committed  # the graceful stop's last round claimed nothing twice
        for channel, paid in answered.items():
            assert paid <= claimed[channel] <= paid + PRICE
        assert market.token.balance_of(vault) == sum(claimed.values())
        with VoucherLedger(data_dir / "channels.sqlite3") as ledger:
            assert ledger.claimable() == []
        node.send_signal(signal.SIGINT)
        assert node.wait(timeout=20) == 0, node_log.read_text()
