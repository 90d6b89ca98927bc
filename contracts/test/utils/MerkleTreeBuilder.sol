// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Hashes} from "@openzeppelin/contracts/utils/cryptography/Hashes.sol";

/// @notice Builds Merkle roots and proofs in tests, hashing pairs sorted as OpenZeppelin's MerkleProof does.
/// @dev Level by level: nodes 2i and 2i+1 are hashed together, and a last node without a sibling moves up
///      unchanged (so its proof has no entry for that level). Any tree shape verifies with MerkleProof as long as
///      pairs are hashed sorted; this one is the simplest to build without a library.
library MerkleTreeBuilder {
    /// @notice The root over `leaves` (already hashed). One leaf is its own root.
    function root(bytes32[] memory leaves) internal pure returns (bytes32) {
        require(leaves.length != 0, "MerkleTreeBuilder: no leaves");
        bytes32[] memory level = _copy(leaves);
        uint256 width = level.length;
        while (width > 1) {
            width = _hashLevel(level, width);
        }
        return level[0];
    }

    /// @notice The sibling path from `leaves[index]` to the root.
    function proof(bytes32[] memory leaves, uint256 index) internal pure returns (bytes32[] memory path) {
        require(index < leaves.length, "MerkleTreeBuilder: index out of range");
        bytes32[] memory level = _copy(leaves);
        bytes32[] memory siblings = new bytes32[](256);
        uint256 depth;
        uint256 width = level.length;
        while (width > 1) {
            uint256 sibling = index ^ 1;
            if (sibling < width) siblings[depth++] = level[sibling];
            width = _hashLevel(level, width);
            index >>= 1;
        }
        path = new bytes32[](depth);
        for (uint256 i = 0; i < depth; ++i) {
            path[i] = siblings[i];
        }
    }

    /// @dev Hashes the first `width` nodes of `level` into its first ceil(width / 2) slots; returns that count.
    function _hashLevel(bytes32[] memory level, uint256 width) private pure returns (uint256 next) {
        next = (width + 1) / 2;
        for (uint256 i = 0; i < width / 2; ++i) {
            level[i] = Hashes.commutativeKeccak256(level[2 * i], level[2 * i + 1]);
        }
        if (width % 2 == 1) level[next - 1] = level[width - 1];
    }

    function _copy(bytes32[] memory leaves) private pure returns (bytes32[] memory copy) {
        copy = new bytes32[](leaves.length);
        for (uint256 i = 0; i < leaves.length; ++i) {
            copy[i] = leaves[i];
        }
    }
}
