"""Which deployment a client trusts (red-team finding 6, the kind): the CLI pins one by default.

A gateway can name its own copy of the contracts around the real TestUSD: every check against "the chain" then
passes against the wrong Marketplace. The CLI trusts the local manifest when it is for this chain, else the
deployment it first saw on this chain (chain id + genesis hash), pinned next to the wallet; a server following
any other is refused in one line saying how to trust it deliberately (``--trust-server``, or the pin file), and
pins are per chain, so a restarted node is a new chain, not an impostor. ``connect_trusted`` against fake
gateways on a real anvil, then the CLI as a subprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator

import pytest
from eth_account import Account

from marketplace.chain import Chain, connect
from marketplace.chain.deployment import Deployment, deploy_all
from marketplace.chain.identity import ChainIdentity
from marketplace.client import UntrustedDeployment
from marketplace.client.pins import PIN_FILE, DeploymentPins, connect_trusted
from tests.helpers.cli import AGENTMARKET, assert_one_line_error
from tests.helpers.fake_gateway import FakeGateway
from tests.helpers.x402 import forged_deployment

pytestmark = pytest.mark.backend("anvil")


@pytest.fixture(scope="module")
def env() -> Iterator[tuple[Chain, Deployment, Deployment, int]]:
    """An anvil with the real deployment and a thief's copy of it around the real token (and its asset id)."""
    chain = connect("anvil")
    try:
        real = deploy_all(chain, chain.accounts[0])
        forged, asset_id = forged_deployment(chain, real, chain.accounts[6])
        yield chain, real, forged, asset_id
    finally:
        chain.close()


def _marketplace(pin_file: DeploymentPins, chain: Chain) -> str:
    pin = pin_file.get(ChainIdentity.of(chain))
    assert pin is not None
    return pin.deployment.address("Marketplace")


def test_first_use_pins_the_servers_deployment_and_another_is_refused(env, tmp_path):
    chain, real, forged, _ = env
    alice, thief = chain.accounts[1], chain.accounts[6]
    pins = DeploymentPins(tmp_path / PIN_FILE)
    with FakeGateway(chain, real, thief, lambda r: r) as honest, FakeGateway(chain, forged, thief, lambda r: r) as fake:
        connect_trusted(honest.url, alice, chain, pins=pins)
        assert _marketplace(pins, chain) == real.address("Marketplace")
        assert pins.get(ChainIdentity.of(chain)).how == "first use"
        with pytest.raises(UntrustedDeployment) as refused:
            connect_trusted(fake.url, alice, chain, pins=pins)
        message = str(refused.value)
        assert "\n" not in message and "nothing was signed" in message and "--trust-server" in message
        assert str(pins.path) in message and f"first use of {honest.url}" in message
        assert forged.address("AgentRegistry") in message or forged.address("Marketplace") in message

        connect_trusted(fake.url, alice, chain, pins=pins, trust_server=True)  # deliberately: pinned instead
        assert _marketplace(pins, chain) == forged.address("Marketplace")
        with pytest.raises(UntrustedDeployment):  # the pin moved: the other one is now the stranger
            connect_trusted(honest.url, alice, chain, pins=pins)
    assert fake.signatures == [] and honest.signatures == []


def test_a_local_manifest_is_trusted_only_for_its_own_chain(env, tmp_path):
    chain, real, forged, _ = env
    alice, thief = chain.accounts[1], chain.accounts[6]
    pins = DeploymentPins(tmp_path / PIN_FILE)
    local = real.save(tmp_path / "deployment.json")
    with FakeGateway(chain, real, thief, lambda r: r) as honest, FakeGateway(chain, forged, thief, lambda r: r) as fake:
        connect_trusted(honest.url, alice, chain, pins=pins, local_manifest=local)
        with pytest.raises(UntrustedDeployment) as refused:
            connect_trusted(fake.url, alice, chain, pins=pins, local_manifest=local)
        assert f"than the one you trust on chain {chain.chain_id}, genesis " in str(refused.value)
        assert f"(your manifest {local})" in str(refused.value)
        assert not pins.path.exists()  # the manifest is the trust: nothing pinned

        elsewhere = json.loads(local.read_text()) | {"chainId": 1}  # a manifest of another chain says nothing here
        local.write_text(json.dumps(elsewhere))
        connect_trusted(fake.url, alice, chain, pins=pins, local_manifest=local)  # so: trust on first use
        assert _marketplace(pins, chain) == forged.address("Marketplace")


