"""The compiled contracts shipped in the package (``agent/chain/abi/<Contract>.json``); revert decoding.

Each artifact is ``{"abi": [...], "bytecode": "0x..."}``, exported from the Foundry build in
``contracts/`` so that agents need neither Node nor forge at run time.
:func:`describe_revert` turns revert data (a custom error, ``Error(string)`` or ``Panic(uint256)``)
into a readable line such as ``NothingToClaim(account=0xab..., runId=3)``.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

from eth_abi import decode as abi_decode
from eth_utils import function_signature_to_4byte_selector

ABI_DIR = Path(__file__).resolve().parent / "abi"

_PANIC_CODES = {
    0x01: "assertion failed",
    0x11: "arithmetic overflow or underflow",
    0x12: "division by zero",
    0x21: "invalid enum value",
    0x32: "array index out of bounds",
    0x41: "out of memory",
}


class ArtifactMissingError(FileNotFoundError):
    """A contract artifact is not in ``agent/chain/abi`` (the contracts were not exported)."""


@cache
def load_artifact(name: str) -> dict[str, Any]:
    """The artifact of contract ``name`` (e.g. ``"RewardDistributor"``): ``{"abi", "bytecode"}``."""
    path = ABI_DIR / f"{name}.json"
    if not path.is_file():
        raise ArtifactMissingError(
            f"contract artifact {path} is missing; export the ABIs from the Foundry build "
            "(see contracts/README.md)"
        )
    return json.loads(path.read_text())


def load_abi(name: str) -> list[dict[str, Any]]:
    """The ABI of contract ``name``."""
    return load_artifact(name)["abi"]


def available_artifacts() -> list[str]:
    """Names of the contracts whose artifacts ship with the package."""
    return sorted(path.stem for path in ABI_DIR.glob("*.json"))


def _canonical_type(param: dict[str, Any]) -> str:
    kind: str = param["type"]
    if kind.startswith("tuple"):
        inner = ",".join(_canonical_type(component) for component in param["components"])
        return f"({inner}){kind.removeprefix('tuple')}"
    return kind


@cache
def _error_selectors() -> dict[bytes, tuple[str, list[str], list[str]]]:
    """selector -> (error name, argument names, argument types), over every shipped ABI."""
    selectors: dict[bytes, tuple[str, list[str], list[str]]] = {}
    for name in available_artifacts():
        for item in load_abi(name):
            if item.get("type") != "error":
                continue
            types = [_canonical_type(arg) for arg in item.get("inputs", [])]
            names = [arg.get("name") or f"arg{index}" for index, arg in enumerate(item.get("inputs", []))]
            selector = function_signature_to_4byte_selector(f"{item['name']}({','.join(types)})")
            selectors[selector] = (item["name"], names, types)
    return selectors


def _show(value: Any) -> str:
    if isinstance(value, bytes):
        return "0x" + value.hex()
    if isinstance(value, tuple | list):
        return "[" + ", ".join(_show(item) for item in value) + "]"
    return str(value)


def describe_revert(data: str | bytes | None) -> str:
    """A readable description of revert ``data`` (hex string or bytes); ``"reverted"`` if empty."""
    if data is None:
        return "reverted"
    raw = bytes.fromhex(data.removeprefix("0x")) if isinstance(data, str) else bytes(data)
    if len(raw) < 4:
        return "reverted"
    selector, payload = raw[:4], raw[4:]
    try:
        if selector == function_signature_to_4byte_selector("Error(string)"):
            return str(abi_decode(["string"], payload)[0])
        if selector == function_signature_to_4byte_selector("Panic(uint256)"):
            code = int(abi_decode(["uint256"], payload)[0])
            return f"panic 0x{code:02x} ({_PANIC_CODES.get(code, 'unknown')})"
        known = _error_selectors().get(selector)
        if known is None:
            return f"reverted with unknown error 0x{raw.hex()}"
        name, names, types = known
        values = abi_decode(types, payload)
        return f"{name}(" + ", ".join(f"{n}={_show(v)}" for n, v in zip(names, values, strict=True)) + ")"
    except Exception:  # malformed revert payload: show it raw rather than fail while reporting a failure
        return f"reverted with undecodable data 0x{raw.hex()}"
