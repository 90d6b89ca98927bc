"""The cumulative-rewards Merkle tree: one leaf ``(account, cumulativeAmount)`` per wallet.

Compatible with OpenZeppelin's ``MerkleProof.verify`` on chain and with ``StandardMerkleTree.of(values,
["address", "uint256"])`` of the ``@openzeppelin/merkle-tree`` JavaScript library (same root, same
proofs): leaf = ``keccak256(bytes.concat(keccak256(abi.encode(account, cumulativeAmount))))``
(double-hashed, so a leaf can never pass as an inner node), inner node = keccak256 of its two children
sorted, leaves sorted by hash and laid out as OpenZeppelin's complete binary tree in an array.

Hand-written because no maintained Python port of OpenZeppelin's StandardMerkleTree exists; the tests
compare it with vectors produced by the JavaScript library and with the contract's ``claim`` on anvil.

    tree = RewardTree.build({"0xAbc...": 5 * 10**18, "0xDef...": 25 * 10**17})
    tree.root                  # "0x..." -> postEpochRoot(runId, epoch, root, tree.total)
    tree.proof("0xAbc...")     # ["0x...", ...] -> claim(runId, account, amount, proof)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from eth_abi import encode as abi_encode
from eth_utils import keccak, to_checksum_address

UINT256_MAX = 2**256 - 1


def reward_leaf(account: str, cumulative_amount: int) -> bytes:
    """Leaf hash of ``(account, cumulative_amount)``: keccak256(keccak256(abi.encode(address, uint256)))."""
    if not 0 <= cumulative_amount <= UINT256_MAX:
        raise ValueError(f"cumulative amount {cumulative_amount} is not a uint256")
    return keccak(
        keccak(abi_encode(["address", "uint256"], [to_checksum_address(account), cumulative_amount]))
    )


def hash_pair(a: bytes, b: bytes) -> bytes:
    """keccak256 of the two 32-byte hashes in ascending order (OpenZeppelin's commutative pair hash)."""
    return keccak(a + b if a < b else b + a)


def _hex(value: bytes) -> str:
    return "0x" + value.hex()


def _bytes32(value: str | bytes) -> bytes:
    raw = bytes.fromhex(value.removeprefix("0x")) if isinstance(value, str) else bytes(value)
    if len(raw) != 32:
        raise ValueError(f"expected 32 bytes, got {len(raw)}")
    return raw


def process_proof(leaf: bytes, proof: Iterable[str | bytes]) -> bytes:
    """The root reached from ``leaf`` by ``proof`` (OpenZeppelin ``MerkleProof.processProof``)."""
    node = leaf
    for sibling in proof:
        node = hash_pair(node, _bytes32(sibling))
    return node


def verify_proof(
    root: str | bytes, account: str, cumulative_amount: int, proof: Iterable[str | bytes]
) -> bool:
    """Whether ``proof`` shows ``(account, cumulative_amount)`` under ``root``, as the contract checks it."""
    return process_proof(reward_leaf(account, cumulative_amount), proof) == _bytes32(root)


@dataclass(frozen=True)
class RewardTree:
    """A built tree. ``amounts`` maps checksummed accounts to cumulative wei; ``nodes`` is the array layout
    (``nodes[0]`` the root, children of ``i`` at ``2i+1`` and ``2i+2``, leaves at the end)."""

    amounts: Mapping[str, int]
    nodes: tuple[bytes, ...]
    _leaf_index: Mapping[str, int] = field(repr=False)

    @classmethod
    def build(cls, amounts: Mapping[str, int]) -> RewardTree:
        """Build the tree of cumulative ``amounts`` (account -> wei). Raises ``ValueError`` when empty or
        when one account appears twice (in any letter case)."""
        if not amounts:
            raise ValueError("a reward tree needs at least one account")
        normalized: dict[str, int] = {}
        for account, amount in amounts.items():
            checksummed = to_checksum_address(account)
            if checksummed in normalized:
                raise ValueError(f"account {checksummed} appears twice; give one cumulative amount each")
            normalized[checksummed] = int(amount)
        hashed = sorted((reward_leaf(account, amount), account) for account, amount in normalized.items())
        size = 2 * len(hashed) - 1
        nodes: list[bytes] = [b""] * size
        leaf_index: dict[str, int] = {}
        for position, (leaf, account) in enumerate(hashed):
            nodes[size - 1 - position] = leaf
            leaf_index[account] = size - 1 - position
        for index in range(size - 1 - len(hashed), -1, -1):
            nodes[index] = hash_pair(nodes[2 * index + 1], nodes[2 * index + 2])
        return cls(amounts=normalized, nodes=tuple(nodes), _leaf_index=leaf_index)

    @property
    def root(self) -> str:
        """The root as ``0x`` hex (bytes32)."""
        return _hex(self.nodes[0])

    @property
    def total(self) -> int:
        """The sum of all cumulative amounts, in wei (``totalAllocated`` of ``postEpochRoot``)."""
        return sum(self.amounts.values())

    def amount(self, account: str) -> int:
        """The cumulative amount of ``account``; ``KeyError`` if it has no leaf."""
        return self.amounts[to_checksum_address(account)]

    def proof(self, account: str) -> list[str]:
        """Sibling hashes (``0x`` hex) from ``account``'s leaf up to the root; ``KeyError`` if no leaf."""
        index = self._leaf_index[to_checksum_address(account)]
        siblings: list[str] = []
        while index > 0:
            sibling = index + 1 if index % 2 == 1 else index - 1
            siblings.append(_hex(self.nodes[sibling]))
            index = (index - 1) // 2
        return siblings

    def to_json(self) -> dict[str, Any]:
        """A JSON-able form: root, total and every account's amount (decimal strings: wei exceed 2**53)."""
        return {
            "root": self.root,
            "total": str(self.total),
            "amounts": {account: str(amount) for account, amount in self.amounts.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RewardTree:
        """Rebuild from :meth:`to_json`; raises ``ValueError`` if the stored root does not match."""
        tree = cls.build({account: int(amount) for account, amount in data["amounts"].items()})
        if tree.root != data["root"]:
            raise ValueError(f"stored root {data['root']} does not match the amounts (root {tree.root})")
        return tree


def build_reward_tree(amounts: Mapping[str, int]) -> RewardTree:
    """Shorthand for :meth:`RewardTree.build`."""
    return RewardTree.build(amounts)


def proof_as_bytes(proof: Sequence[str]) -> list[bytes]:
    """A hex proof as the ``bytes32[]`` web3 expects."""
    return [_bytes32(item) for item in proof]
