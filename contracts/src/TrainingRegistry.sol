// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {
    AccessControlDefaultAdminRules
} from "@openzeppelin/contracts/access/extensions/AccessControlDefaultAdminRules.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";

import {ITrainingRegistry} from "./interfaces/ITrainingRegistry.sol";

/// @title TrainingRegistry
/// @notice Runs and wallet <-> peer id bindings; also the roles and the pause switch the ledger and the
///         distributor share. See {ITrainingRegistry} for the EIP-712 binding the agents sign.
/// @dev The admin is OpenZeppelin's two-step default admin (begin, wait the delay, accept).
abstract contract TrainingRegistry is ITrainingRegistry, AccessControlDefaultAdminRules, Pausable, EIP712 {
    /// @inheritdoc ITrainingRegistry
    bytes32 public constant COORDINATOR_ROLE = keccak256("COORDINATOR_ROLE");

    /// @inheritdoc ITrainingRegistry
    bytes32 public constant NODE_BINDING_TYPEHASH =
        keccak256("NodeBinding(bytes32 runId,address node,string peerId,uint256 deadline)");

    mapping(bytes32 runId => Run) internal _runs;
    mapping(bytes32 runId => mapping(address node => bytes32 peerIdHash)) private _peerIdHashOf;
    mapping(bytes32 runId => mapping(bytes32 peerIdHash => address node)) private _nodeOfPeerIdHash;

    /// @param adminDelay Seconds a new default admin must wait between being proposed and accepting.
    /// @param admin The first default admin (pauses, grants roles, withdraws unallocated funds).
    /// @param coordinator The first holder of COORDINATOR_ROLE, or the zero address to grant it later.
    constructor(uint48 adminDelay, address admin, address coordinator)
        AccessControlDefaultAdminRules(adminDelay, admin)
        EIP712("HyperGPU", "1")
    {
        if (coordinator != address(0)) _grantRole(COORDINATOR_ROLE, coordinator);
    }

    /// @inheritdoc ITrainingRegistry
    function createRun(bytes32 runId, bytes32 modelHash, bytes32 datasetId, uint48 startTime, uint48 endTime)
        external
        payable
        onlyRole(COORDINATOR_ROLE)
        whenNotPaused
    {
        if (runId == bytes32(0)) revert InvalidRunId();
        if (_runs[runId].status != RunStatus.None) revert RunAlreadyExists(runId);
        if (endTime <= startTime) revert InvalidRunWindow(startTime, endTime);
        _runs[runId] = Run({
            modelHash: modelHash,
            datasetId: datasetId,
            rewardPool: SafeCast.toUint96(msg.value),
            totalClaimed: 0,
            startTime: startTime,
            status: RunStatus.Active,
            endTime: endTime,
            nodeCount: 0
        });
        emit RunCreated(runId, modelHash, datasetId, startTime, endTime, msg.value);
        emit RunStatusChanged(runId, RunStatus.None, RunStatus.Active);
    }

    /// @inheritdoc ITrainingRegistry
    function setRunStatus(bytes32 runId, RunStatus status) external onlyRole(COORDINATOR_ROLE) whenNotPaused {
        RunStatus previous = _runs[runId].status;
        if (previous == RunStatus.None) revert RunNotFound(runId);
        if (previous != RunStatus.Active || (status != RunStatus.Completed && status != RunStatus.Cancelled))
        {
            revert InvalidStatusTransition(runId, previous, status);
        }
        _runs[runId].status = status;
        emit RunStatusChanged(runId, previous, status);
    }

    /// @inheritdoc ITrainingRegistry
    function registerNodes(bytes32 runId, NodeRegistration[] calldata registrations)
        external
        onlyRole(COORDINATOR_ROLE)
        whenNotPaused
        returns (uint256 registered)
    {
        _requireActive(runId);
        for (uint256 i = 0; i < registrations.length; ++i) {
            if (_bind(runId, registrations[i])) ++registered;
        }
        if (registered != 0) _runs[runId].nodeCount += SafeCast.toUint32(registered);
    }

    /// @inheritdoc ITrainingRegistry
    function pause() external onlyRole(DEFAULT_ADMIN_ROLE) {
        _pause();
    }

    /// @inheritdoc ITrainingRegistry
    function unpause() external onlyRole(DEFAULT_ADMIN_ROLE) {
        _unpause();
    }

    /// @inheritdoc ITrainingRegistry
    function getRun(bytes32 runId) external view returns (Run memory) {
        return _runs[runId];
    }

    /// @inheritdoc ITrainingRegistry
    function peerIdHashOf(bytes32 runId, address node) external view returns (bytes32) {
        return _peerIdHashOf[runId][node];
    }

    /// @inheritdoc ITrainingRegistry
    function nodeOfPeerId(bytes32 runId, string calldata peerId) external view returns (address) {
        return _nodeOfPeerIdHash[runId][keccak256(bytes(peerId))];
    }

    /// @inheritdoc ITrainingRegistry
    function nodeBindingDigest(bytes32 runId, address node, string calldata peerId, uint256 deadline)
        external
        view
        returns (bytes32)
    {
        return _nodeBindingDigest(runId, node, keccak256(bytes(peerId)), deadline);
    }

    /// @dev Reverts unless the run exists and is active; returns its record for further reads.
    function _requireActive(bytes32 runId) internal view returns (Run storage run) {
        run = _runs[runId];
        RunStatus status = run.status;
        if (status == RunStatus.None) revert RunNotFound(runId);
        if (status != RunStatus.Active) revert RunNotActive(runId, status);
    }

    /// @dev True when `node` is bound to a peer id in the run.
    function _isBound(bytes32 runId, address node) internal view returns (bool) {
        return _peerIdHashOf[runId][node] != bytes32(0);
    }

    /// @dev EIP-712 digest of NodeBinding; a `string` member is encoded as the keccak256 of its bytes.
    function _nodeBindingDigest(bytes32 runId, address node, bytes32 peerIdHash, uint256 deadline)
        private
        view
        returns (bytes32)
    {
        return _hashTypedDataV4(
            keccak256(abi.encode(NODE_BINDING_TYPEHASH, runId, node, peerIdHash, deadline))
        );
    }

    /// @dev Checks one registration and stores the binding; false when the same binding exists already.
    function _bind(bytes32 runId, NodeRegistration calldata registration) private returns (bool) {
        address node = registration.node;
        if (bytes(registration.peerId).length == 0) revert EmptyPeerId(node);
        bytes32 peerIdHash = keccak256(bytes(registration.peerId));

        bytes32 boundPeerIdHash = _peerIdHashOf[runId][node];
        if (boundPeerIdHash == peerIdHash) return false;
        if (boundPeerIdHash != bytes32(0)) revert NodeAlreadyBound(runId, node, boundPeerIdHash);
        address boundNode = _nodeOfPeerIdHash[runId][peerIdHash];
        if (boundNode != address(0)) revert PeerIdAlreadyBound(runId, peerIdHash, boundNode);

        // A validator can shift the timestamp by seconds; deadlines are minutes to hours away.
        // forge-lint: disable-next-line(block-timestamp)
        if (block.timestamp > registration.deadline) revert SignatureExpired(node, registration.deadline);
        bytes32 digest = _nodeBindingDigest(runId, node, peerIdHash, registration.deadline);
        (address signer, ECDSA.RecoverError error,) = ECDSA.tryRecoverCalldata(digest, registration.signature);
        if (error != ECDSA.RecoverError.NoError || signer != node) revert InvalidNodeSignature(runId, node);

        _peerIdHashOf[runId][node] = peerIdHash;
        _nodeOfPeerIdHash[runId][peerIdHash] = node;
        emit NodeRegistered(runId, node, registration.peerId);
        return true;
    }
}
