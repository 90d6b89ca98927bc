"""The HyperGPUAttestation contract from Python: typed reads, calls to send or enqueue, binding signatures.

One deployed contract holds the training registry, the contribution ledger and the reward distributor
(see ``contracts/README.md`` and ``contracts/src/interfaces``). Run ids on chain are ``bytes32``:
:func:`run_id_hash` maps a run's name (``swarm.run_id``, e.g. ``"mnist-demo"``) to ``keccak256(name)``.

    attestation = Attestation(client, deployment.address)
    attestation.send(attestation.create_run_call(run_id_hash("mnist-demo"), ..., pool_wei=10**18))
    call = attestation.post_epoch_root_call(run, epoch, tree.root, tree.total)
    outbox.enqueue(f"root:{run.hex()}:{epoch}", call.to, call.data, purpose="post_epoch_root")
    outbox_checks = {"post_epoch_root": attestation.epoch_root_posted_check}

Every ``*_call`` method only encodes (no RPC), so the coordinator can record the write in its outbox
first. ``send`` transacts directly and waits for the receipt.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum
from typing import Any

from eth_abi import decode as abi_decode
from eth_account.messages import encode_typed_data
from eth_account.signers.local import LocalAccount
from eth_utils import keccak, to_checksum_address

from agent.chain.client import ChainClient, TxResult
from agent.chain.merkle import proof_as_bytes

CONTRACT_NAME = "HyperGPUAttestation"
EIP712_NAME = "HyperGPU"
EIP712_VERSION = "1"
NODE_BINDING_TYPES: dict[str, list[dict[str, str]]] = {
    "NodeBinding": [
        {"name": "runId", "type": "bytes32"},
        {"name": "node", "type": "address"},
        {"name": "peerId", "type": "string"},
        {"name": "deadline", "type": "uint256"},
    ]
}
SCORE_SCALE = 1_000_000
"""Scores on chain are fixed point with 6 decimals: 1.0 is 1,000,000."""


def run_id_hash(run_name: str) -> bytes:
    """The on-chain ``bytes32`` run id of the run called ``run_name``: ``keccak256(utf8(run_name))``."""
    if not run_name:
        raise ValueError("a run name must not be empty")
    return keccak(text=run_name)


def as_bytes32(value: bytes | str) -> bytes:
    """``value`` (bytes or ``0x`` hex) as exactly 32 bytes; raises ``ValueError`` otherwise."""
    raw = bytes.fromhex(value.removeprefix("0x")) if isinstance(value, str) else bytes(value)
    if len(raw) != 32:
        raise ValueError(f"expected 32 bytes, got {len(raw)}")
    return raw


class RunStatus(IntEnum):
    """A run's life cycle on chain; ``NONE`` = never created."""

    NONE = 0
    ACTIVE = 1
    COMPLETED = 2
    CANCELLED = 3


@dataclass(frozen=True)
class OnchainRun:
    """A run as the contract stores it. Amounts in wei, times in unix seconds."""

    model_hash: bytes
    dataset_id: bytes
    reward_pool: int
    total_claimed: int
    start_time: int
    status: RunStatus
    end_time: int
    node_count: int


@dataclass(frozen=True)
class EpochState:
    """Root of the last closed epoch (zero before the first), closed-epoch count, wei allocated."""

    rewards_root: bytes
    epoch_count: int
    total_allocated: int


@dataclass(frozen=True)
class NodeRegistration:
    """An agent's signed request to bind wallet ``node`` to ``peer_id`` for a run until ``deadline``."""

    node: str
    peer_id: str
    deadline: int
    signature: bytes

    def as_abi(self) -> tuple[str, str, int, bytes]:
        return (to_checksum_address(self.node), self.peer_id, self.deadline, self.signature)


