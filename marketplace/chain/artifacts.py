"""Compiled contract artifacts shipped inside the package (built by ``agentmarket contracts build``)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from eth_utils import keccak

from marketplace.errors import AgentmarketError

ARTIFACTS_DIR = Path(__file__).resolve().parent / "artifacts"


@dataclass(frozen=True)
class Artifact:
    """One compiled contract: ABI, creation and runtime bytecode, and where it came from."""

    name: str
    abi: list[dict[str, Any]]
    bytecode: bytes
    deployed_bytecode: bytes
    immutable_references: dict[str, list[dict[str, int]]]
    source_name: str
    source_hash: str
    compiler_version: str

    @property
    def code_hash(self) -> str:
        """keccak256 of the runtime bytecode with immutables zeroed: the artifact's identity."""
        return "0x" + keccak(self.deployed_bytecode).hex()

    def runtime_code_matches(self, onchain_code: bytes) -> bool:
        """True if ``onchain_code`` is this artifact's runtime code (immutable slots ignored)."""
        if len(onchain_code) != len(self.deployed_bytecode):
            return False
        masked = bytearray(onchain_code)
        for references in self.immutable_references.values():
            for ref in references:
                start, length = ref["start"], ref["length"]
                masked[start : start + length] = self.deployed_bytecode[start : start + length]
        return bytes(masked) == self.deployed_bytecode


@cache
def load_artifact(name: str) -> Artifact:
    """Load the committed artifact of contract ``name``."""
    path = ARTIFACTS_DIR / f"{name}.json"
    if not path.is_file():
        known = ", ".join(sorted(artifact_names())) or "none"
        raise AgentmarketError(f"no artifact for contract {name!r} (known: {known}); run agentmarket contracts build")
    data = json.loads(path.read_text())
    return Artifact(
        name=data["contractName"],
        abi=data["abi"],
        bytecode=bytes.fromhex(data["bytecode"][2:]),
        deployed_bytecode=bytes.fromhex(data["deployedBytecode"][2:]),
        immutable_references=data["immutableReferences"],
        source_name=data["sourceName"],
        source_hash=data["sourceHash"],
        compiler_version=data["compiler"]["version"],
    )


def artifact_names() -> list[str]:
    """Names of every committed artifact."""
    return sorted(p.stem for p in ARTIFACTS_DIR.glob("*.json"))
