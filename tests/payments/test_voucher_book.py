"""A voucher count belongs to one channel on one chain (red-team finding 7, the kind).

The client's count of a channel is keyed by the chain's identity (chain id + genesis hash) and the channel's own
(id, payer, signer, asset, token and the block that opened it). A restarted node (the red-team test) and a
channel id used again on the *same* chain — here the chain is reverted to before the channel was opened, and
another channel gets its id — both start a new count at the first call: one price, never the old calls plus one.
Entries of the earlier format (chain id and address only) are dropped when a book is read.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from marketplace.chain import connect
from marketplace.chain.deployment import deploy_all
from marketplace.chain.identity import ChainIdentity
from marketplace.client import MarketplaceClient
from marketplace.client.vouchers import ChannelCount, VoucherBook
from marketplace.protocol.vouchers import HEADER, Voucher
from tests.helpers.chain import fund, publish_model
from tests.helpers.servers import Reply, hostile_server, receipt_body, terms_body

PRICE = 10_000


def test_a_book_of_the_earlier_format_starts_again_from_the_chain(tmp_path):
    path = tmp_path / "book.json"
    scope = "eip155:31337/genesis:0x" + "ab" * 32 + "/channels:0x" + "cd" * 20
    old = {"31337:0x" + "cd" * 20: {"1": {"answered": "50000", "signed": "50000"}}}
    path.write_text(json.dumps({**old, scope: {"1/payer:0xp/opened:0xb": {"answered": "20000", "signed": "30000"}}}))
    book = VoucherBook(path)
    assert book.count("31337:0x" + "cd" * 20, "1") is None
    assert book.count(scope, "1/payer:0xp/opened:0xb") == ChannelCount(20_000, 30_000)
    assert book.begin(scope, "2/payer:0xp/opened:0xc", PRICE, 0) == PRICE  # a new channel: one price
    assert set(json.loads(path.read_text())) == {scope}  # the old entry is gone from the file too


@pytest.fixture(scope="module")
def chain() -> Iterator:
    chain = connect("anvil")
    try:
        yield chain
    finally:
        chain.close()


@pytest.mark.backend("anvil")
def test_a_channel_id_used_again_on_the_same_chain_starts_its_own_count(chain, tmp_path):
    deployment = deploy_all(chain, chain.accounts[0])
    market = deployment.market(chain)
    owner, payer = fund(chain, market, 0), fund(chain, market, 10)
    model = publish_model(market, owner, PRICE)
    signed: list[int] = []

    def gateway(method: str, path: str, headers: dict[str, str], body: bytes) -> Reply | None:
        """Serves every call, records every ceiling (the receiver key may claim up to it)."""
        if path == "/v1/deployment":
            return Reply(200, deployment.to_json())
        if path == "/v1/payments":
            return Reply(200, terms_body(market, owner.address, [model]))
        if path == f"/v1/models/{model}/invoke" and HEADER.lower() in headers:
            voucher = Voucher.from_header(headers[HEADER.lower()])
            signed.append(voucher.max_claimable_amount)
            return Reply(200, receipt_body(1, voucher, model, PRICE))
        return None

    book = tmp_path / "vouchers" / f"{payer.address}.json"
    genesis = ChainIdentity.of(chain)
    before_the_channel = chain.snapshot()
    with hostile_server(gateway) as url:
        first = MarketplaceClient.connect(url, payer, chain, trusted=deployment, voucher_book=VoucherBook(book))
        channel = first.open_channel(model, 10 * PRICE)
        for _ in range(3):
            first.invoke(model, [1], channel_id=channel)
        chain.revert(before_the_channel)  # that channel never was: its id is free again, on the same chain
        # A new process (as the CLI runs one per call) with the same book, and another channel with the same id.
        second = MarketplaceClient.connect(url, payer, chain, trusted=deployment, voucher_book=VoucherBook(book))
        again = second.open_channel(model, 20 * PRICE)
        second.invoke(model, [1], channel_id=again)
        assert second.channel_count(again) == ChannelCount(answered=PRICE, signed=PRICE)
    assert again == channel and ChainIdentity.of(chain) == genesis  # same chain, same contract, same id
    assert signed == [PRICE, 2 * PRICE, 3 * PRICE, PRICE]  # the new channel's first voucher: one price
