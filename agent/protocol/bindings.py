"""Wallet <-> libp2p peer id bindings: an agent's signed statement "peer P of run R pays wallet W".

An agent signs its :class:`NodeBinding` twice with its wallet key, both under the run's ``"HyperGPU"``
EIP-712 domain (see :mod:`agent.protocol.reports`), and publishes it to the DHT:

1. the off-chain declaration, which also covers the agent's hardware and measured training throughput
   (against which coordinator_lite judges outliers)::

       NodeDeclaration(string runId, string peerId, address wallet, string device, string hardwareName,
                       uint64 benchmarkSamplesPerSecond, uint64 registrationDeadline, uint64 timestamp)

2. the on-chain registration that ``TrainingRegistry.registerNodes`` checks (contracts/README.md)::

       NodeBinding(bytes32 runId, address node, string peerId, uint256 deadline)

   with ``runId = keccak256(utf8(run id))`` (:func:`onchain_run_id`), so the coordinator can register
   the agent in a batch without the agent sending a transaction.

coordinator_lite accepts round reports of peer P only when they are signed by the wallet bound to P;
as on chain, within a run a wallet has one peer id and a peer id one wallet.

Shared by the agent and coordinator_lite: no torch, no hivemind imports.
"""

from __future__ import annotations

from typing import Any

import msgpack
from eth_account import Account
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import keccak
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

DECLARATION_TYPES: dict[str, list[dict[str, str]]] = {
    "NodeDeclaration": [
        {"name": "runId", "type": "string"},
        {"name": "peerId", "type": "string"},
        {"name": "wallet", "type": "address"},
        {"name": "device", "type": "string"},
        {"name": "hardwareName", "type": "string"},
        {"name": "benchmarkSamplesPerSecond", "type": "uint64"},
        {"name": "registrationDeadline", "type": "uint64"},
        {"name": "timestamp", "type": "uint64"},
    ]
}
REGISTRATION_TYPES: dict[str, list[dict[str, str]]] = {
    "NodeBinding": [
        {"name": "runId", "type": "bytes32"},
        {"name": "node", "type": "address"},
        {"name": "peerId", "type": "string"},
        {"name": "deadline", "type": "uint256"},
    ]
}


def onchain_run_id(run_id: str) -> bytes:
    """The 32-byte run id the contracts use for the run named ``run_id``: keccak256 of its UTF-8 text."""
    return keccak(text=run_id)


_BINDING_TAG = "B"


class NodeBinding(BaseModel):
    """Peer ``peer_id`` of run ``run_id`` is paid to ``wallet`` and trains on the declared hardware.

    ``device`` is the torch device kind (``cpu``, ``cuda``, ``mps``), ``hardware_name`` the GPU or CPU
    model, ``benchmark_samples_per_s`` the agent's own measured training throughput (samples/s, 0 =
    not measured), ``registration_deadline`` the Unix second after which the on-chain registration
    signature expires (give hours to days: the coordinator registers agents in its next epoch),
    ``timestamp`` Unix seconds (UTC) when it was signed.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    run_id: RunIdStr
    peer_id: PeerIdStr
    wallet: EvmAddress
    device: str = Field(min_length=1, max_length=16, pattern=r"^[a-z]+$")
    hardware_name: str = Field(default="", max_length=128)
    benchmark_samples_per_s: Uint64 = 0
    registration_deadline: Uint64 = 0
    timestamp: Uint64

    def declaration_message(self) -> dict[str, Any]:
        return {
            "runId": self.run_id,
            "peerId": self.peer_id,
            "wallet": self.wallet,
            "device": self.device,
            "hardwareName": self.hardware_name,
            "benchmarkSamplesPerSecond": self.benchmark_samples_per_s,
            "registrationDeadline": self.registration_deadline,
            "timestamp": self.timestamp,
        }

    def registration_message(self) -> dict[str, Any]:
        return {
            "runId": onchain_run_id(self.run_id),
            "node": self.wallet,
            "peerId": self.peer_id,
            "deadline": self.registration_deadline,
        }


class SignedNodeBinding(BaseModel):
    """A :class:`NodeBinding` with its ``wallet``'s two 65-byte EIP-712 signatures (see the module doc)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    binding: NodeBinding
    signature: bytes = Field(min_length=65, max_length=65, description="NodeDeclaration signature")
    registration_signature: bytes = Field(
        min_length=65, max_length=65, description="NodeBinding signature for TrainingRegistry.registerNodes"
    )


