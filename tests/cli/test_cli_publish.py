"""`asset publish` is all or nothing, as a provider meets it: the CLI as a subprocess against
`agentmarket node` + `agentmarket serve` (issue 13 §3).

The server first refuses the upload (413: `AGENTMARKET_MAX_UPLOAD_BYTES` is 100 bytes); the asset stays
on chain unlisted, the CLI says so in one line naming the command that fixes it, and nobody can buy it.
The operator restarts the server with the default limit; `asset upload` uploads the file, the server
verifies it, the provider's transaction lists it, and a buyer buys and downloads it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import httpx
import pytest

from tests.helpers.cli import assert_one_line_error
from tests.helpers.stack import Stack, node_and_server, ok

pytestmark = pytest.mark.backend("anvil")


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    with node_and_server(tmp_path_factory.mktemp("publish-cli"), AGENTMARKET_MAX_UPLOAD_BYTES="100") as running:
        yield running


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
