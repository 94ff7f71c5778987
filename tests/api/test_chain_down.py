"""What a running server does when what it depends on goes away (issue 13 §4 "chain down").

Attack: the chain's node dies under `agentmarket serve` (or the read model's PostgreSQL server does).
Before: /healthz and the catalog answered 500 and the log filled with a traceback per request (and one
per watcher round, twice a second). Expected: 503 JSON ``chain_unavailable`` naming the RPC URL on
every route that needs the chain, /healthz reporting the chain down with the last head it saw, paid
calls refused before the model runs, the log one line per failure kind per interval; and 503
``database_unavailable`` when the database is down. The server is the CLI in a subprocess, the chain a
real anvil node that the test kills.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from marketplace.api import Settings, create_app
from marketplace.chain import AnvilNode, Chain, rpc_chain
from marketplace.chain.deployment import deploy_all
from marketplace.chain.records import AssetKind
from marketplace.chain.units import to_units
from marketplace.client import MarketplaceClient
from marketplace.client.sdk import ChainUnreachable
from marketplace.protocol.vouchers import HEADER, VoucherHasher
from tests.helpers.cli import AGENTMARKET, free_port
from tests.helpers.postgres import Unavailable as PostgresUnavailable
from tests.helpers.postgres import start_server as start_postgres
from tests.helpers.servers import serving

pytestmark = pytest.mark.backend("anvil")

PRICE = to_units("0.01")
HANDLER = '''
import os


def answer(payload):
    """Echo the input, and count the runs in a file (the test reads it)."""
    with open(os.environ["CHAIN_DOWN_RUNS"], "a") as runs:
        runs.write("ran\\n")
    return {"echo": payload}
'''


@dataclass
class World:
    """A fresh anvil with the contracts and one model (price PRICE) owned by bob; alice holds 100 tUSD."""

    node: AnvilNode
    chain: Chain
    manifest: Path
    model: int
    home: Path


@pytest.fixture
def world(tmp_path) -> Iterator[World]:
    node = AnvilNode()
    node.start()
    try:
        chain = rpc_chain(node.url)
        deployment = deploy_all(chain, chain.accounts[0])
        market = deployment.market(chain)
        alice, bob = chain.accounts[1], chain.accounts[2]
        market.token.mint(chain.accounts[0], alice.address, to_units(100))
        model = market.marketplace.publish(
            bob, kind=AssetKind.MODEL, content_hash=b"\x0a" * 32, uri="ipfs://echo", price=PRICE,
            token=market.token.address, payees=[(bob.address, 10_000)],
        )  # fmt: skip
        (tmp_path / "chaindown_model.py").write_text(HANDLER)
        yield World(node, chain, deployment.save(tmp_path / "deployment.json"), model, tmp_path)
    finally:
        node.stop()


def _wait_until(check, timeout: float = 20.0, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout} s"
        time.sleep(0.05)


def _health(base: str) -> httpx.Response | None:
    try:
        return httpx.get(f"{base}/healthz", timeout=5)
    except httpx.HTTPError:
        return None


def test_a_chain_that_dies_under_serve_gets_503_and_one_log_line_per_kind(world):
    port, runs, log_path = free_port(), world.home / "runs.txt", world.home / "serve.log"
    base, rpc = f"http://127.0.0.1:{port}", world.node.url
    env = {**os.environ, "PYTHONPATH": str(world.home), "CHAIN_DOWN_RUNS": str(runs),
           "AGENTMARKET_CHAIN_POLL_INTERVAL": "0.2", "AGENTMARKET_SETTLE_INTERVAL": "3600"}  # fmt: skip
    with log_path.open("w") as log_file:
        server = subprocess.Popen(
            [*AGENTMARKET, "serve", "--rpc", rpc, "--manifest", str(world.manifest), "--port", str(port),
             "--data-dir", str(world.home / "server"), "--model", f"{world.model}=chaindown_model:answer"],
            cwd=world.home, env=env, stdout=subprocess.DEVNULL, stderr=log_file,
        )  # fmt: skip
    try:
        up = _wait_until(lambda: (h := _health(base)) is not None and h.status_code == 200 and h, 60, "serve start")
        head_before = up.json()["head_block"]
        client = MarketplaceClient.connect(base, world.chain.accounts[1], world.chain)
        payee = world.chain.accounts[2].address
        channel = client.open_channel(world.model, to_units(1))
        assert client.invoke(world.model, [1], channel_id=channel).output == {"echo": [1]}
        assert runs.read_text() == "ran\n"
        last_head = world.chain.block_number()
        hasher = VoucherHasher(client.market.channels.domain)
        voucher = hasher.voucher(world.chain.accounts[1], channel, 2 * PRICE)  # the next call's, signed now
        assert last_head >= head_before

        world.node.stop()  # the chain's node dies under the running server

        down = _wait_until(lambda: (h := _health(base)) is not None and h.status_code == 503 and h, 20, "chain down")
        body = down.json()
        assert (body["error"], body["status"], body["rpc_url"]) == ("chain_unavailable", "chain_down", rpc)
        # the last head the server's watcher saw: it reads the chain every poll interval (1 s), so the
        # node may have died before it saw the very last block
        assert body["chain_id"] == 31337 and head_before <= body["last_head_block"] <= last_head
        assert isinstance(body["last_head_timestamp"], int) and rpc in body["detail"]

        for path in ("/v1/assets", f"/v1/assets/{world.model}", "/v1/stats", "/v1/agents/1",
                     f"/v1/accounts/{payee}/earnings"):  # fmt: skip
            answer = httpx.get(base + path, timeout=10)
            assert answer.status_code == 503, (path, answer.text)
            assert answer.json()["error"] == "chain_unavailable" and rpc in answer.json()["detail"], path
        # Paid calls are refused before the model runs, whatever pays for them.
        paid = httpx.post(f"{base}/v1/models/{world.model}/invoke", json={"input": [2]},
                          headers={HEADER: voucher.to_header()}, timeout=10)  # fmt: skip
        assert (paid.status_code, paid.json()["error"]) == (503, "chain_unavailable")
        # (the SDK reads the price on chain before it signs a voucher: with the node gone it signs nothing)
        with pytest.raises(ChainUnreachable) as unreachable:
            client.invoke(world.model, [2], channel_id=channel)
        assert rpc in str(unreachable.value) and "nothing was signed" in str(unreachable.value)
        x402 = httpx.post(f"{base}/v1/models/{world.model}/invoke", json={"input": [3]},
                          headers={"PAYMENT-SIGNATURE": base64.b64encode(b'{"x402Version": 2}').decode()})  # fmt: skip
        assert (x402.status_code, x402.json()["error"]) == (503, "chain_unavailable")
        for _ in range(30):  # a burst of failing requests: the log must not grow with them
            assert httpx.get(f"{base}/v1/assets", timeout=10).status_code == 503
            assert httpx.get(f"{base}/healthz", timeout=10).status_code == 503
        assert runs.read_text() == "ran\n"  # the model ran once, before the chain died
        assert client.channel_count(channel).answered == PRICE
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    log = log_path.read_text()
    lines = [line for line in log.splitlines() if line.strip()]
    assert "Traceback" not in log, log
    assert len([line for line in lines if "cannot read the chain" in line]) == 1, log
    assert len([line for line in lines if "answering 503 chain_unavailable" in line]) == 1, log
    assert len(lines) <= 4, log  # those two, and the settler's last round at shutdown (one line per channel)


def test_a_database_that_dies_gets_503_database_unavailable(world, caplog):
    try:
        postgres = start_postgres()
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))
    try:
        settings = Settings(rpc_url=world.node.url, manifest=world.manifest, data_dir=world.home / "server",
                            database_url=postgres.fresh_database("chain_down_read_model"))  # fmt: skip
        with serving(create_app(settings)) as base:
            assert httpx.get(f"{base}/v1/assets", timeout=10).json()["total"] == 1
            postgres.stop()  # the read model's database goes away
            caplog.set_level(logging.INFO, logger="agentmarket")
            for _ in range(10):
                for path in ("/v1/assets", f"/v1/assets/{world.model}", "/v1/stats", "/healthz"):
                    answer = httpx.get(base + path, timeout=10)
                    assert (answer.status_code, answer.json()["error"]) == (503, "database_unavailable"), path
                    assert set(answer.json()) == {"error", "detail"}
            deployment = httpx.get(f"{base}/v1/deployment", timeout=10)  # needs neither: still served
            assert deployment.status_code == 200 and json.loads(deployment.text)["chainId"] == 31337
    finally:
        postgres.stop()
    reports = [r for r in caplog.records if "database" in r.getMessage()]
    assert len(reports) == 1 and reports[0].exc_info is None, [r.getMessage() for r in caplog.records]
    assert "postgresql" not in reports[0].getMessage()  # never the URL (it may carry a password)
