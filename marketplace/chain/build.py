"""Offline Solidity build: solc-js from npm through standard JSON, one artifact per contract.

Artifacts are committed inside the package (``marketplace/chain/artifacts``) so that installing
agentmarket needs neither Node nor a compiler; only rebuilding them does.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from marketplace.chain.artifacts import ARTIFACTS_DIR
from marketplace.errors import AgentmarketError

CONTRACTS_DIR = Path(__file__).resolve().parents[2] / "contracts"
EVM_VERSION = "prague"
OPTIMIZER_RUNS = 200


class BuildError(AgentmarketError):
    """The contracts could not be compiled (toolchain missing or compiler errors)."""


@dataclass(frozen=True)
class BuildResult:
    """What a build produced: artifact name -> serialized JSON text."""

    artifacts: dict[str, str]
    compiler_version: str


def source_files(contracts_dir: Path = CONTRACTS_DIR) -> list[Path]:
    """Every Solidity source under ``contracts/src``, sorted."""
    return sorted((contracts_dir / "src").rglob("*.sol"))


def _standard_json_input(contracts_dir: Path) -> dict:
    sources = {
        path.relative_to(contracts_dir).as_posix(): {"content": path.read_text()}
        for path in source_files(contracts_dir)
    }
    if not sources:
        raise BuildError(f"no Solidity sources under {contracts_dir / 'src'}")
    return {
        "language": "Solidity",
        "sources": sources,
        "settings": {
            "optimizer": {"enabled": True, "runs": OPTIMIZER_RUNS},
            "evmVersion": EVM_VERSION,
            "viaIR": True,
            "outputSelection": {
                "*": {
                    "*": [
                        "abi",
                        "evm.bytecode.object",
                        "evm.deployedBytecode.object",
                        "evm.deployedBytecode.immutableReferences",
                    ]
                }
            },
        },
    }


def _run_solcjs(contracts_dir: Path, standard_input: dict) -> tuple[str, dict]:
    node = shutil.which("node")
    if node is None:
        raise BuildError("node is not installed; install Node.js 18+ to rebuild the contracts")
    if not (contracts_dir / "node_modules" / "solc").is_dir():
        raise BuildError(f"solc-js is not installed; run: npm ci --prefix {contracts_dir}")
    completed = subprocess.run(
        [node, str(contracts_dir / "compile.cjs")],
        input=json.dumps(standard_input),
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise BuildError(f"solc-js failed: {completed.stderr.strip()[-2000:]}")
    result = json.loads(completed.stdout)
    return result["solcVersion"], result["output"]


def compile_contracts(contracts_dir: Path = CONTRACTS_DIR) -> BuildResult:
    """Compile every contract under ``contracts/src`` and return its artifacts (not yet written)."""
    standard_input = _standard_json_input(contracts_dir)
    version, output = _run_solcjs(contracts_dir, standard_input)
    errors = [e for e in output.get("errors", []) if e.get("severity") == "error"]
    if errors:
        raise BuildError("\n".join(e.get("formattedMessage", e.get("message", "")) for e in errors))
    artifacts: dict[str, str] = {}
    for source_name, contracts in output["contracts"].items():
        if source_name not in standard_input["sources"]:  # imported library code (OpenZeppelin)
            continue
        source_hash = hashlib.sha256(standard_input["sources"][source_name]["content"].encode()).hexdigest()
        for name, compiled in contracts.items():
            bytecode = compiled["evm"]["bytecode"]["object"]
            if not bytecode:  # interfaces and abstract contracts cannot be deployed
                continue
            if name in artifacts:
                raise BuildError(f"two contracts are named {name}; artifact names must be unique")
            artifact = {
                "contractName": name,
                "sourceName": source_name,
                "sourceHash": f"sha256:{source_hash}",
                "compiler": {
                    "version": version,
                    "evmVersion": EVM_VERSION,
                    "optimizerRuns": OPTIMIZER_RUNS,
                    "viaIR": True,
                },
                "abi": compiled["abi"],
                "bytecode": "0x" + bytecode,
                "deployedBytecode": "0x" + compiled["evm"]["deployedBytecode"]["object"],
                "immutableReferences": compiled["evm"]["deployedBytecode"].get("immutableReferences", {}),
            }
            artifacts[name] = json.dumps(artifact, indent=2, sort_keys=True) + "\n"
    return BuildResult(artifacts=artifacts, compiler_version=version)


def stale_artifacts(result: BuildResult, artifacts_dir: Path = ARTIFACTS_DIR) -> list[str]:
    """Names of artifacts whose committed file differs from ``result`` (missing or extra count too)."""
    committed = {p.stem: p.read_text() for p in artifacts_dir.glob("*.json")}
    names = set(committed) | set(result.artifacts)
    return sorted(n for n in names if committed.get(n) != result.artifacts.get(n))


def write_artifacts(result: BuildResult, artifacts_dir: Path = ARTIFACTS_DIR) -> list[Path]:
    """Write ``result`` into ``artifacts_dir``, removing artifacts of contracts that no longer exist."""
    artifacts_dir.mkdir(parents=True, exist_ok=True)
    for old in artifacts_dir.glob("*.json"):
        if old.stem not in result.artifacts:
            old.unlink()
    written = []
    for name, text in sorted(result.artifacts.items()):
        path = artifacts_dir / f"{name}.json"
        path.write_text(text)
        written.append(path)
    return written