@dataclass(frozen=True)
class Contribution:
    """One agent's verified work in one epoch. ``score`` is fixed point (:data:`SCORE_SCALE` = 1.0)."""

    node: str
    compute_seconds: int
    rounds_accepted: int
    samples: int
    score: int

    def as_abi(self) -> tuple[str, int, int, int, int]:
        return (
            to_checksum_address(self.node),
            self.compute_seconds,
            self.rounds_accepted,
            self.samples,
            self.score,
        )


@dataclass(frozen=True)
class ContractCall:
    """An encoded call: send it (:meth:`Attestation.send`) or record it (``Outbox.enqueue``)."""

    to: str
    data: bytes
    value: int = 0
    function: str = ""


def node_binding_typed_data(
    *, chain_id: int, contract_address: str, run_id: bytes, node: str, peer_id: str, deadline: int
) -> dict[str, Any]:
    """The EIP-712 typed data of a ``NodeBinding`` in the contract's domain ("HyperGPU", "1")."""
    return {
        "domain": {
            "name": EIP712_NAME,
            "version": EIP712_VERSION,
            "chainId": chain_id,
            "verifyingContract": to_checksum_address(contract_address),
        },
        "types": NODE_BINDING_TYPES,
        "message": {
            "runId": as_bytes32(run_id),
            "node": to_checksum_address(node),
            "peerId": peer_id,
            "deadline": deadline,
        },
    }


def sign_node_registration(
    account: LocalAccount, *, chain_id: int, contract_address: str, run_id: bytes, peer_id: str, deadline: int
) -> NodeRegistration:
    """The agent's side of registration: sign "bind my wallet to ``peer_id`` in ``run_id``" (EIP-712).

    ``deadline`` is unix seconds after which the coordinator can no longer submit it.
    """
    data = node_binding_typed_data(
        chain_id=chain_id,
        contract_address=contract_address,
        run_id=run_id,
        node=account.address,
        peer_id=peer_id,
        deadline=deadline,
    )
    signable = encode_typed_data(
        domain_data=data["domain"], message_types=data["types"], message_data=data["message"]
    )
    signature = bytes(account.sign_message(signable).signature)
    return NodeRegistration(node=account.address, peer_id=peer_id, deadline=deadline, signature=signature)


