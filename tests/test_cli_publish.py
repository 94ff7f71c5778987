"""`asset publish` is all or nothing, as a provider meets it: the CLI as a subprocess against
`agentmarket node` + `agentmarket serve` (issue 13 §3).

The server first refuses the upload (413: `AGENTMARKET_MAX_UPLOAD_BYTES` is 100 bytes); the asset stays
on chain unlisted, the CLI says so in one line naming the command that fixes it, and nobody can buy it.
The operator restarts the server with the default limit; `asset upload` uploads the file, the server
verifies it, the provider's transaction lists it, and a buyer buys and downloads it.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.test_cli import AGENTMARKET, assert_one_line_error, free_port, run_cli

pytestmark = pytest.mark.anvil


class Stack:
    """A node and a server, real processes on 127.0.0.1; the server restarts with other settings."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.rpc_port, self.api_port = free_port(), free_port()
        self.node: subprocess.Popen[str] | None = None
        self.server: subprocess.Popen[str] | None = None
        self.env = {"AGENTMARKET_RPC": f"http://127.0.0.1:{self.rpc_port}",
                    "AGENTMARKET_SERVER": f"http://127.0.0.1:{self.api_port}",
                    "AGENTMARKET_PASSWORD": "correct horse", "AGENTMARKET_KEYSTORE_SCRYPT_N": "1024"}  # fmt: skip

    def start_node(self) -> None:
        self.node = subprocess.Popen([*AGENTMARKET, "node", "--port", str(self.rpc_port)], cwd=self.home,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
        manifest = self.home / ".agentmarket" / "deployment.json"
        deadline = time.monotonic() + 60
        while not manifest.exists():
            assert self.node.poll() is None, self.node.stderr.read() if self.node.stderr else "node exited"
            assert time.monotonic() < deadline, "the node wrote no manifest"
            time.sleep(0.1)

    def start_server(self, **env: str) -> None:
        manifest = self.home / ".agentmarket" / "deployment.json"
        self.server = subprocess.Popen([*AGENTMARKET, "serve", "--rpc", self.env["AGENTMARKET_RPC"], "--manifest",
                                        str(manifest), "--port", str(self.api_port)], cwd=self.home,
                                       env={**os.environ, "AGENTMARKET_SETTLE_INTERVAL": "3600", **env},
                                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
        deadline = time.monotonic() + 60
        while True:
            assert self.server.poll() is None, self.server.stderr.read() if self.server.stderr else "serve exited"
            try:
                httpx.get(f"{self.env['AGENTMARKET_SERVER']}/healthz", timeout=1).raise_for_status()
                return
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "the server did not answer /healthz"
                time.sleep(0.1)

    def stop_server(self) -> None:
        if self.server is not None:
            self.server.terminate()
            self.server.wait(timeout=30)
            self.server = None

    def stop(self) -> None:
        self.stop_server()
        if self.node is not None:
            self.node.terminate()
            self.node.wait(timeout=30)

    def cli(self, *args: str, wallet: str) -> subprocess.CompletedProcess[str]:
        return run_cli(*args, cwd=self.home, env={**self.env, "AGENTMARKET_WALLET": str(self.home / wallet)})


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    stack = Stack(tmp_path_factory.mktemp("publish-cli"))
    try:
        stack.start_node()
        stack.start_server(AGENTMARKET_MAX_UPLOAD_BYTES="100")
        yield stack
    finally:
        stack.stop()


def ok(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 0, result.stderr
    return result.stdout


def catalog(stack: Stack, **params: str) -> dict[int, dict]:
    """The server's catalog (``GET /v1/assets``) by asset id."""
    page = httpx.get(f"{stack.env['AGENTMARKET_SERVER']}/v1/assets", params=params, timeout=30).json()
    return {item["asset_id"]: item for item in page["items"]}


def test_a_refused_upload_leaves_the_asset_unlisted_and_asset_upload_lists_it(stack):
    for name in ("provider.json", "buyer.json"):
        ok(stack.cli("wallet", "new", wallet=name))
        ok(stack.cli("faucet", "--amount", "20", wallet=name))
    data = stack.home / "iris data.csv"  # a space: the command the error names must paste as it is
    data.write_text("sepal,label\n5.1,0\n" * 100)  # 1,800 bytes, over the 100-byte limit

    refused = stack.cli("asset", "publish", str(data), "--price", "2.5", wallet="provider.json")
    assert_one_line_error(refused, "asset 1 is on chain but unlisted: its content was not uploaded (HTTP 413 "
                          "content_too_large", f"run `agentmarket asset upload 1 '{data}'`")  # fmt: skip
    assert catalog(stack) == {}  # not buyable, so not in the catalog
    unlisted = catalog(stack, listed_only="false")[1]
    assert (unlisted["listed"], unlisted["content_uploaded"], unlisted["uri"]) == (False, False, "iris data.csv")
    assert json.loads(ok(stack.cli("asset", "ls", "--json", wallet="buyer.json")))["items"] == []
    table = ok(stack.cli("asset", "ls", "--all", wallet="buyer.json"))
    assert "unlisted," in table and "no content" in table  # (the cell may wrap in an 80-column terminal)
    assert_one_line_error(stack.cli("buy", "1", wallet="buyer.json"), "AssetDelisted(assetId=1)")
    x402 = httpx.get(f"{stack.env['AGENTMARKET_SERVER']}/v1/assets/1/x402")
    assert (x402.status_code, x402.json()["error"]) == (409, "asset_delisted")

    # Still too large: the retry says the same, and says to run it again.
    again = stack.cli("asset", "upload", "1", str(data), wallet="provider.json")
    assert_one_line_error(again, "asset 1 is on chain but unlisted: its content was not uploaded (HTTP 413",
                          f"run `agentmarket asset upload 1 '{data}'` again")  # fmt: skip

    # The operator restarts the server with the default limit (same data directory).
    stack.stop_server()
    stack.start_server()
    wrong = stack.home / "other.csv"
    wrong.write_text("not the published content\n")
    assert_one_line_error(stack.cli("asset", "upload", "1", str(wrong), wallet="provider.json"),
                          "asset 1 version 1 has content hash 0x", "is it the right file?")  # fmt: skip
    assert_one_line_error(stack.cli("asset", "upload", "1", str(data), wallet="buyer.json"), "only its owner")
    assert_one_line_error(stack.cli("asset", "upload", "9", str(data), wallet="provider.json"), "UnknownAsset")
    out = ok(stack.cli("asset", "upload", "1", str(data), wallet="provider.json"))
    assert "uploaded asset 1 version 1 (1800 bytes, sha256 verified by the server); it is listed" in out
    listed = catalog(stack)[1]
    assert (listed["listed"], listed["content_uploaded"]) == (True, True)

    ok(stack.cli("buy", "1", "--max-price", "2.5", wallet="buyer.json"))
    ok(stack.cli("download", "1", "--out", str(stack.home / "bought.csv"), wallet="buyer.json"))
    assert (stack.home / "bought.csv").read_bytes() == data.read_bytes()

    # With the limit raised, publishing is one command again: on chain, uploaded, listed.
    card = stack.home / "card.json"
    card.write_text('{"model": "k-NN"}')
    out = ok(stack.cli("asset", "publish", str(card), "--price", "0.01", "--kind", "1", wallet="provider.json"))
    assert "published asset 2 (card.json, 0.01 tUSD), uploaded its content and listed it" in out
    assert catalog(stack)[2]["content_uploaded"] is True
