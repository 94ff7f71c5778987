"""The committed contract artifacts are exactly what the sources compile to today, and the contract set
keeps one meaning per error name and depends on itself only through interfaces."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from eth_abi import encode as abi_encode
from eth_utils import keccak

from marketplace.chain import artifact_names, load_artifact
from marketplace.chain.build import CONTRACTS_DIR, compile_contracts, source_files, stale_artifacts
from marketplace.chain.errors import decode_revert_data

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


def _error_shapes(abis: dict[str, list[dict]]) -> dict[str, set[str]]:
    """Error name -> every shape it has across ``abis`` (contract -> ABI): ``Name(type name, ...)``."""
    shapes: dict[str, set[str]] = {}
    for abi in abis.values():
        for entry in abi:
            if entry["type"] == "error":
                params = ", ".join(f"{p['type']} {p['name']}" for p in entry["inputs"])
                shapes.setdefault(entry["name"], set()).add(f"{entry['name']}({params})")
    return shapes


def _reused_error_names(abis: dict[str, list[dict]]) -> dict[str, set[str]]:
    return {name: shapes for name, shapes in _error_shapes(abis).items() if len(shapes) > 1}


def test_an_error_name_means_one_signature_across_every_contract():
    """A revert is decoded by selector over every artifact and reported by name (``exc.error``,
    ``args_by_name``): a name declared twice with other argument types, or other argument names,
    would mean two things to whoever matches on it, and one of them would be misnamed."""
    abis = {name: load_artifact(name).abi for name in artifact_names()}
    assert _reused_error_names(abis) == {}
    # The check itself sees a reuse (the shape PaymentChannels' old NotAssetOwner had).
    clash = {
        "A": [{"type": "error", "name": "NotOwner", "inputs": [{"type": "uint256", "name": "assetId"}]}],
        "B": [{"type": "error", "name": "NotOwner", "inputs": [{"type": "uint256", "name": "channelId"}]}],
    }
    assert set(_reused_error_names(clash)) == {"NotOwner"}


def _zero(abi_type: str) -> object:
    if abi_type.endswith("]"):
        return []
    if abi_type == "address":
        return "0x" + "00" * 20
    if abi_type == "bool":
        return False
    if abi_type == "string":
        return ""
    if abi_type.startswith("bytes"):
        return b"\0" * int(abi_type[5:] or 0)
    assert abi_type.startswith(("uint", "int")), abi_type
    return 0


def test_every_declared_error_decodes_to_its_own_name_and_argument_names():
    """What ``ContractRevert`` reports for each error is what the contract that raises it declares."""
    for name in artifact_names():
        for entry in load_artifact(name).abi:
            if entry["type"] != "error":
                continue
            types = [p["type"] for p in entry["inputs"]]
            data = keccak(text=f"{entry['name']}({','.join(types)})")[:4] + abi_encode(types, [_zero(t) for t in types])
            decoded = decode_revert_data(data)
            assert (decoded.error, list(decoded.args_by_name)) == (
                entry["name"],
                [p["name"] for p in entry["inputs"]],
            ), f"{name}.{entry['name']}"


_IMPORT = re.compile(r"""^\s*import\s[^;]*?["']([^"']+)["']\s*;""", re.MULTILINE)


def _implementation_imports(source: Path, src_dir: Path) -> list[str]:
    """The imports of ``source`` that reach another contract's implementation: anything but
    OpenZeppelin, ``interfaces/``, and (for a test contract under ``testing/``) ``testing/``."""
    allowed = [src_dir / "interfaces"]
    if source.parent == src_dir / "testing":
        allowed.append(src_dir / "testing")
    bad = []
    for target in _IMPORT.findall(source.read_text()):
        if target.startswith("@openzeppelin/contracts/"):
            continue
        resolved = (source.parent / target).resolve()
        if not any(resolved.is_relative_to(folder.resolve()) for folder in allowed):
            bad.append(target)
    return bad


def test_contracts_import_only_interfaces_of_each_other(tmp_path):
    src_dir = CONTRACTS_DIR / "src"
    sources = source_files()
    assert {p.name for p in sources} >= {"IMarketplace.sol", "IPaymentChannels.sol", "IAgentRegistry.sol"}
    assert {str(p.relative_to(src_dir)): _implementation_imports(p, src_dir) for p in sources} == {
        str(p.relative_to(src_dir)): [] for p in sources
    }
    # The check itself sees an implementation import (as PaymentChannels once imported Marketplace.sol).
    (tmp_path / "testing").mkdir()
    for path, text in {
        "A.sol": 'import {Marketplace} from "./Marketplace.sol";\nimport {I} from "./interfaces/I.sol";',
        "testing/T.sol": 'import {X} from "./X.sol";\nimport {RevenueVault} from "../RevenueVault.sol";',
    }.items():
        (tmp_path / path).write_text(text)
    assert _implementation_imports(tmp_path / "A.sol", tmp_path) == ["./Marketplace.sol"]
    assert _implementation_imports(tmp_path / "testing/T.sol", tmp_path) == ["../RevenueVault.sol"]


_DECLARATION = re.compile(r"^[ \t]*(?:function|event|error)\s+(\w+)\s*\(([^;{]*?)\)([^;{]*);", re.MULTILINE)
_PARAM_KEYWORDS = {"memory", "calldata", "storage", "indexed"}


def _natspec_gaps(text: str) -> list[str]:
    """Every function, event and error of an interface without its ``@notice``, a ``@param`` for
    each named parameter, or one ``@return`` per returned value (the ``///`` lines right above it)."""
    gaps = []
    for match in _DECLARATION.finditer(text):
        name, params, rest = match.groups()
        above = text[: match.start()].split("\n")
        doc_lines = []
        for line in reversed(above[:-1] if above[-1].strip() == "" else above):
            if not line.strip().startswith("///"):
                break
            doc_lines.append(line)
        doc = "\n".join(doc_lines)
        if "@notice" not in doc:
            gaps.append(f"{name}: @notice")
        for param in params.split(","):
            words = param.split()
            if len(words) > 1 and words[-1] not in _PARAM_KEYWORDS and f"@param {words[-1]} " not in doc:
                gaps.append(f"{name}: @param {words[-1]}")
        returns = re.search(r"returns\s*\((.*)\)", rest, re.DOTALL)
        if returns and doc.count("@return") != len(returns.group(1).split(",")):
            gaps.append(f"{name}: @return")
    return gaps


def test_every_interface_declaration_carries_natspec():
    interfaces = sorted((CONTRACTS_DIR / "src" / "interfaces").glob("*.sol"))
    assert {p.name: _natspec_gaps(p.read_text()) for p in interfaces} == {p.name: [] for p in interfaces}
    # The check itself sees a missing @param, @notice and @return.
    undocumented = (
        "    /// @notice Buys.\n    /// @param assetId The asset.\n"
        "    function buy(uint256 assetId, uint256 maxPrice) external returns (uint256);\n"
        "    error Bare(uint256 id);\n"
    )
    assert _natspec_gaps(undocumented) == ["buy: @param maxPrice", "buy: @return", "Bare: @notice", "Bare: @param id"]
