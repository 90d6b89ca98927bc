// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IContributionLedger} from "./interfaces/IContributionLedger.sol";
import {TrainingRegistry} from "./TrainingRegistry.sol";

/// @title ContributionLedger
/// @notice Per-epoch contribution events and the epoch's cumulative rewards root; see {IContributionLedger}.
/// @dev Records are events only (about 3k gas each for the log) because nothing on chain reads them back; the
///      root is the one storage write per epoch, so closing an epoch costs the same for 10 or 10,000 agents.
abstract contract ContributionLedger is IContributionLedger, TrainingRegistry {
    mapping(bytes32 runId => EpochState) internal _epochs;

    /// @inheritdoc IContributionLedger
    function recordContributions(bytes32 runId, uint64 epoch, Contribution[] calldata contributions)
        external
        onlyRole(COORDINATOR_ROLE)
        whenNotPaused
    {
        _requireActive(runId);
        _requireOpenEpoch(runId, epoch);
        if (contributions.length == 0) revert EmptyContributionBatch();
        for (uint256 i = 0; i < contributions.length; ++i) {
            Contribution calldata c = contributions[i];
            if (!_isBound(runId, c.node)) revert NodeNotRegistered(runId, c.node);
            emit ContributionRecorded(
                runId, epoch, c.node, c.computeSeconds, c.roundsAccepted, c.samples, c.score
            );
        }
    }

    /// @inheritdoc IContributionLedger
    function postEpochRoot(bytes32 runId, uint64 epoch, bytes32 rewardsRoot, uint96 totalAllocated)
        external
        onlyRole(COORDINATOR_ROLE)
        whenNotPaused
    {
        Run storage run = _requireActive(runId);
        _requireOpenEpoch(runId, epoch);
        if (rewardsRoot == bytes32(0)) revert InvalidRewardsRoot();
        EpochState storage state = _epochs[runId];
        uint96 previous = state.totalAllocated;
        if (totalAllocated < previous) revert AllocationDecreased(runId, previous, totalAllocated);
        uint96 rewardPool = run.rewardPool;
        if (totalAllocated > rewardPool) revert AllocationExceedsPool(runId, totalAllocated, rewardPool);

        state.rewardsRoot = rewardsRoot;
        state.epochCount = epoch + 1;
        state.totalAllocated = totalAllocated;
        emit EpochRootPosted(runId, epoch, rewardsRoot, totalAllocated);
    }

    /// @inheritdoc IContributionLedger
    function getEpochState(bytes32 runId) external view returns (EpochState memory) {
        return _epochs[runId];
    }

    /// @dev Reverts unless `epoch` is the run's open epoch.
    function _requireOpenEpoch(bytes32 runId, uint64 epoch) private view {
        uint64 open = _epochs[runId].epochCount;
        if (epoch < open) revert EpochAlreadyPosted(runId, epoch);
        if (epoch > open) revert EpochOutOfOrder(runId, epoch, open);
    }
}
