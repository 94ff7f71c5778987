"""The committed contract artifacts are exactly what the sources compile to today."""

from __future__ import annotations

import json
import shutil

import pytest

from marketplace.chain import artifact_names, load_artifact
from marketplace.chain.build import CONTRACTS_DIR, compile_contracts, stale_artifacts

needs_node = pytest.mark.skipif(
    shutil.which("node") is None or not (CONTRACTS_DIR / "node_modules" / "solc").is_dir(),
    reason="Node or solc-js missing: run `npm ci --prefix contracts` (CI has both)",
)


@needs_node
def test_committed_artifacts_match_a_fresh_compile():
    result = compile_contracts()
    assert set(result.artifacts) == set(artifact_names())
    assert stale_artifacts(result) == [], "run `agentmarket contracts build` and commit the artifacts"
    pinned = json.loads((CONTRACTS_DIR / "package.json").read_text())["dependencies"]["solc"]
    assert result.compiler_version.startswith(pinned + "+")


def test_artifacts_carry_what_deployment_needs():
    for name in artifact_names():
        artifact = load_artifact(name)
        assert artifact.bytecode and artifact.deployed_bytecode and artifact.abi
        assert artifact.source_hash.startswith("sha256:")
        assert artifact.compiler_version.startswith("0.8.")
        assert artifact.runtime_code_matches(artifact.deployed_bytecode)
        assert not artifact.runtime_code_matches(artifact.deployed_bytecode[:-1] + b"\x00")