def test_pins_are_per_chain_so_a_restarted_node_is_a_new_chain(env, tmp_path):
    chain, real, _, _ = env
    pins = DeploymentPins(tmp_path / PIN_FILE)
    with FakeGateway(chain, real, chain.accounts[6], lambda r: r) as honest:
        connect_trusted(honest.url, chain.accounts[1], chain, pins=pins)
    restarted = connect("anvil")  # same chain id, same deployer and nonces: the same addresses, a new genesis
    try:
        again = deploy_all(restarted, restarted.accounts[0])
        assert again.address("Marketplace") == real.address("Marketplace")
        other = deploy_all(restarted, restarted.accounts[2])  # and on it, someone else's contracts
        with FakeGateway(restarted, other, restarted.accounts[6], lambda r: r) as server:
            connect_trusted(server.url, restarted.accounts[1], restarted, pins=pins)  # first use on this chain
        assert _marketplace(pins, restarted) == other.address("Marketplace")
        assert _marketplace(pins, chain) == real.address("Marketplace")  # the first chain's pin is untouched
        assert len(json.loads(pins.path.read_text())) == 2
    finally:
        restarted.close()


def test_the_cli_pins_on_first_use_and_refuses_another_deployment_in_one_line(env, tmp_path):
    chain, real, forged, asset_id = env
    alice, thief = chain.accounts[1], chain.accounts[6]
    (tmp_path / "alice.json").write_text(json.dumps(Account.encrypt(alice.key, "pw", kdf="scrypt", iterations=1024)))
    token = real.market(chain).token
    before = token.balance_of(alice.address)

    def cli(server: str, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        env_vars = {**os.environ, "AGENTMARKET_RPC": chain.rpc_url or "", "AGENTMARKET_SERVER": server,
                    "AGENTMARKET_PASSWORD": "pw", "AGENTMARKET_WALLET": str(tmp_path / "alice.json")}  # fmt: skip
        env_vars.update(extra)
        env_vars.pop("AGENTMARKET_MANIFEST", None)
        return subprocess.run([*AGENTMARKET, *args], cwd=tmp_path, env=env_vars, capture_output=True, text=True,
                              timeout=120)  # fmt: skip

    with FakeGateway(chain, real, thief, lambda r: r) as honest, FakeGateway(chain, forged, thief, lambda r: r) as fake:
        shown = cli(honest.url, "wallet", "show", "--json")
        assert shown.returncode == 0, shown.stderr
        pins = DeploymentPins(tmp_path / PIN_FILE)
        assert _marketplace(pins, chain) == real.address("Marketplace")

        refused = cli(fake.url, "invoke", str(asset_id), "--input", "[1]")
        assert_one_line_error(refused, "follows another deployment than the one you trust", "(pinned on first use of",
                              "--trust-server", "AGENTMARKET_TRUST_SERVER=1", str(pins.path))  # fmt: skip
        assert "nothing was signed" in refused.stderr
        assert fake.signatures == [] and token.balance_of(alice.address) == before

        trusted = cli(fake.url, "wallet", "show", "--json", AGENTMARKET_TRUST_SERVER="1")
        assert trusted.returncode == 0, trusted.stderr
        assert _marketplace(pins, chain) == forged.address("Marketplace")
        assert pins.get(ChainIdentity.of(chain)).how == "--trust-server"
