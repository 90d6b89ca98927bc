// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title IRewardDistributor
/// @notice A run's reward pool in native MON and pull-payment claims against the run's latest cumulative root.
/// @dev A claim pays `cumulativeAmount - claimedAmount(runId, account)`, so partial and repeated claims work and
///      an account is never paid twice for the same cumulative amount. The run's `totalClaimed` never exceeds
///      its `rewardPool`.
interface IRewardDistributor {
    /// @notice Funding must send a non-zero amount of wei.
    error ZeroFunding();
    /// @notice No epoch of the run has been closed, so there is nothing to claim against.
    error NoRewardsPosted(bytes32 runId);
    /// @notice The proof does not show (account, cumulativeAmount) in the run's latest rewards root.
    error InvalidProof(bytes32 runId, address account, uint256 cumulativeAmount);
    /// @notice `account` has already been paid `alreadyClaimed`, at least `cumulativeAmount`.
    error NothingToClaim(bytes32 runId, address account, uint256 cumulativeAmount, uint256 alreadyClaimed);
    /// @notice Paying `requested` wei would exceed the run's unclaimed pool `available`.
    error InsufficientPool(bytes32 runId, uint256 requested, uint256 available);
    /// @notice Unallocated funds can be withdrawn only once the run is no longer active.
    error RunStillActive(bytes32 runId);
    /// @notice The run has no unallocated funds to withdraw.
    error NothingToWithdraw(bytes32 runId);

    /// @notice `funder` added `amount` wei to the run's pool, which now holds `rewardPool` wei in all.
    event RewardFunded(bytes32 indexed runId, address indexed funder, uint256 amount, uint256 rewardPool);

    /// @notice `account` was paid `amount` wei from the run's pool.
    event RewardClaimed(bytes32 indexed runId, address indexed account, uint256 amount);

    /// @notice The admin took `amount` wei that no root allocated out of an ended run's pool, paid to `to`.
    event UnallocatedWithdrawn(bytes32 indexed runId, address indexed to, uint256 amount);

    /// @notice Adds the wei sent to an active run's reward pool. Anyone may fund; not while paused.
    function fund(bytes32 runId) external payable;

    /// @notice Pays `account` what its cumulative reward exceeds what it was already paid.
    /// @dev Anyone may submit the claim; the wei always goes to `account`. Not while paused; non-reentrant.
    /// @param account The rewarded wallet (a leaf of the latest root).
    /// @param cumulativeAmount The account's cumulative reward in wei, as in its leaf.
    /// @param proof Sibling hashes from the leaf up to the run's latest rewards root.
    /// @return paid Wei sent to `account`.
    function claim(bytes32 runId, address account, uint256 cumulativeAmount, bytes32[] calldata proof)
        external
        returns (uint256 paid);

    /// @notice Sends to `to` the part of an ended (completed or cancelled) run's pool that no root allocated.
    /// @dev Only the default admin, when not paused. Leaves exactly the latest `totalAllocated` in the pool, so
    ///      every posted reward stays claimable.
    /// @return amount Wei sent.
    function withdrawUnallocated(bytes32 runId, address payable to) external returns (uint256 amount);

    /// @notice Wei already paid to `account` from the run's pool (its claimed cumulative amount).
    function claimedAmount(bytes32 runId, address account) external view returns (uint256);

    /// @notice The Merkle leaf of (account, cumulativeAmount): keccak256(bytes.concat(keccak256(abi.encode(...)))).
    function rewardLeaf(address account, uint256 cumulativeAmount) external pure returns (bytes32);
}
