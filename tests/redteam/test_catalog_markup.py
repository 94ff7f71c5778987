"""Hostile asset owner vs every buyer's terminal: an asset URI is rendered as rich markup by `asset ls`.

Anyone may publish an asset with any `uri` string. `agentmarket asset ls` puts it in a rich table cell
unescaped, so the text is interpreted as console markup: `[/x]` (a closing tag with no opening one) makes
rich raise `MarkupError` and the CLI dies with a traceback for every user whose catalog page holds that
asset (the default page is the first 50 assets), and `[bold green]verified[/]`-style tags restyle the
listing. Expected: catalog text from the chain is shown as text (rich.markup.escape), `asset ls` works.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from marketplace.chain.records import AssetKind
from tests.helpers.chain import anvil_market, fund
from tests.helpers.cli import run_cli
from tests.helpers.servers import server_app, serving

pytestmark = pytest.mark.backend("anvil")


@pytest.fixture(scope="module")
def catalog(tmp_path_factory) -> Iterator[str]:
    with anvil_market() as (chain, deployment, market):
        owner = fund(chain, market, 0)
        for uri in ("iris.csv", "[/x] nothing to see"):
            market.marketplace.publish(owner, kind=AssetKind.DATASET, content_hash=os.urandom(32), uri=uri, price=1,
                                       token=market.token.address, payees=[(owner.address, 10_000)])  # fmt: skip
        with serving(server_app(deployment, chain, tmp_path_factory.mktemp("markup"))) as url:
            yield url


def test_asset_ls_shows_a_hostile_uri_as_text(catalog):
    result = run_cli("asset", "ls", "--all", "--server", catalog)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr[-400:]
    assert "[/x]" in result.stdout