def _signable(binding: NodeBinding, domain: ReportDomain):
    return encode_typed_data(
        domain_data=domain.as_eip712(),
        message_types=DECLARATION_TYPES,
        message_data=binding.declaration_message(),
    )


def _registration_signable(binding: NodeBinding, domain: ReportDomain):
    return encode_typed_data(
        domain_data=domain.as_eip712(),
        message_types=REGISTRATION_TYPES,
        message_data=binding.registration_message(),
    )


def sign_node_binding(account: LocalAccount, binding: NodeBinding, domain: ReportDomain) -> SignedNodeBinding:
    """Sign ``binding`` with ``account``; ``binding.wallet`` must be that account's address."""
    if binding.wallet != account.address:
        raise ReportError(f"binding names wallet {binding.wallet} but is signed by {account.address}")
    declaration = account.sign_message(_signable(binding, domain))
    registration = account.sign_message(_registration_signable(binding, domain))
    return SignedNodeBinding(
        binding=binding,
        signature=bytes(declaration.signature),
        registration_signature=bytes(registration.signature),
    )


def verify_node_binding(
    signed: SignedNodeBinding, domain: ReportDomain, *, expected_run_id: str | None = None
) -> str:
    """Return the bound wallet when ``signed`` carries that wallet's valid signature under ``domain``.

    Raises :class:`ReportError` for another run, a malformed signature, or a binding the wallet did not sign
    (either signature: a registration the contract would refuse is refused here too).
    """
    binding = signed.binding
    if expected_run_id is not None and binding.run_id != expected_run_id:
        raise ReportError(
            f"binding of {binding.peer_id} is for run {binding.run_id!r}, not {expected_run_id!r}"
        )
    for what, signable, signature in (
        ("declaration", _signable(binding, domain), signed.signature),
        ("registration", _registration_signable(binding, domain), signed.registration_signature),
    ):
        try:
            recovered = Account.recover_message(signable, signature=signature)
        except Exception as exc:  # eth-keys raises several types for malformed (r, s, v)
            raise ReportError(f"binding {what} signature of {binding.peer_id} is malformed: {exc}") from exc
        if recovered != binding.wallet:
            raise ReportError(
                f"binding {what} of {binding.peer_id} to {binding.wallet} is not signed by that wallet"
            )
    return binding.wallet


def encode_node_binding(signed: SignedNodeBinding) -> bytes:
    """Compact msgpack bytes (about 300 bytes) for a DHT value."""
    b = signed.binding
    fields = [b.run_id, b.peer_id, bytes.fromhex(b.wallet[2:]), b.device, b.hardware_name]
    fields += [b.benchmark_samples_per_s, b.registration_deadline, b.timestamp]
    fields += [signed.signature, signed.registration_signature]
    return msgpack.packb([ENCODING_VERSION, _BINDING_TAG, *fields], use_bin_type=True)


def decode_node_binding(data: bytes) -> SignedNodeBinding:
    """Inverse of :func:`encode_node_binding`. Raises :class:`ReportError` for any malformed input."""
    try:
        unpacked = msgpack.unpackb(data, raw=False)
        if not isinstance(unpacked, list) or len(unpacked) != 12:
            raise ReportError("not a node binding record (expected a 12-element array)")
        version, tag, run_id, peer_id, wallet, device, name, benchmark, deadline, timestamp = unpacked[:10]
        signature, registration_signature = unpacked[10:]
        if version != ENCODING_VERSION or tag != _BINDING_TAG:
            raise ReportError(f"not a node binding record (version {version!r}, type {tag!r})")
        binding = NodeBinding(
            run_id=run_id,
            peer_id=peer_id,
            wallet="0x" + bytes(wallet).hex(),
            device=device,
            hardware_name=name,
            benchmark_samples_per_s=benchmark,
            registration_deadline=deadline,
            timestamp=timestamp,
        )
        return SignedNodeBinding(
            binding=binding, signature=signature, registration_signature=registration_signature
        )
    except ReportError:
        raise
    except (ValueError, TypeError, msgpack.UnpackException, ValidationError) as exc:
        raise ReportError(f"not a valid encoded node binding: {str(exc).splitlines()[0]}") from exc
