"""The agentmarket command line, as a user runs it."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time

import httpx
import pytest

from tests.helpers.cli import AGENTMARKET, assert_one_line_error, free_port, run_cli, wait_for_json


def test_serve_with_a_missing_manifest_is_one_line(tmp_path):
    result = run_cli("serve", "--rpc", "http://127.0.0.1:9", "--manifest", str(tmp_path / "none.json"))
    assert_one_line_error(result, "http://127.0.0.1:9")


def test_unreachable_rpc_is_one_line():
    result = run_cli("balances", "--rpc", "http://127.0.0.1:9")
    assert_one_line_error(result, "http://127.0.0.1:9", "agentmarket node")


def test_missing_anvil_is_one_line(tmp_path):
    result = run_cli(
        "node", "--port", str(free_port()), cwd=tmp_path, env={"AGENTMARKET_ANVIL": str(tmp_path / "missing")}
    )
    assert_one_line_error(result, "npm ci --prefix contracts")


def test_bad_address_is_one_line(tmp_path):
    result = run_cli("balances", "0x123", "--rpc", "http://127.0.0.1:9")
    assert_one_line_error(result, "not an Ethereum address: '0x123'")


@pytest.mark.backend("anvil")
def test_node_serves_a_deployment_a_second_process_can_use(tmp_path):
    port = free_port()
    node = subprocess.Popen(
        [*AGENTMARKET, "node", "--port", str(port)],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        manifest = tmp_path / ".agentmarket" / "deployment.json"
        deadline = time.monotonic() + 60
        while not manifest.exists() and node.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert manifest.exists(), node.stderr.read() if node.poll() is not None else "no manifest"
        rpc = f"http://127.0.0.1:{port}"

        shown = run_cli("balances", "--rpc", rpc, "--manifest", str(manifest), "--json")
        assert shown.returncode == 0, shown.stderr
        token = json.loads(shown.stdout)["token"]
        assert (token["name"], token["symbol"], token["decimals"]) == ("Test USD", "tUSD", 6)

        redeployed = run_cli("deploy", "--rpc", rpc, "--manifest", str(tmp_path / "second.json"))
        assert redeployed.returncode == 0, redeployed.stderr
        assert json.loads((tmp_path / "second.json").read_text())["chainId"] == 31337

        api_port = free_port()
        server = subprocess.Popen(
            [*AGENTMARKET, "serve", "--rpc", rpc, "--manifest", str(manifest), "--port", str(api_port),
             "--data-dir", str(tmp_path / "server")],
            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            health = wait_for_json(f"http://127.0.0.1:{api_port}/healthz", server)
            assert (health["chain_id"], health["indexer_lag"]) == (31337, 0)
            assets = httpx.get(f"http://127.0.0.1:{api_port}/v1/assets", timeout=10).json()
            assert assets == {"items": [], "total": 0, "limit": 50, "offset": 0}
            missing = httpx.get(f"http://127.0.0.1:{api_port}/v1/assets/7", timeout=10)
            assert (missing.status_code, missing.json()["error"]) == (404, "asset_not_found")
        finally:
            server.terminate()
            server.wait(timeout=15)

        foreign = json.loads(manifest.read_text()) | {"chainId": 1}
        (tmp_path / "foreign.json").write_text(json.dumps(foreign))
        wrong_chain = run_cli("balances", "--rpc", rpc, "--manifest", str(tmp_path / "foreign.json"))
        assert_one_line_error(wrong_chain, "chain id 1", "chain id 31337")
    finally:
        node.send_signal(signal.SIGINT)
        try:
            node.wait(timeout=15)
        except subprocess.TimeoutExpired:
            node.kill()
    assert node.returncode == 0, node.stderr.read()
    out = node.stdout.read()
    assert f"RPC URL: http://127.0.0.1:{port}" in out and "stopping anvil" in out
    with socket.socket() as sock:  # anvil is gone: the port refuses connections
        assert sock.connect_ex(("127.0.0.1", port)) != 0
