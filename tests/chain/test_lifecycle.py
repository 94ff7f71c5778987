"""Starting and restarting the local chain, and a server that notices (issue 13 §2, §4 "serve on a busy port").

The user meets all of this as commands: `agentmarket node` and `agentmarket serve` run here as subprocesses
on real anvil nodes. A node that cannot come up is one line, exit 1, and writes nothing; so is a server on a
busy port, before it says it serves. A restarted node is a new chain with the same chain id and contract
addresses: a running server stops serving it (503 ``chain_replaced``) and claims nothing on it, and the next
`serve` archives the old chain's read model, voucher ledger and content — refusing, unless `--reset`, when
answered calls were never claimed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import signal
import socket
import sqlite3
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import httpx
import pytest

from marketplace.chain import AnvilNode, ChainError, rpc_chain
from marketplace.chain import backends as chain_backends
from marketplace.chain.deployment import load_deployment
from marketplace.chain.identity import ChainIdentity, ChainReplaced
from marketplace.chain.records import AssetKind
from marketplace.chain.units import to_units
from marketplace.client.sdk import MarketplaceClient
from marketplace.indexer import Indexer
from marketplace.indexer.database import open_database
from marketplace.payments.voucher_ledger import VoucherLedger
from tests.helpers.chain import next_second
from tests.helpers.cli import assert_one_line_error, free_port, run_cli, spawn_cli, stop_process

PRICE = to_units("0.01")
DATA = b"sepal_length,label\n5.1,setosa\n" * 50


# ---------------------------------------------------------------------- helpers


def _until(ready, what: str, process: subprocess.Popen | None, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert process is None or process.poll() is None, f"{what}: the process exited\n{log.read_text()}"
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s\n{log.read_text()}"
        time.sleep(0.05)


def _status(url: str) -> int | None:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code
    except httpx.HTTPError:
        return None


class _FakeNode(BaseHTTPRequestHandler):
    """Answers every JSON-RPC request as a chain 31337 would answer eth_chainId: what a careless check trusts."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "result": "0x7a69"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *_args: object) -> None:
        pass


# ---------------------------------------------------------------------- the node cannot come up


@pytest.mark.backend("anvil")
def test_node_on_a_taken_port_is_one_line_and_deploys_nothing(tmp_path):
    """Another node holds the port: the old `node` deployed a second contract set onto it and overwrote the
    manifest. Now: one line, exit 1, no manifest, and the other node's chain untouched."""
    with AnvilNode() as other:
        other_chain = rpc_chain(other.url)
        head = other_chain.block_number()
        env = {"AGENTMARKET_RPC": other.url}  # `node` listens where AGENTMARKET_RPC points, unless --port says
        for args in (["node", "--port", str(other.port)], ["node"]):
            result = run_cli(*args, cwd=tmp_path, env=env)
            assert_one_line_error(result, f"port {other.port} is in use")
            assert "anvil pid" not in result.stdout and "RPC URL" not in result.stdout
        assert not (tmp_path / ".agentmarket").exists()
        assert other_chain.block_number() == head  # nothing was deployed on the node that holds the port


