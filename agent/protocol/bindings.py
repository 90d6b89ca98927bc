"""Wallet <-> libp2p peer id bindings: an agent's signed statement "peer P of run R pays wallet W".

An agent signs a :class:`NodeBinding` with its wallet key (EIP-712, the same ``"HyperGPU"`` domain as
round reports, see :mod:`agent.protocol.reports`) and publishes it to the DHT; coordinator_lite accepts
round reports of peer P only when they are signed by the wallet bound to P. The binding also declares
the agent's hardware and its measured training throughput, against which outliers are judged.

The struct that is signed::

    NodeBinding(string runId, string peerId, address wallet, string device, string hardwareName,
                uint64 benchmarkSamplesPerSecond, uint64 timestamp)

Shared by the agent and coordinator_lite: no torch, no hivemind imports.
"""

from __future__ import annotations

from typing import Any

import msgpack
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.protocol.reports import (
    ENCODING_VERSION,
    EvmAddress,
    PeerIdStr,
    ReportDomain,
    ReportError,
    RunIdStr,
    Uint64,
)

BINDING_TYPES: dict[str, list[dict[str, str]]] = {
    "NodeBinding": [
        {"name": "runId", "type": "string"},
        {"name": "peerId", "type": "string"},
        {"name": "wallet", "type": "address"},
        {"name": "device", "type": "string"},
        {"name": "hardwareName", "type": "string"},
        {"name": "benchmarkSamplesPerSecond", "type": "uint64"},
        {"name": "timestamp", "type": "uint64"},
    ]
}

_BINDING_TAG = "B"


class NodeBinding(BaseModel):
    """Peer ``peer_id`` of run ``run_id`` is paid to ``wallet`` and trains on the declared hardware.

    ``device`` is the torch device kind (``cpu``, ``cuda``, ``mps``), ``hardware_name`` the GPU or CPU
    model, ``benchmark_samples_per_s`` the agent's own measured training throughput (samples/s, 0 =
    not measured), ``timestamp`` Unix seconds (UTC) when it was signed.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: RunIdStr
    peer_id: PeerIdStr
    wallet: EvmAddress
    device: str = Field(min_length=1, max_length=16, pattern=r"^[a-z]+$")
    hardware_name: str = Field(default="", max_length=128)
    benchmark_samples_per_s: Uint64 = 0
    timestamp: Uint64

    def typed_message(self) -> dict[str, Any]:
        return {
            "runId": self.run_id,
            "peerId": self.peer_id,
            "wallet": self.wallet,
            "device": self.device,
            "hardwareName": self.hardware_name,
            "benchmarkSamplesPerSecond": self.benchmark_samples_per_s,
            "timestamp": self.timestamp,
        }


class SignedNodeBinding(BaseModel):
    """A :class:`NodeBinding` with the 65-byte EIP-712 signature of its ``wallet``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    binding: NodeBinding
    signature: bytes = Field(min_length=65, max_length=65)


def _signable(binding: NodeBinding, domain: ReportDomain):
    return encode_typed_data(
        domain_data=domain.as_eip712(), message_types=BINDING_TYPES, message_data=binding.typed_message()
    )


def sign_node_binding(account: LocalAccount, binding: NodeBinding, domain: ReportDomain) -> SignedNodeBinding:
    """Sign ``binding`` with ``account``; ``binding.wallet`` must be that account's address."""
    if binding.wallet != account.address:
        raise ReportError(f"binding names wallet {binding.wallet} but is signed by {account.address}")
    signed = account.sign_message(_signable(binding, domain))
    return SignedNodeBinding(binding=binding, signature=bytes(signed.signature))


def verify_node_binding(
    signed: SignedNodeBinding, domain: ReportDomain, *, expected_run_id: str | None = None
) -> str:
    """Return the bound wallet when ``signed`` carries that wallet's valid signature under ``domain``.

    Raises :class:`ReportError` for another run, a malformed signature, or a binding the wallet did not sign.
    """
    binding = signed.binding
    if expected_run_id is not None and binding.run_id != expected_run_id:
        raise ReportError(
            f"binding of {binding.peer_id} is for run {binding.run_id!r}, not {expected_run_id!r}"
        )
    try:
        recovered = Account.recover_message(_signable(binding, domain), signature=signed.signature)
    except Exception as exc:  # eth-keys raises several types for malformed (r, s, v)
        raise ReportError(f"binding signature of {binding.peer_id} is malformed: {exc}") from exc
    if recovered != binding.wallet:
        raise ReportError(f"binding of {binding.peer_id} to {binding.wallet} is not signed by that wallet")
    return binding.wallet


def encode_node_binding(signed: SignedNodeBinding) -> bytes:
    """Compact msgpack bytes (about 250 bytes) for a DHT value."""
    b = signed.binding
    fields = [b.run_id, b.peer_id, bytes.fromhex(b.wallet[2:]), b.device, b.hardware_name]
    fields += [b.benchmark_samples_per_s, b.timestamp, signed.signature]
    return msgpack.packb([ENCODING_VERSION, _BINDING_TAG, *fields], use_bin_type=True)


def decode_node_binding(data: bytes) -> SignedNodeBinding:
    """Inverse of :func:`encode_node_binding`. Raises :class:`ReportError` for any malformed input."""
    try:
        version, tag, run_id, peer_id, wallet, device, name, benchmark, timestamp, signature = (
            msgpack.unpackb(data, raw=False)
        )
        if version != ENCODING_VERSION or tag != _BINDING_TAG:
            raise ReportError(f"not a node binding record (version {version!r}, type {tag!r})")
        binding = NodeBinding(
            run_id=run_id,
            peer_id=peer_id,
            wallet="0x" + bytes(wallet).hex(),
            device=device,
            hardware_name=name,
            benchmark_samples_per_s=benchmark,
            timestamp=timestamp,
        )
        return SignedNodeBinding(binding=binding, signature=signature)
    except ReportError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException, ValidationError) as exc:
        raise ReportError(f"not a valid encoded node binding: {str(exc).splitlines()[0]}") from exc
