"""Each gateway settles with a key of its own (red team: two gateways sharing the local default key).

Without ``AGENTMARKET_RELAYER_KEY`` a gateway makes its settlement key in its data directory on first
start and keeps it there; on a local dev chain it tops it up with gas money from the last dev account
at start. Two gateways with separate data directories therefore name different ``receiverAuthorizer``s,
so a channel belongs to one ledger (``tests/redteam/test_two_gateways.py`` spends one channel's vouchers
at both). Run on anvil, with the real server under uvicorn (and on an anvil whose chain id is not a
local one, where the key is made but not funded).
"""

from __future__ import annotations

import logging
import stat
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from fastapi.testclient import TestClient

from marketplace.api import Settings, create_app
from marketplace.api.relayer import LOCAL_GAS_MINIMUM, LOCAL_GAS_TOP_UP, SETTLEMENT_KEY_FILE
from marketplace.chain import Chain, connect
from marketplace.chain.backends import anvil_chain
from marketplace.chain.deployment import Deployment, deploy_all
from marketplace.errors import AgentmarketError
from tests.helpers.servers import serving

pytestmark = pytest.mark.backend("anvil")


@pytest.fixture(scope="module")
def local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Chain, Deployment, Path]]:
    chain = connect("anvil")
    try:
        yield chain, deploy_all(chain, chain.accounts[0]), tmp_path_factory.mktemp("settlement-key")
    finally:
        chain.close()


def _app(chain: Chain, deployment: Deployment, data_dir: Path):
    settings = Settings(manifest=deployment.save(data_dir.parent / "deployment.json"), data_dir=data_dir,
                        settle_interval=3600)  # fmt: skip
    return create_app(settings, chain=chain)


def _receiver(url: str) -> str:
    return httpx.get(f"{url}/v1/payments", timeout=10).json()["payment_channel"]["receiverAuthorizer"]


def test_each_gateway_settles_with_a_funded_key_of_its_own_kept_in_its_data_dir(local):
    chain, deployment, home = local
    funder = chain.accounts[-1]
    receivers = {}
    for name in ("a", "b"):
        with serving(_app(chain, deployment, home / name)) as url:
            receivers[name] = _receiver(url)
        key_file = home / name / SETTLEMENT_KEY_FILE
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
        assert receivers[name] == Account.from_key(key_file.read_bytes()).address
        assert chain.balance(receivers[name]) == LOCAL_GAS_TOP_UP  # topped up from the last dev account
    assert receivers["a"] != receivers["b"] and funder.address not in receivers.values()

    before = (chain.balance(funder.address), chain.block_number())
    with serving(_app(chain, deployment, home / "a")) as url:  # a restart keeps the key (and its channels)
        assert _receiver(url) == receivers["a"]
    assert (chain.balance(funder.address), chain.block_number()) == before  # still funded: no transaction

    chain.send_eth(Account.from_key((home / "b" / SETTLEMENT_KEY_FILE).read_bytes()), funder.address,
                   LOCAL_GAS_TOP_UP - LOCAL_GAS_MINIMUM + 1)  # below the minimum now  # fmt: skip
    with serving(_app(chain, deployment, home / "b")) as url:
        assert _receiver(url) == receivers["b"]
    assert chain.balance(receivers["b"]) == LOCAL_GAS_TOP_UP


def test_a_damaged_key_file_stops_the_gateway_with_a_sentence(local):
    chain, deployment, home = local
    (home / "damaged").mkdir()
    (home / "damaged" / SETTLEMENT_KEY_FILE).write_bytes(b"\x00" * 32)  # not a secp256k1 key
    app = _app(chain, deployment, home / "damaged")
    with (
        pytest.raises(AgentmarketError, match=r"settlement\.key is not a 32-byte private key; restore it"),
        TestClient(app),
    ):
        pass


def test_off_a_local_chain_the_key_is_made_but_not_funded(tmp_path, caplog):
    chain = anvil_chain(chain_id=1337)
    try:
        deployment = deploy_all(chain, chain.accounts[0])
        app = _app(chain, deployment, tmp_path / "server")
        with caplog.at_level(logging.WARNING, logger="agentmarket.api"), serving(app) as url:
            receiver = _receiver(url)
        assert receiver == Account.from_key((tmp_path / "server" / SETTLEMENT_KEY_FILE).read_bytes()).address
        assert chain.balance(receiver) == 0
        warnings = [r.getMessage() for r in caplog.records if r.name == "agentmarket.api"]
        assert any(receiver in w and "holds no gas money on chain 1337: fund it" in w for w in warnings), warnings
    finally:
        chain.close()
