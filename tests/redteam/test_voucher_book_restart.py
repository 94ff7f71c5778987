"""Careless newcomer + hostile server: the CLI's voucher book outlives the chain it counted on.

The CLI keeps, next to the wallet, what it counted on each channel (`vouchers/<address>.json`), keyed by
chain id and channels-contract address. A restarted `agentmarket node` is a new chain with the SAME chain
id (31337) and the SAME contract addresses (same deployer, same nonces), and its channel ids start again
at 1. The book still holds the old chain's count for "channel 1", so the first call on the new channel 1
signs a voucher whose ceiling is the old count plus the price: the receiver may claim all of it for one
call. (An honest gateway claims what it served; the one who holds the receiver key — the gateway's
operator — may claim up to the ceiling.) Expected: a count never carries over to another chain or to
another channel that happens to get the same id (bind it to the genesis hash, or to the channel's payer
and open block); a fresh channel's first voucher is one price.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from marketplace.client import MarketplaceClient
from marketplace.client.vouchers import VoucherBook
from tests.helpers.chain import anvil_market, fund, publish_model
from tests.helpers.servers import server_app, serving

pytestmark = pytest.mark.backend("anvil")

PRICE = 10_000


def _one_life(payer, book_path: Path, data_dir: Path, calls: int) -> tuple[str, int, list[dict]]:
    """A fresh `agentmarket node` + server: publish a model, open a channel, make ``calls`` calls."""
    with anvil_market() as (chain, deployment, market):
        owner = fund(chain, market, 0)
        model_id = publish_model(market, owner, PRICE)
        chain.send_eth(chain.accounts[0], payer.address, 10**18)
        market.token.mint(chain.accounts[0], payer.address, 100 * PRICE)
        app = server_app(deployment, chain, data_dir, {model_id: lambda x: {"ok": True}})
        with serving(app) as url:
            client = MarketplaceClient.connect(url, payer, chain, voucher_book=VoucherBook(book_path))
            channel_id = client.open_channel(model_id, 10 * PRICE)
            receipts = [client.invoke(model_id, [1], channel_id=channel_id).payment for _ in range(calls)]
        return market.channels.address, channel_id, receipts


def test_a_restarted_node_does_not_inherit_the_old_chains_voucher_counts(tmp_path):
    from eth_account import Account

    payer = Account.create()
    book = tmp_path / "vouchers" / f"{payer.address}.json"  # where the CLI keeps it
    first_channels, first_id, _ = _one_life(payer, book, tmp_path / "server-1", calls=5)
    second_channels, second_id, receipts = _one_life(payer, book, tmp_path / "server-2", calls=1)
    assert (first_channels, first_id) == (second_channels, second_id)  # same address, same id: a new channel
    ceiling = receipts[0].max_claimable_amount
    assert ceiling == PRICE, (
        f"the first call on a fresh channel (new chain) signed a ceiling of {ceiling} for a price of {PRICE}: "
        f"the voucher book carried the old chain's count over; the receiver key may claim {ceiling // PRICE} calls' "
        "worth for one"
    )