class Attestation:
    """The deployed HyperGPUAttestation at ``address``, through ``client`` (which signs, if it has a key)."""

    def __init__(self, client: ChainClient, address: str) -> None:
        self.client = client
        self.address = to_checksum_address(address)
        self.contract = client.contract(CONTRACT_NAME, self.address)

    # ---- reads ---------------------------------------------------------------------------------------

    def get_run(self, run_id: bytes) -> OnchainRun:
        """The run's record (``status`` NONE when it does not exist)."""
        fields = self.client.call(self.contract, "getRun", [as_bytes32(run_id)])
        model_hash, dataset_id, pool, claimed, start, status, end, count = fields
        return OnchainRun(
            bytes(model_hash), bytes(dataset_id), pool, claimed, start, RunStatus(status), end, count
        )

    def epoch_state(self, run_id: bytes) -> EpochState:
        """The run's latest rewards root, closed-epoch count and total allocated wei."""
        root, count, allocated = self.client.call(self.contract, "getEpochState", [as_bytes32(run_id)])
        return EpochState(bytes(root), int(count), int(allocated))

    def claimed_amount(self, run_id: bytes, account: str) -> int:
        """Wei already paid to ``account`` from the run's pool."""
        return int(
            self.client.call(
                self.contract, "claimedAmount", [as_bytes32(run_id), to_checksum_address(account)]
            )
        )

    def peer_id_of(self, run_id: bytes, node: str) -> bytes:
        """keccak256 of the peer id bound to ``node`` in the run, or 32 zero bytes."""
        return bytes(
            self.client.call(self.contract, "peerIdHashOf", [as_bytes32(run_id), to_checksum_address(node)])
        )

    def node_of_peer_id(self, run_id: bytes, peer_id: str) -> str:
        """The wallet bound to ``peer_id`` in the run, or the zero address."""
        return str(self.client.call(self.contract, "nodeOfPeerId", [as_bytes32(run_id), peer_id]))

    def is_coordinator(self, account: str) -> bool:
        """Whether ``account`` holds COORDINATOR_ROLE."""
        role = self.client.call(self.contract, "COORDINATOR_ROLE")
        return bool(self.client.call(self.contract, "hasRole", [role, to_checksum_address(account)]))

    def epoch_root_posted(self, run_id: bytes, epoch: int) -> bool:
        """Whether ``epoch`` of the run is closed (its root is on chain)."""
        return self.epoch_state(run_id).epoch_count > epoch

    # ---- encoded calls -------------------------------------------------------------------------------

    def _call(self, function: str, args: Sequence[Any], value: int = 0) -> ContractCall:
        to, data = self.client.calldata(self.contract, function, args)
        return ContractCall(to=to, data=data, value=value, function=function)

    def create_run_call(
        self,
        run_id: bytes,
        *,
        model_hash: bytes,
        dataset_id: bytes,
        start_time: int,
        end_time: int,
        pool_wei: int = 0,
    ) -> ContractCall:
        """Create an active run funded with ``pool_wei`` (coordinator only)."""
        args = [as_bytes32(run_id), as_bytes32(model_hash), as_bytes32(dataset_id), start_time, end_time]
        return self._call("createRun", args, value=pool_wei)

    def fund_call(self, run_id: bytes, amount_wei: int) -> ContractCall:
        """Add ``amount_wei`` to the run's pool (anyone)."""
        return self._call("fund", [as_bytes32(run_id)], value=amount_wei)

    def set_run_status_call(self, run_id: bytes, status: RunStatus) -> ContractCall:
        """End an active run as COMPLETED or CANCELLED (coordinator only)."""
        return self._call("setRunStatus", [as_bytes32(run_id), int(status)])

    def register_nodes_call(self, run_id: bytes, registrations: Sequence[NodeRegistration]) -> ContractCall:
        """Bind many agents in one transaction, each proven by its signature (coordinator only)."""
        return self._call("registerNodes", [as_bytes32(run_id), [r.as_abi() for r in registrations]])

    def record_contributions_call(
        self, run_id: bytes, epoch: int, contributions: Sequence[Contribution]
    ) -> ContractCall:
        """Record a batch of the open epoch's contributions, one event each (coordinator only)."""
        return self._call(
            "recordContributions", [as_bytes32(run_id), epoch, [c.as_abi() for c in contributions]]
        )

    def post_epoch_root_call(
        self, run_id: bytes, epoch: int, rewards_root: bytes | str, total_allocated: int
    ) -> ContractCall:
        """Close the open epoch with the cumulative rewards root (coordinator only)."""
        return self._call(
            "postEpochRoot", [as_bytes32(run_id), epoch, as_bytes32(rewards_root), total_allocated]
        )

    def claim_call(
        self, run_id: bytes, account: str, cumulative_amount: int, proof: Sequence[str]
    ) -> ContractCall:
        """Pay ``account`` its cumulative reward minus what it was already paid (anyone may submit)."""
        args = [as_bytes32(run_id), to_checksum_address(account), cumulative_amount, proof_as_bytes(proof)]
        return self._call("claim", args)

    def send(self, call: ContractCall) -> TxResult:
        """Transact ``call`` now and wait for its receipt (reverts raise TransactionRevertedError)."""
        return self.client.transact(call.to, call.data, call.value, action=f"{call.function}()")

    # ---- events --------------------------------------------------------------------------------------

    def claimed_in(self, result: TxResult) -> int:
        """Wei paid by the ``RewardClaimed`` events of a mined claim transaction."""
        topic = keccak(text="RewardClaimed(bytes32,address,uint256)")
        paid = 0
        for entry in result.logs:
            topics = [bytes(t) for t in entry["topics"]]
            if to_checksum_address(entry["address"]) == self.address and topics and topics[0] == topic:
                paid += int(abi_decode(["uint256"], bytes(entry["data"]))[0])
        return paid
