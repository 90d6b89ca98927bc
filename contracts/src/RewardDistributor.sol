// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {MerkleProof} from "@openzeppelin/contracts/utils/cryptography/MerkleProof.sol";
import {SafeCast} from "@openzeppelin/contracts/utils/math/SafeCast.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {IRewardDistributor} from "./interfaces/IRewardDistributor.sol";
import {ContributionLedger} from "./ContributionLedger.sol";

/// @title RewardDistributor
/// @notice Native-MON reward pools and cumulative pull-payment claims; see {IRewardDistributor}.
/// @dev The transient reentrancy guard needs EIP-1153 (Cancun), which OpenZeppelin 5.x already assumes (mcopy).
abstract contract RewardDistributor is IRewardDistributor, ContributionLedger, ReentrancyGuardTransient {
    mapping(bytes32 runId => mapping(address account => uint256 claimed)) private _claimed;

    /// @inheritdoc IRewardDistributor
    function fund(bytes32 runId) external payable whenNotPaused {
        if (msg.value == 0) revert ZeroFunding();
        Run storage run = _requireActive(runId);
        uint96 rewardPool = SafeCast.toUint96(run.rewardPool + msg.value);
        run.rewardPool = rewardPool;
        emit RewardFunded(runId, msg.sender, msg.value, rewardPool);
    }

    /// @inheritdoc IRewardDistributor
    function claim(bytes32 runId, address account, uint256 cumulativeAmount, bytes32[] calldata proof)
        external
        whenNotPaused
        nonReentrant
        returns (uint256 paid)
    {
        bytes32 root = _epochs[runId].rewardsRoot;
        if (root == bytes32(0)) revert NoRewardsPosted(runId);
        if (!MerkleProof.verifyCalldata(proof, root, rewardLeaf(account, cumulativeAmount))) {
            revert InvalidProof(runId, account, cumulativeAmount);
        }
        uint256 alreadyClaimed = _claimed[runId][account];
        if (cumulativeAmount <= alreadyClaimed) {
            revert NothingToClaim(runId, account, cumulativeAmount, alreadyClaimed);
        }
        paid = cumulativeAmount - alreadyClaimed;

        Run storage run = _runs[runId];
        uint256 available = run.rewardPool - run.totalClaimed;
        // Only a root whose leaves sum to more than its declared total can get here; refuse rather than
        // pay one claimant out of another's allocation.
        if (paid > available) revert InsufficientPool(runId, paid, available);

        _claimed[runId][account] = cumulativeAmount;
        // casting to 'uint96' is safe because paid <= available <= rewardPool, a uint96
        // forge-lint: disable-next-line(unsafe-typecast)
        run.totalClaimed += uint96(paid);
        emit RewardClaimed(runId, account, paid);
        Address.sendValue(payable(account), paid);
    }

    /// @inheritdoc IRewardDistributor
    function withdrawUnallocated(bytes32 runId, address payable to)
        external
        onlyRole(DEFAULT_ADMIN_ROLE)
        whenNotPaused
        nonReentrant
        returns (uint256 amount)
    {
        Run storage run = _runs[runId];
        RunStatus status = run.status;
        if (status == RunStatus.None) revert RunNotFound(runId);
        if (status == RunStatus.Active) revert RunStillActive(runId);
        uint96 allocated = _epochs[runId].totalAllocated;
        amount = run.rewardPool - allocated;
        if (amount == 0) revert NothingToWithdraw(runId);
        run.rewardPool = allocated;
        emit UnallocatedWithdrawn(runId, to, amount);
        Address.sendValue(to, amount);
    }

    /// @inheritdoc IRewardDistributor
    function claimedAmount(bytes32 runId, address account) external view returns (uint256) {
        return _claimed[runId][account];
    }

    /// @inheritdoc IRewardDistributor
    function rewardLeaf(address account, uint256 cumulativeAmount) public pure returns (bytes32) {
        return keccak256(bytes.concat(keccak256(abi.encode(account, cumulativeAmount))));
    }
}
