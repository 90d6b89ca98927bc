"""scripts/solc: the solc-js adapter forge compiles through offline.

.venv/bin/python -m pytest tests/scripts/test_solc_adapter.py
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
SOLC = REPO_ROOT / "scripts" / "solc"

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None or not (REPO_ROOT / "node_modules" / "solc").is_dir(),
    reason="node or npm's solc is not installed (scripts/setup installs them)",
)


def _compile(source: str, *flags: str, cwd: Path) -> dict:
    request = {
        "language": "Solidity",
        "sources": {"main.sol": {"content": source}},
        "settings": {"outputSelection": {"*": {"*": ["abi"]}}},
    }
    result = subprocess.run(
        [str(SOLC), "--standard-json", *flags],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def _errors(output: dict) -> list[str]:
    return [e["message"] for e in output.get("errors", []) if e["severity"] == "error"]


def test_version_line_is_what_forge_parses() -> None:
    result = subprocess.run([str(SOLC), "--version"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert re.search(r"^Version: 0\.8\.\d+\+commit\.[0-9a-f]{8}", result.stdout, re.MULTILINE), result.stdout


def test_imports_resolve_under_base_and_include_paths(tmp_path: Path) -> None:
    (tmp_path / "base" / "lib").mkdir(parents=True)
    (tmp_path / "base" / "lib" / "A.sol").write_text("pragma solidity ^0.8.0; library A { }")
    (tmp_path / "extra" / "pkg").mkdir(parents=True)
    (tmp_path / "extra" / "pkg" / "B.sol").write_text("pragma solidity ^0.8.0; library B { }")
    source = 'pragma solidity ^0.8.0; import "lib/A.sol"; import "pkg/B.sol"; contract C { }'

    output = _compile(
        source, "--base-path", str(tmp_path / "base"), "--include-path", str(tmp_path / "extra"), cwd=tmp_path
    )

    assert _errors(output) == []
    assert {"main.sol", "lib/A.sol", "pkg/B.sol"} <= set(output["contracts"])


def test_absolute_import_outside_allowed_paths_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "secret" / "X.sol"
    outside.parent.mkdir()
    outside.write_text("pragma solidity ^0.8.0; library X { }")
    (tmp_path / "base").mkdir()
    source = f'pragma solidity ^0.8.0; import "{outside}"; contract C {{ }}'

    refused = _compile(source, "--base-path", str(tmp_path / "base"), cwd=tmp_path)
    assert any("File not found" in message for message in _errors(refused)), refused

    allowed = _compile(
        source, "--base-path", str(tmp_path / "base"), "--allow-paths", str(outside.parent), cwd=tmp_path
    )
    assert _errors(allowed) == []


def test_unknown_flag_is_a_clear_error() -> None:
    result = subprocess.run([str(SOLC), "--optimize"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "unsupported argument" in result.stderr and "--optimize" in result.stderr
