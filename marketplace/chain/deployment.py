"""Deploy agentmarket's contract set and keep a manifest of where it lives.

A manifest records the chain id, each contract's address, deploy block and artifact code hash.
Loading one checks that it belongs to the connected chain and that the code at every address is
the artifact's code, so a stale manifest fails loudly instead of talking to the wrong contract.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from eth_account.signers.local import LocalAccount

from marketplace.chain.artifacts import load_artifact
from marketplace.chain.chain import Chain
from marketplace.chain.contracts import (
    AgentRegistryContract,
    MarketplaceContract,
    PaymentChannelsContract,
    ReputationContract,
    TestUSD,
)
from marketplace.chain.market import Market
from marketplace.errors import AgentmarketError

MANIFEST_FORMAT = "agentmarket-deployment/1"
DEFAULT_MANIFEST = Path(".agentmarket") / "deployment.json"


class DeploymentError(AgentmarketError):
    """A manifest is missing, malformed, or does not match the connected chain."""


@dataclass(frozen=True)
class DeployedContract:
    """Where one contract of the set lives and what it cost to put there."""

    address: str
    code_hash: str
    deploy_block: int
    gas_used: int


@dataclass
class Deployment:
    """The contract set on one chain."""

    chain_id: int
    deployer: str
    contracts: dict[str, DeployedContract] = field(default_factory=dict)

    @property
    def deploy_block(self) -> int:
        """The first block an indexer must read from."""
        return min((c.deploy_block for c in self.contracts.values()), default=0)

    def address(self, name: str) -> str:
        """Address of contract ``name``."""
        try:
            return self.contracts[name].address
        except KeyError:
            raise DeploymentError(f"the deployment has no {name} contract (has: {', '.join(self.contracts)})") from None

    def token(self, chain: Chain) -> TestUSD:
        """The TestUSD token of this deployment."""
        return TestUSD(chain, self.address("TestUSD"))

    def market(self, chain: Chain) -> Market:
        """Every contract of this deployment, bound to ``chain``."""
        return Market(
            chain=chain,
            token=self.token(chain),
            marketplace=MarketplaceContract(chain, self.address("Marketplace")),
            channels=PaymentChannelsContract(chain, self.address("PaymentChannels")),
            agents=AgentRegistryContract(chain, self.address("AgentRegistry")),
            reputation=ReputationContract(chain, self.address("ReputationRegistry")),
        )

    def to_json(self) -> dict[str, Any]:
        """The manifest as JSON-ready data."""
        return {
            "format": MANIFEST_FORMAT,
            "chainId": self.chain_id,
            "deployer": self.deployer,
            "deployBlock": self.deploy_block,
            "contracts": {name: asdict(c) for name, c in self.contracts.items()},
        }

    def save(self, path: Path) -> Path:
        """Write the manifest to ``path`` (parents created)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        return path


# name -> constructor arguments given the deployer and what is deployed so far. Order matters:
# a contract may take an earlier one's address.
DEFAULT_FEE_BPS = 100
#: ReputationRegistry's payment floor (base units of the asset's token; 0.01 tUSD): a rater must have
#: paid at least max(the asset's price, this) into the asset's vault, so a price of 0 mints no raters.
MIN_RATING_PAYMENT = 10_000

DEPLOY_PLAN: list[tuple[str, Callable[[LocalAccount, Deployment, int], tuple[Any, ...]]]] = [
    ("TestUSD", lambda deployer, _done, _fee: (deployer.address,)),
    ("RevenueVault", lambda _deployer, _done, _fee: ()),
    ("Marketplace", lambda deployer, done, fee: (done.address("RevenueVault"), deployer.address, fee)),
    ("AgentRegistry", lambda _deployer, _done, _fee: ()),
    ("PaymentChannels", lambda _deployer, done, _fee: (done.address("Marketplace"),)),
    (
        "ReputationRegistry",
        lambda _deployer, done, _fee: (
            done.address("Marketplace"),
            done.address("PaymentChannels"),
            done.address("AgentRegistry"),
            MIN_RATING_PAYMENT,
        ),
    ),
]


def deploy_all(chain: Chain, deployer: LocalAccount, *, fee_bps: int = DEFAULT_FEE_BPS) -> Deployment:
    """Deploy every contract of the set with ``deployer`` (token admin, faucet minter and fee treasury)."""
    deployment = Deployment(chain_id=chain.chain_id, deployer=deployer.address)
    for name, constructor_args in DEPLOY_PLAN:
        artifact = load_artifact(name)
        factory = chain.w3.eth.contract(abi=artifact.abi, bytecode=artifact.bytecode)
        receipt = chain.send(factory.constructor(*constructor_args(deployer, deployment, fee_bps)), deployer)
        deployment.contracts[name] = DeployedContract(
            address=receipt["contractAddress"],
            code_hash=artifact.code_hash,
            deploy_block=receipt["blockNumber"],
            gas_used=receipt["gasUsed"],
        )
    return deployment


def parse_manifest(data: Any, source: str) -> Deployment:
    """Build a Deployment from manifest JSON data (``source`` names it in errors)."""
    try:
        if data.get("format") != MANIFEST_FORMAT:
            raise DeploymentError(f"{source} is not an agentmarket manifest (format {data.get('format')!r})")
        return Deployment(
            chain_id=int(data["chainId"]),
            deployer=data["deployer"],
            contracts={name: DeployedContract(**c) for name, c in data["contracts"].items()},
        )
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DeploymentError(f"manifest {source} is malformed: {exc}") from None


def read_manifest(path: Path) -> Deployment:
    """Parse a manifest file without touching any chain."""
    if not path.is_file():
        raise DeploymentError(f"no deployment manifest at {path}; run `agentmarket deploy` or `agentmarket node`")
    try:
        data = json.loads(path.read_text())
    except ValueError as exc:
        raise DeploymentError(f"manifest {path} is malformed: {exc}") from None
    return parse_manifest(data, str(path))


def verify_deployment(deployment: Deployment, chain: Chain, source: str) -> Deployment:
    """Check ``deployment`` against ``chain``: same chain id, every contract's code in place."""
    if deployment.chain_id != chain.chain_id:
        raise DeploymentError(
            f"manifest {source} is for chain id {deployment.chain_id}, but the connected chain has chain id "
            f"{chain.chain_id}; deploy to this chain or pass the right --manifest"
        )
    for name, deployed in deployment.contracts.items():
        artifact = load_artifact(name)
        code = bytes(chain.w3.eth.get_code(deployed.address))
        if not artifact.runtime_code_matches(code):
            state = "no code" if not code else "different code"
            raise DeploymentError(
                f"manifest {source}: {name} at {deployed.address} has {state} on chain {chain.chain_id}; "
                "the chain was restarted or the contracts changed — redeploy"
            )
    return deployment


def load_deployment(path: Path, chain: Chain) -> Deployment:
    """Read a manifest and check it against ``chain``: same chain id, every contract's code in place."""
    return verify_deployment(read_manifest(path), chain, str(path))
