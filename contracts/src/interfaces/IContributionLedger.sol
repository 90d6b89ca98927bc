// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title IContributionLedger
/// @notice Per-epoch attestation of a run: the agents' contribution records as events, then the epoch's Merkle
///         root of cumulative rewards.
/// @dev Epochs of a run are numbered 0, 1, 2, ... and closed in that order. While epoch `e` is open
///      (`epochCount == e`) the coordinator may post its records in as many batches as it likes; posting the
///      root closes it, after which records or a root for `e` revert with `EpochAlreadyPosted`, so a coordinator
///      that restarts cannot count an epoch twice. Each root commits to every account's CUMULATIVE reward since
///      the run began (leaf: `keccak256(bytes.concat(keccak256(abi.encode(account, cumulativeAmount))))`,
///      pairs hashed sorted, as OpenZeppelin's MerkleProof expects), so only the latest root is needed to claim.
interface IContributionLedger {
    /// @notice One agent's contribution in one epoch, as the coordinator verified it.
    /// @param node The agent's wallet; must be bound to the run.
    /// @param computeSeconds Seconds of accepted compute.
    /// @param roundsAccepted Averaging rounds confirmed by group receipts.
    /// @param samples Training samples processed.
    /// @param score Contribution score, fixed point with 6 decimals (1_000_000 = 1.0).
    struct Contribution {
        address node;
        uint64 computeSeconds;
        uint32 roundsAccepted;
        uint64 samples;
        uint64 score;
    }

    /// @notice The reward state of a run's epochs (two storage slots).
    /// @param rewardsRoot Merkle root of cumulative rewards as of the last closed epoch; zero before the first.
    /// @param epochCount Number of closed epochs, which is also the number of the open epoch.
    /// @param totalAllocated Sum of all cumulative rewards committed by `rewardsRoot`, in wei.
    struct EpochState {
        bytes32 rewardsRoot;
        uint64 epochCount;
        uint96 totalAllocated;
    }

    /// @notice `epoch` of the run is closed already (its root was posted).
    error EpochAlreadyPosted(bytes32 runId, uint64 epoch);
    /// @notice `epoch` is not the run's open epoch `expectedEpoch`; epochs are closed in order.
    error EpochOutOfOrder(bytes32 runId, uint64 epoch, uint64 expectedEpoch);
    /// @notice The contribution batch is empty.
    error EmptyContributionBatch();
    /// @notice `node` is not bound to the run, so its contribution cannot be recorded.
    error NodeNotRegistered(bytes32 runId, address node);
    /// @notice A rewards root must not be zero.
    error InvalidRewardsRoot();
    /// @notice Cumulative allocations only grow: `proposed` is below the previous total `previous`.
    error AllocationDecreased(bytes32 runId, uint96 previous, uint96 proposed);
    /// @notice The root would allocate `allocated` wei, more than the run's funded pool `rewardPool`.
    error AllocationExceedsPool(bytes32 runId, uint256 allocated, uint256 rewardPool);

    /// @notice One agent's verified contribution to `epoch` of `runId`.
    event ContributionRecorded(
        bytes32 indexed runId,
        uint64 indexed epoch,
        address indexed node,
        uint64 computeSeconds,
        uint32 roundsAccepted,
        uint64 samples,
        uint64 score
    );

    /// @notice `epoch` of `runId` closed with `rewardsRoot`, which allocates `totalAllocated` wei in all.
    event EpochRootPosted(
        bytes32 indexed runId, uint64 indexed epoch, bytes32 rewardsRoot, uint96 totalAllocated
    );

    /// @notice Records a batch of contributions to the run's open epoch, one event each.
    /// @dev Only COORDINATOR_ROLE, when not paused, on an active run; every node must be bound to the run.
    /// @param epoch Must equal the run's open epoch (`epochCount`).
    function recordContributions(bytes32 runId, uint64 epoch, Contribution[] calldata contributions) external;

    /// @notice Closes the run's open epoch with the Merkle root of cumulative rewards.
    /// @dev Only COORDINATOR_ROLE, when not paused, on an active run. Cost does not depend on the number of agents.
    /// @param epoch Must equal the run's open epoch (`epochCount`).
    /// @param rewardsRoot Non-zero root over (account, cumulativeAmount) leaves.
    /// @param totalAllocated Sum of the tree's cumulative amounts in wei; at least the previous total and at most
    ///        the run's reward pool.
    function postEpochRoot(bytes32 runId, uint64 epoch, bytes32 rewardsRoot, uint96 totalAllocated) external;

    /// @notice The run's epoch state (latest root, closed-epoch count, total allocated).
    function getEpochState(bytes32 runId) external view returns (EpochState memory);
}
