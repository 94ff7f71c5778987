"""`agentmarket invoke` (no --channel) and `agentmarket download --x402` against lying gateways and the
honest server, as subprocesses on a real anvil node (issue 12 §6, x402): one line, exit 1, nothing signed."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from eth_account import Account
from pydantic import SecretStr
from web3 import Web3

from marketplace.api import Settings, create_app
from marketplace.chain import Chain, connect
from marketplace.chain.deployment import Deployment, deploy_all
from marketplace.chain.records import AssetKind
from marketplace.chain.units import to_units
from marketplace.content import ContentStore
from tests.helpers.cli import AGENTMARKET, assert_one_line_error
from tests.helpers.fake_gateway import FakeGateway
from tests.helpers.servers import serving
from tests.helpers.x402 import LIES, TEN_YEARS, forged_deployment

pytestmark = pytest.mark.backend("anvil")

PRICE = to_units("0.01")
DATA_PRICE = to_units("0.25")
CONTENT = b"x,y\n" + b"0.1,1\n" * 500
PASSWORD = "correct horse"


def echo(payload):
    """A stand-in model."""
    return {"echo": payload}


class Stack:
    """A fresh anvil with the contracts, a model and a dataset of bob's, alice's keystore, the real server."""

    def __init__(self, chain: Chain, deployment: Deployment, home: Path) -> None:
        self.chain, self.deployment, self.home = chain, deployment, home
        self.market = deployment.market(chain)
        admin, self.alice, bob = chain.accounts[0], chain.accounts[1], chain.accounts[2]
        self.thief = chain.accounts[6]
        self.market.token.mint(admin, self.alice.address, to_units(100))

        def publish(kind: AssetKind, price: int, content_hash: bytes) -> int:
            return self.market.marketplace.publish(
                bob, kind=kind, content_hash=content_hash, uri="ipfs://x", price=price,
                token=self.market.token.address, payees=[(bob.address, 10_000)],
            )  # fmt: skip

        self.model = publish(AssetKind.MODEL, PRICE, b"\x0b" * 32)
        self.dataset = publish(AssetKind.DATASET, DATA_PRICE, hashlib.sha256(CONTENT).digest())
        self.wallet = home / "alice.json"
        self.wallet.write_text(json.dumps(Account.encrypt(self.alice.key, PASSWORD, kdf="scrypt", iterations=1024)))

    def env(self, server: str) -> dict[str, str]:
        return {**os.environ, "AGENTMARKET_RPC": self.chain.rpc_url or "", "AGENTMARKET_SERVER": server,
                "AGENTMARKET_WALLET": str(self.wallet), "AGENTMARKET_PASSWORD": PASSWORD}  # fmt: skip

    def spawn(self, server: str, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen([*AGENTMARKET, *args], cwd=self.home, env={**self.env(server), **(env or {})},
                                text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip

    def balances(self) -> tuple[int, int, int, int]:
        token, marketplace = self.market.token, self.market.marketplace
        vaults = (marketplace.vault_of(self.model), marketplace.vault_of(self.dataset))
        return (token.balance_of(self.alice.address), token.balance_of(self.thief.address),
                token.balance_of(vaults[0]), token.balance_of(vaults[1]))  # fmt: skip


def finished(process: subprocess.Popen[str]) -> subprocess.CompletedProcess[str]:
    stdout, stderr = process.communicate(timeout=120)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    chain = connect("anvil")
    try:
        yield Stack(chain, deploy_all(chain, chain.accounts[0]), tmp_path_factory.mktemp("x402-cli"))
    finally:
        chain.close()


@pytest.fixture(scope="module")
def honest_url(stack: Stack, tmp_path_factory) -> Iterator[str]:
    data_dir = tmp_path_factory.mktemp("server")

    async def once():
        yield CONTENT

    store = ContentStore.for_chain(data_dir / "content", stack.chain, stack.deployment.address("Marketplace"))
    asyncio.run(store.put(once(), asset_id=stack.dataset, version=1, sha256="0x" + hashlib.sha256(CONTENT).hexdigest(),
                          uploader=stack.chain.accounts[2].address, max_bytes=len(CONTENT)))  # fmt: skip
    relayer_key = SecretStr(Web3.to_hex(stack.chain.accounts[3].key))
    settings = Settings(manifest=stack.deployment.save(data_dir / "deployment.json"), data_dir=data_dir,
                        relayer_key=relayer_key, settle_interval=3600)  # fmt: skip
    with serving(create_app(settings, chain=stack.chain, model_handlers={stack.model: echo})) as url:
        yield url


#: The lies of the issue (the SDK test tries more; the CLI pays through the same SDK code).
CLI_LIES = ("amount x950", "payTo attacker", "asset another token", "network another chain", "scheme other",
            "timeout 10 years", "domain name wrong")  # fmt: skip


def test_cli_refuses_every_lie_in_one_line_and_signs_nothing(stack: Stack):
    other = "0x" + "0e" * 20  # the asset lie: any other token
    before = stack.balances()
    fakes = {case: FakeGateway(stack.chain, stack.deployment, stack.thief, LIES[case][0](stack.thief.address, other))
             for case in CLI_LIES}  # fmt: skip
    try:
        for fake in fakes.values():
            fake.__enter__()
        invoked = {case: stack.spawn(fake.url, "invoke", str(stack.model), "--input", "[1, 2]")
                   for case, fake in fakes.items()}  # fmt: skip
        downloaded = stack.spawn(fakes["payTo attacker"].url, "download", str(stack.dataset), "--x402", "--out",
                                 str(stack.home / "stolen.csv"))  # fmt: skip
        results = {case: finished(process) for case, process in invoked.items()}
        download = finished(downloaded)
    finally:
        for fake in fakes.values():
            fake.__exit__()
    for case, result in results.items():
        field = LIES[case][1]
        assert_one_line_error(result, f"asks {field} ", "nothing was signed")
        assert "Traceback" not in result.stderr, case
    assert f"asks maxTimeoutSeconds {TEN_YEARS}, but this client's longest" in results["timeout 10 years"].stderr
    assert f"asks payTo {stack.thief.address}, but Marketplace.vaultOf" in results["payTo attacker"].stderr
    assert_one_line_error(download, f"asks payTo {stack.thief.address}, but Marketplace.vaultOf({stack.dataset})")
    assert not (stack.home / "stolen.csv").exists()
    assert all(fake.signatures == [] and fake.stolen == [] for fake in fakes.values())
    assert stack.balances() == before


def test_cli_pays_the_honest_server(stack: Stack, honest_url: str):
    alice, thief, model_vault, data_vault = stack.balances()
    invoked = finished(stack.spawn(honest_url, "invoke", str(stack.model), "--input", "[1, 2]"))
    assert invoked.returncode == 0, invoked.stderr
    called = json.loads(invoked.stdout)
    assert called["output"] == {"echo": [1, 2]}
    assert (called["payment"]["amount"], called["payment"]["payer"]) == (str(PRICE), stack.alice.address)

    out = stack.home / "bought.csv"
    downloaded = finished(stack.spawn(honest_url, "download", str(stack.dataset), "--x402", "--out", str(out)))
    assert downloaded.returncode == 0, downloaded.stderr
    assert out.read_bytes() == CONTENT
    assert "paid 0.250000 tUSD to " + stack.market.marketplace.vault_of(stack.dataset) in downloaded.stdout
    assert stack.balances() == (alice - PRICE - DATA_PRICE, thief, model_vault + PRICE, data_vault + DATA_PRICE)

    sealed_and_paid = finished(stack.spawn(honest_url, "download", str(stack.dataset), "--x402", "--agent", "1",
                                           "--out", str(out)))  # fmt: skip
    assert_one_line_error(sealed_and_paid, "--agent", "--x402")


def test_cli_trusts_the_manifest_in_its_environment(stack: Stack):
    """With $AGENTMARKET_MANIFEST set, a gateway serving another deployment (a copy of the contracts
    around the real token, pricing the thief's asset 950x) is refused before anything is signed."""
    forged, asset_id = forged_deployment(stack.chain, stack.deployment, stack.thief)
    trusted = stack.deployment.save(stack.home / "trusted.json")
    before = stack.balances()
    with FakeGateway(stack.chain, forged, stack.thief, lambda required: required) as fake:
        result = finished(stack.spawn(fake.url, "invoke", str(asset_id), "--input", "[1]",
                                      env={"AGENTMARKET_MANIFEST": str(trusted)}))  # fmt: skip
    assert_one_line_error(result, "follows another deployment than your manifest", "refusing to use it")
    assert fake.signatures == [] and stack.balances() == before
