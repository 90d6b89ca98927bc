// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Strings} from "@openzeppelin/contracts/utils/Strings.sol";

import {HyperGPUAttestation} from "../../src/HyperGPUAttestation.sol";
import {ITrainingRegistry} from "../../src/interfaces/ITrainingRegistry.sol";
import {IContributionLedger} from "../../src/interfaces/IContributionLedger.sol";
import {MerkleTreeBuilder} from "./MerkleTreeBuilder.sol";
import {vm} from "./Vm.sol";

/// @notice Shared fixture: a deployed HyperGPUAttestation, an admin, a coordinator, agent keys, and helpers to
///         sign bindings and build reward trees. Assertions revert with both values in the message.
abstract contract AttestationTest {
    using Strings for uint256;
    using Strings for address;

    uint48 internal constant ADMIN_DELAY = 2 days;
    bytes32 internal constant RUN_ID = keccak256("mnist-swarm-1");
    bytes32 internal constant MODEL_HASH = keccak256("cnn-small-v1");
    bytes32 internal constant DATASET_ID = keccak256("mnist");
    uint48 internal constant START_TIME = 1_800_000_000;
    uint48 internal constant END_TIME = START_TIME + 7 days;
    uint256 internal constant AGENT_KEY_BASE = 0xA6E27;

    HyperGPUAttestation internal attestation;
    address internal admin = vm.addr(0xAD);
    address internal coordinator = vm.addr(0xC0);
    address internal outsider = vm.addr(0x0B);

    function setUp() public virtual {
        vm.warp(START_TIME);
        attestation = new HyperGPUAttestation(ADMIN_DELAY, admin, coordinator);
        vm.label(address(attestation), "HyperGPUAttestation");
        vm.deal(coordinator, 1_000_000 ether);
        vm.deal(outsider, 1_000 ether);
    }

    // ---------------------------------------------------------------- fixtures

    function _createRun(uint256 pool) internal {
        vm.prank(coordinator);
        attestation.createRun{value: pool}(RUN_ID, MODEL_HASH, DATASET_ID, START_TIME, END_TIME);
    }

    function _agentKey(uint256 i) internal pure returns (uint256) {
        return AGENT_KEY_BASE + i;
    }

    function _agent(uint256 i) internal pure returns (address) {
        return vm.addr(_agentKey(i));
    }

    /// @dev A peer id shaped like a libp2p Ed25519 one (52 base58 characters), unique per agent.
    function _peerId(uint256 i) internal pure returns (string memory) {
        return string.concat("12D3KooWHyperGPUAgentPeerId", Strings.toHexString(i, 12));
    }

    function _signBinding(uint256 key, bytes32 runId, string memory peerId, uint256 deadline)
        internal
        view
        returns (bytes memory)
    {
        bytes32 digest = attestation.nodeBindingDigest(runId, vm.addr(key), peerId, deadline);
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(key, digest);
        return abi.encodePacked(r, s, v);
    }

    function _registration(uint256 i) internal view returns (ITrainingRegistry.NodeRegistration memory) {
        uint256 deadline = block.timestamp + 1 hours;
        return ITrainingRegistry.NodeRegistration({
            node: _agent(i),
            peerId: _peerId(i),
            deadline: deadline,
            signature: _signBinding(_agentKey(i), RUN_ID, _peerId(i), deadline)
        });
    }

    function _registrations(uint256 count)
        internal
        view
        returns (ITrainingRegistry.NodeRegistration[] memory regs)
    {
        regs = new ITrainingRegistry.NodeRegistration[](count);
        for (uint256 i = 0; i < count; ++i) {
            regs[i] = _registration(i);
        }
    }

    function _registerAgents(uint256 count) internal {
        ITrainingRegistry.NodeRegistration[] memory regs = _registrations(count);
        vm.prank(coordinator);
        attestation.registerNodes(RUN_ID, regs);
    }

    function _contributions(uint256 count)
        internal
        pure
        returns (IContributionLedger.Contribution[] memory records)
    {
        records = new IContributionLedger.Contribution[](count);
        for (uint256 i = 0; i < count; ++i) {
            records[i] = IContributionLedger.Contribution({
                node: _agent(i),
                computeSeconds: uint64(600 + i),
                roundsAccepted: uint32(30 + i % 7),
                samples: uint64(3_000_000 + 1000 * i),
                score: uint64(1_000_000 + 1000 * i)
            });
        }
    }

    /// @dev Leaves for agents 0..amounts.length-1 with the given cumulative amounts.
    function _leaves(uint256[] memory amounts) internal view returns (bytes32[] memory leaves) {
        leaves = new bytes32[](amounts.length);
        for (uint256 i = 0; i < amounts.length; ++i) {
            leaves[i] = attestation.rewardLeaf(_agent(i), amounts[i]);
        }
    }

    function _sum(uint256[] memory amounts) internal pure returns (uint256 total) {
        for (uint256 i = 0; i < amounts.length; ++i) {
            total += amounts[i];
        }
    }

    /// @dev Closes the run's open epoch with the tree of `amounts` (cumulative, per agent index).
    function _postRoot(uint256[] memory amounts) internal returns (bytes32 root) {
        root = MerkleTreeBuilder.root(_leaves(amounts));
        uint64 epoch = attestation.getEpochState(RUN_ID).epochCount;
        vm.prank(coordinator);
        attestation.postEpochRoot(RUN_ID, epoch, root, uint96(_sum(amounts)));
    }

    function _proof(uint256[] memory amounts, uint256 index) internal view returns (bytes32[] memory) {
        return MerkleTreeBuilder.proof(_leaves(amounts), index);
    }

    function _bound(uint256 x, uint256 min, uint256 max) internal pure returns (uint256) {
        return min + x % (max - min + 1);
    }

    // ---------------------------------------------------------------- assertions

    function assertEq(uint256 a, uint256 b, string memory what) internal pure {
        if (a != b) revert(string.concat(what, ": ", a.toString(), " != ", b.toString()));
    }

    function assertEq(address a, address b, string memory what) internal pure {
        if (a != b) revert(string.concat(what, ": ", a.toHexString(), " != ", b.toHexString()));
    }

    function assertEq(bytes32 a, bytes32 b, string memory what) internal pure {
        if (a != b) {
            revert(string.concat(what, ": ", uint256(a).toHexString(32), " != ", uint256(b).toHexString(32)));
        }
    }

    function assertLe(uint256 a, uint256 b, string memory what) internal pure {
        if (a > b) revert(string.concat(what, ": ", a.toString(), " > ", b.toString()));
    }

    function assertTrue(bool condition, string memory what) internal pure {
        if (!condition) revert(what);
    }
}
