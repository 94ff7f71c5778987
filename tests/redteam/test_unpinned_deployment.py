"""Hostile server with its own deployment: the CLI pays it real tUSD unless the user set AGENTMARKET_MANIFEST.

A client checks a 402 against "the chain" — but the chain of the deployment *the server names*, whose
contracts need only have the right code. Anyone can deploy the same contracts, and `Marketplace.publish`
accepts any token: a fake gateway names a deployment with its own Marketplace (whose asset 1 pays the
attacker's vault) and the REAL TestUSD. Every check passes — token, EIP-712 domain, payTo =
`vaultOf(1)` of *that* Marketplace, amount = *its* price — and the victim's real tUSD goes to the
attacker. The SDK can pin a trusted deployment and the CLI reads one from `$AGENTMARKET_MANIFEST`, but
by default pins nothing, even in the directory where `agentmarket node` just wrote
`.agentmarket/deployment.json` (which `serve` and `deploy` read by default).
Expected: the CLI pins a deployment by default (the manifest the node wrote, or the first deployment it
saw for a chain), so a server following other contracts is refused before anything is signed.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from marketplace.chain import connect
from marketplace.chain.deployment import Deployment, deploy_all
from marketplace.chain.records import AssetKind
from marketplace.chain.units import to_units
from marketplace.wallet_file import create_wallet
from tests.helpers.chain import fund
from tests.helpers.cli import run_cli
from tests.helpers.fake_gateway import FakeGateway

pytestmark = pytest.mark.backend("anvil")


@pytest.fixture(scope="module")
def env() -> Iterator:
    chain = connect("anvil")
    try:
        real = deploy_all(chain, chain.accounts[0])
        yield chain, real
    finally:
        chain.close()


def test_the_cli_does_not_pay_a_server_that_follows_other_contracts(env, tmp_path, monkeypatch):
    chain, real = env
    market = real.market(chain)
    attacker = fund(chain, market, 0)
    own = deploy_all(chain, attacker)  # the same contracts, the attacker's instance...
    fake = Deployment(
        chain_id=own.chain_id, deployer=own.deployer, contracts={**own.contracts, "TestUSD": real.contracts["TestUSD"]}
    )  # ...with the real token
    fake_market = fake.market(chain)
    fake_market.marketplace.publish(attacker, kind=AssetKind.DATASET, content_hash=b"\x01" * 32, uri="iris.csv",
                                    price=to_units(3), token=market.token.address,
                                    payees=[(attacker.address, 10_000)])  # fmt: skip

    # The victim: the README's buyer, in the directory where `agentmarket node` wrote the real manifest.
    monkeypatch.setenv("AGENTMARKET_KEYSTORE_SCRYPT_N", "1024")
    victim = create_wallet(tmp_path / "agent.json", "pw")
    chain.send_eth(chain.accounts[0], victim.address, 10**18)
    market.token.mint(chain.accounts[0], victim.address, to_units(20))
    real.save(tmp_path / ".agentmarket" / "deployment.json")
    before = market.token.balance_of(victim.address)
    with FakeGateway(chain, fake, attacker, lambda required: required) as gateway:
        result = run_cli("download", "1", "--x402", "--out", str(tmp_path / "iris.csv"), cwd=tmp_path,
                         env={"AGENTMARKET_WALLET": str(tmp_path / "agent.json"), "AGENTMARKET_PASSWORD": "pw",
                              "AGENTMARKET_SERVER": gateway.url, "AGENTMARKET_RPC": chain.rpc_url})  # fmt: skip
    lost = before - market.token.balance_of(victim.address)
    assert lost == 0, (
        f"the CLI paid {lost} real tUSD units to the attacker's vault {fake_market.marketplace.vault_of(1)} of a "
        f"Marketplace at {fake_market.marketplace.address} (the node's manifest names {market.marketplace.address}); "
        f"it said: {(result.stderr or result.stdout).strip()[:200]!r}"
    )