def _text(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _script(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


@pytest.mark.parametrize(
    ("anvil", "says"),
    [
        (lambda tmp: tmp / "missing", "run `make setup`"),
        (lambda tmp: _script(tmp / "anvil", "echo 'Error: no such hardfork' >&2; exit 2"), "no such hardfork"),
        (lambda tmp: _text(tmp / "anvil", "not a program"), "cannot run anvil"),
    ],
    ids=["missing", "exits-at-start", "not-a-program"],
)
def test_a_node_that_does_not_come_up_is_one_line_and_writes_nothing(tmp_path, anvil, says):
    result = run_cli("node", "--port", str(free_port()), cwd=tmp_path, env={"AGENTMARKET_ANVIL": str(anvil(tmp_path))})
    assert_one_line_error(result, says)
    assert not (tmp_path / ".agentmarket").exists()


@pytest.mark.backend("anvil")
def test_an_anvil_that_loses_its_port_to_another_program_is_not_trusted(monkeypatch):
    """Another program takes the port between the check and anvil's bind, and answers JSON-RPC at once: the
    node must neither return its URL (and get contracts deployed onto the impostor) nor leave anvil running."""
    impostor = HTTPServer(("127.0.0.1", 0), _FakeNode)
    thread = threading.Thread(target=impostor.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(chain_backends, "check_port_free", lambda host, port: None)  # the race, made certain
    node = AnvilNode(port=impostor.server_address[1])
    try:
        with pytest.raises(ChainError, match=f"port {node.port} is in use"):
            node.start()
        assert node.pid is None  # stopped
    finally:
        node.stop()
        impostor.shutdown()
        impostor.server_close()


# ---------------------------------------------------------------------- serve on a busy port


def test_serve_on_a_taken_port_is_one_line_before_it_says_serving(tmp_path):
    with socket.socket() as occupant:
        occupant.bind(("127.0.0.1", 0))
        occupant.listen()
        port = occupant.getsockname()[1]
        # The port is checked first: not even the (unreachable) chain is asked.
        for args, env in (
            (["serve", "--port", str(port), "--rpc", "http://127.0.0.1:9"], {}),
            (["serve", "--rpc", "http://127.0.0.1:9"], {"AGENTMARKET_PORT": str(port)}),
        ):
            result = run_cli(*args, cwd=tmp_path, env=env)
            assert_one_line_error(result, f"port {port} is in use", "--port (AGENTMARKET_PORT)")
            assert "serving" not in result.stdout
    result = run_cli("serve", "--rpc", "http://127.0.0.1:9", cwd=tmp_path, env={"AGENTMARKET_PORT": "80800"})
    assert_one_line_error(result, "AGENTMARKET_PORT", "'80800'")
    result = run_cli("serve", "--rpc", "http://127.0.0.1:9", cwd=tmp_path, env={"AGENTMARKET_HOST": "no.such.host."})
    assert_one_line_error(result, "'no.such.host.'", "AGENTMARKET_HOST")


# ---------------------------------------------------------------------- node restarted under serve


@pytest.mark.backend("anvil")
def test_a_node_restart_stops_the_server_and_the_next_serve_archives_the_old_chain(tmp_path):
    home, data_dir = tmp_path, tmp_path / "server"
    rpc_port, api_port = free_port(), free_port()
    rpc, url = f"http://127.0.0.1:{rpc_port}", f"http://127.0.0.1:{api_port}"
    manifest = home / ".agentmarket" / "deployment.json"
    node_log, server_log = home / "node.log", home / "server.log"
    serve = [
        "serve",
        "--rpc",
        rpc,
        "--manifest",
        str(manifest),
        "--data-dir",
        str(data_dir),
        "--model",
        "2=builtins:len",
    ]
    env = {"AGENTMARKET_PORT": str(api_port), "AGENTMARKET_SETTLE_INTERVAL": "3600", "AGENTMARKET_CHAIN_POLL_INTERVAL":
           "0.2"}  # fmt: skip

    with contextlib.ExitStack() as stack:
        # 1. The first chain: bob publishes a dataset (uploaded) and a model; alice pays one call on a channel.
        node = stack.enter_context(spawn_cli(["node", "--port", str(rpc_port)], home, node_log))
        _until(manifest.exists, "node", node, node_log)
        first = stack.enter_context(rpc_chain(rpc))
        admin, alice, bob = first.accounts[0], first.accounts[1], first.accounts[2]
        server = stack.enter_context(spawn_cli(serve, home, server_log, env))
        _until(lambda: _status(url) == 200, "serve", server, server_log)
        market = load_deployment(manifest, first).market(first)
        market.token.mint(admin, alice.address, to_units(5))
        bob_client = MarketplaceClient.connect(url, bob, first)
        assert bob_client.publish(DATA, price=to_units(1)) == 1
        assert bob_client.publish(b"a model", price=PRICE, kind=AssetKind.MODEL) == 2
        alice_client = MarketplaceClient.connect(url, alice, first)
        channel = alice_client.open_channel(2, to_units(1))
        assert alice_client.invoke(2, [1, 2, 3], channel_id=channel).output == 3
        assert httpx.get(f"{url}/v1/assets", timeout=10).json()["total"] == 2  # the read model holds both
        first_identity = ChainIdentity.of(first)
        indexer = Indexer(first, load_deployment(manifest, first), open_database(f"sqlite:///{home / 'probe.db'}"))
        indexer.sync()

        # 2. The node restarts: a new chain at the same URL, same chain id, same contract addresses.
        assert stop_process(node) == 0
        next_second()
        node = stack.enter_context(spawn_cli(["node", "--port", str(rpc_port)], home, node_log))
        _until(lambda: _deployed(rpc, manifest, first_identity), "node restarted", node, node_log)
        second = stack.enter_context(rpc_chain(rpc))
        # Alice opens channel 1 again on the new chain, with the same key and the same receiver: the old
        # voucher's signature would be valid for it (same chain id, same channels contract address).
        new_market = load_deployment(manifest, second).market(second)
        new_market.token.mint(admin, alice.address, to_units(5))
        # Asset 1 again, by the same owner with the same content hash: only its upload on this chain may serve it.
        new_market.marketplace.publish(bob, kind=AssetKind.DATASET, content_hash=hashlib.sha256(DATA).digest(),
                                       uri="x", price=1, token=new_market.token.address,
                                       payees=[(bob.address, 10_000)])  # fmt: skip
        model = new_market.marketplace.publish(bob, kind=AssetKind.MODEL, content_hash=b"\x02" * 32, uri="m",
                                               price=PRICE, token=new_market.token.address,
                                               payees=[(bob.address, 10_000)])  # fmt: skip
        new_market.token.approve(alice, new_market.channels.address, to_units(1))
        relayer = first.accounts[-1].address
        assert new_market.channels.open(alice, model, new_market.token.address, to_units(1), second.timestamp() + 3600,
                                        receiver_authorizer=relayer) == channel  # fmt: skip

        # 3. The running server noticed: every request is 503 chain_replaced, naming what to do.
        _until(lambda: _status(url) == 503, "the server noticing the new chain", server, server_log, timeout=20)
        for response in (
            httpx.get(f"{url}/healthz", timeout=10),
            httpx.post(f"{url}/v1/models/2/invoke", json={"input": [1]}, timeout=10),
            httpx.get(f"{url}/v1/assets", timeout=10),
        ):
            assert response.status_code == 503, response.text
            body = response.json()
            assert body["error"] == "chain_replaced" and "agentmarket serve" in body["detail"], body
        assert server_log.read_text().count(f"the chain at {rpc} was replaced (") == 1  # said once, in one line
        with pytest.raises(ChainReplaced):  # the indexer, too, refuses to fill the old read model with the new chain
            indexer.sync()
        # Stopped, it claims nothing on the new chain (its settler's last round): the call stays unclaimed.
        assert stop_process(server, signal.SIGTERM) in (0, -signal.SIGTERM)
        assert new_market.channels.channel(channel).claimed == 0
        assert _unclaimed(data_dir / "channels.sqlite3") == {channel: PRICE}

        # 4. `serve` again: refused in one line saying what stays unclaimed; nothing moved.
        refused = run_cli(*serve, cwd=home, env=env)
        assert_one_line_error(refused, "new chain", f"{PRICE} base units", f"channel {channel}", "--reset")
        assert "serving" not in refused.stdout
        assert not (data_dir / "archive").exists()
        assert _unclaimed(data_dir / "channels.sqlite3") == {channel: PRICE}

        # 5. `serve --reset`: one line, the old chain's state archived, the new chain served.
        server = stack.enter_context(spawn_cli([*serve, "--reset"], home, server_log, env))
        _until(lambda: _status(url) == 200, "serve --reset", server, server_log)
        (archive,) = (data_dir / "archive").iterdir()
        assert archive.name.startswith(first_identity.slug)
        said = server_log.read_text()
        assert f"archived the old voucher ledger, read model and content into {archive}" in said
        assert said.index("archived") < said.rindex("serving")
        record = json.loads((archive / "ARCHIVE.json").read_text())
        assert (record["old_chain"], record["new_chain"]) == (str(first_identity), str(ChainIdentity.of(second)))
        assert record["unclaimed"] == {"amount": str(PRICE), "channels": [channel]}
        with VoucherLedger(archive / "channels.sqlite3") as archived:  # the old ledger, whole
            assert [(e.channel_id, e.debited, e.claimed) for e in archived.entries()] == [(channel, PRICE, 0)]
        with sqlite3.connect(archive / "index.sqlite3") as db:
            assert db.execute("SELECT count(*) FROM assets").fetchone() == (2,)
        assert (
            len(list((archive / "content").glob("*/1/v1.bin"))) == 1 and (archive / "content" / "secret.key").exists()
        )

        # The old chain's content is not served for the new chain's asset 1 (same id, owner and hash)...
        assert not list((data_dir / "content").glob("*/1/v1.bin"))
        assert httpx.get(f"{url}/v1/assets/1", timeout=10).json()["content_uploaded"] is False
        unpaid = httpx.get(f"{url}/v1/assets/1/x402", timeout=10)
        assert (unpaid.status_code, unpaid.json()["error"]) == (404, "content_not_uploaded")
        # ...the new chain's are: bob uploads on it, and it is served.
        new_bob = MarketplaceClient.connect(url, bob, second)
        new_bob.upload(1, DATA)
        assert httpx.get(f"{url}/v1/assets/1", timeout=10).json()["content_uploaded"] is True
        assert new_bob.download(1) == DATA
        # The ledger is a new one: channel 1 of the new chain owes nothing from the old one.
        assert _unclaimed(data_dir / "channels.sqlite3") == {}
        assert stop_process(server, signal.SIGTERM) in (0, -signal.SIGTERM)
        assert new_market.channels.channel(channel).claimed == 0


def _deployed(rpc: str, manifest: Path, old: ChainIdentity) -> bool:
    """Whether a new chain answers at ``rpc`` with the manifest's contracts deployed."""
    try:
        with rpc_chain(rpc) as chain:
            if ChainIdentity.of(chain) == old:
                return False
            load_deployment(manifest, chain)
    except Exception:
        return False
    return True


def _unclaimed(ledger: Path) -> dict[int, int]:
    """Per channel, answered calls never claimed, read read-only (as an operator would)."""
    with contextlib.closing(sqlite3.connect(f"file:{ledger}?mode=ro", uri=True, timeout=5)) as db:
        rows = db.execute("SELECT channel_id, debited, claimed FROM channels").fetchall()
    return {channel: int(debited) - int(claimed) for channel, debited, claimed in rows if int(debited) > int(claimed)}
