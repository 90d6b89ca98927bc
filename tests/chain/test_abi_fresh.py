"""The contract artifacts shipped in agent/chain/abi match a fresh forge build of contracts/src.

    .venv/bin/python -m pytest tests/chain/test_abi_fresh.py

A stale artifact means the agent would deploy or call a contract other than the one in the repository:
rebuild and re-export with ``scripts/export-abi --build`` and commit the JSON files.
"""

from __future__ import annotations

import json
from importlib.machinery import SourceFileLoader
from importlib.util import module_from_spec, spec_from_loader
from pathlib import Path
from types import ModuleType

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_DIR = REPO_ROOT / "agent" / "chain" / "abi"


def _load_export_script() -> ModuleType:
    """scripts/export-abi has no .py suffix (it is a command), so load it by path."""
    loader = SourceFileLoader("export_abi", str(REPO_ROOT / "scripts" / "export-abi"))
    spec = spec_from_loader(loader.name, loader)
    assert spec is not None
    module = module_from_spec(spec)
    loader.exec_module(module)
    return module


export_abi = _load_export_script()


@pytest.mark.timeout(300)
def test_shipped_artifacts_match_fresh_build(tmp_path: Path) -> None:
    if export_abi.find_forge() is None:
        pytest.skip(
            "forge is not installed (scripts/setup installs it from npm); cannot rebuild the contracts"
        )
    export_abi.build(tmp_path / "out", cache_dir=tmp_path / "cache")
    fresh_dir = tmp_path / "abi"
    export_abi.export(tmp_path / "out", fresh_dir)

    fresh = {path.name: path.read_text() for path in fresh_dir.glob("*.json")}
    shipped = {path.name: path.read_text() for path in SHIPPED_DIR.glob("*.json")}
    fix = "run scripts/export-abi --build and commit agent/chain/abi"
    assert sorted(shipped) == sorted(fresh), f"shipped {sorted(shipped)} != built {sorted(fresh)}: {fix}"
    for name, text in fresh.items():
        assert shipped[name] == text, f"agent/chain/abi/{name} differs from a fresh build: {fix}"


def test_export_skips_abstract_contracts_and_interfaces(tmp_path: Path) -> None:
    out = tmp_path / "out"
    for source, name, bytecode in [
        ("contracts/src/HyperGPUAttestation.sol", "HyperGPUAttestation", "0x6080"),
        ("contracts/src/RewardDistributor.sol", "RewardDistributor", "0x"),
        ("contracts/src/interfaces/IRewardDistributor.sol", "IRewardDistributor", "0x"),
        ("node_modules/@openzeppelin/contracts/utils/Strings.sol", "Strings", "0x6055"),
        ("contracts/test/Gas.t.sol", "GasTest", "0x6080"),
    ]:
        artifact = {
            "abi": [{"type": "function", "name": f"f{name}"}],
            "bytecode": {"object": bytecode},
            "metadata": {"settings": {"compilationTarget": {source: name}}},
        }
        path = out / f"{Path(source).name}" / f"{name}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(artifact))
    dest = tmp_path / "abi"
    dest.mkdir()
    (dest / "Removed.json").write_text("{}")

    written = export_abi.export(out, dest)

    assert [path.name for path in written] == ["HyperGPUAttestation.json"]
    assert sorted(path.name for path in dest.iterdir()) == ["HyperGPUAttestation.json"]
    exported = json.loads((dest / "HyperGPUAttestation.json").read_text())
    assert exported == {"abi": [{"type": "function", "name": "fHyperGPUAttestation"}], "bytecode": "0x6080"}


def _signature(item: dict) -> str:
    def canonical(param: dict) -> str:
        kind = param["type"]
        if kind.startswith("tuple"):
            return (
                "(" + ",".join(canonical(c) for c in param["components"]) + ")" + kind.removeprefix("tuple")
            )
        return kind

    return f"{item['name']}({','.join(canonical(p) for p in item['inputs'])})"


def test_shipped_abi_has_the_api_documented_in_contracts_readme() -> None:
    """The Python side builds calls and reads logs by these exact signatures (contracts/README.md)."""
    artifact = json.loads((SHIPPED_DIR / "HyperGPUAttestation.json").read_text())
    assert artifact["bytecode"].startswith("0x") and len(artifact["bytecode"]) > 1000
    by_kind: dict[str, set[str]] = {}
    for item in artifact["abi"]:
        if "name" in item:
            by_kind.setdefault(item["type"], set()).add(_signature(item))
    constructor = next(item for item in artifact["abi"] if item["type"] == "constructor")
    assert [p["type"] for p in constructor["inputs"]] == ["uint48", "address", "address"]

    assert {
        "createRun(bytes32,bytes32,bytes32,uint48,uint48)",
        "setRunStatus(bytes32,uint8)",
        "registerNodes(bytes32,(address,string,uint256,bytes)[])",
        "recordContributions(bytes32,uint64,(address,uint64,uint32,uint64,uint64)[])",
        "postEpochRoot(bytes32,uint64,bytes32,uint96)",
        "fund(bytes32)",
        "claim(bytes32,address,uint256,bytes32[])",
        "withdrawUnallocated(bytes32,address)",
        "claimedAmount(bytes32,address)",
        "getRun(bytes32)",
        "getEpochState(bytes32)",
        "nodeBindingDigest(bytes32,address,string,uint256)",
        "pause()",
        "unpause()",
        "beginDefaultAdminTransfer(address)",
        "acceptDefaultAdminTransfer()",
    } <= by_kind["function"]
    events = {
        "RunCreated(bytes32,bytes32,bytes32,uint48,uint48,uint256)",
        "RunStatusChanged(bytes32,uint8,uint8)",
        "NodeRegistered(bytes32,address,string)",
        "ContributionRecorded(bytes32,uint64,address,uint64,uint32,uint64,uint64)",
        "EpochRootPosted(bytes32,uint64,bytes32,uint96)",
        "RewardFunded(bytes32,address,uint256,uint256)",
        "RewardClaimed(bytes32,address,uint256)",
        "UnallocatedWithdrawn(bytes32,address,uint256)",
    }
    assert events <= by_kind["event"]
    for error in [
        "EpochAlreadyPosted(bytes32,uint64)",
        "InvalidProof(bytes32,address,uint256)",
        "NothingToClaim(bytes32,address,uint256,uint256)",
        "InsufficientPool(bytes32,uint256,uint256)",
        "InvalidNodeSignature(bytes32,address)",
        "AccessControlUnauthorizedAccount(address,bytes32)",
        "EnforcedPause()",
    ]:
        assert error in by_kind["error"], error
