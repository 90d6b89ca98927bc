// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {HyperGPUAttestation} from "../src/HyperGPUAttestation.sol";
import {IContributionLedger} from "../src/interfaces/IContributionLedger.sol";
import {AttestationTest} from "./utils/AttestationTest.sol";
import {MerkleTreeBuilder} from "./utils/MerkleTreeBuilder.sol";
import {vm} from "./utils/Vm.sol";

/// @dev The fuzzer's only target: funds the run, closes epochs with growing cumulative trees, and claims with
///      current, stale and forged proofs, keeping ghost totals of what went in and what each account received.
contract RewardHandler {
    uint256 internal constant ACCOUNTS = 6;
    bytes32 internal immutable runId;
    HyperGPUAttestation internal immutable attestation;

    address[ACCOUNTS] public accounts;
    uint256[ACCOUNTS] public latestCumulative;
    uint256[ACCOUNTS] internal previousCumulative;
    uint256 public ghostFunded;
    uint256 public ghostPaid;
    mapping(address account => uint256) public ghostReceived;
    uint256 public claimsSucceeded;

    constructor(HyperGPUAttestation attestation_, bytes32 runId_, uint256 initialPool, uint256 keyBase) {
        attestation = attestation_;
        runId = runId_;
        ghostFunded = initialPool;
        for (uint256 i = 0; i < ACCOUNTS; ++i) {
            accounts[i] = vm.addr(keyBase + i);
        }
    }

    function fund(uint96 rawAmount) external {
        uint256 amount = 1 + rawAmount % 5 ether;
        vm.deal(address(this), amount);
        attestation.fund{value: amount}(runId);
        ghostFunded += amount;
    }

    /// @dev Closes the open epoch: each account's cumulative amount grows by up to 1/20 of what is unallocated.
    function postEpoch(uint256 seed) external {
        IContributionLedger.EpochState memory state = attestation.getEpochState(runId);
        uint256 unallocated = attestation.getRun(runId).rewardPool - state.totalAllocated;
        uint256[ACCOUNTS] memory next = latestCumulative;
        uint256 total;
        for (uint256 i = 0; i < ACCOUNTS; ++i) {
            next[i] += uint256(keccak256(abi.encode(seed, i))) % (unallocated / 20 + 1);
            total += next[i];
        }
        attestation.postEpochRoot(
            runId, state.epochCount, MerkleTreeBuilder.root(_leaves(next)), uint96(total)
        );
        previousCumulative = latestCumulative;
        latestCumulative = next;
    }

    function claimLatest(uint8 rawIndex) external {
        uint256 index = rawIndex % ACCOUNTS;
        _claim(index, latestCumulative[index], MerkleTreeBuilder.proof(_leaves(latestCumulative), index));
    }

    /// @dev Replays the previous epoch's leaf and proof: must never pay once a newer root is posted.
    function claimStale(uint8 rawIndex) external {
        uint256 index = rawIndex % ACCOUNTS;
        _claim(index, previousCumulative[index], MerkleTreeBuilder.proof(_leaves(previousCumulative), index));
    }

    /// @dev Inflates the amount of a valid proof: must never pay.
    function claimInflated(uint8 rawIndex, uint96 extra) external {
        uint256 index = rawIndex % ACCOUNTS;
        uint256 amount = latestCumulative[index] + 1 + extra;
        _claim(index, amount, MerkleTreeBuilder.proof(_leaves(latestCumulative), index));
    }

    function _claim(uint256 index, uint256 amount, bytes32[] memory proof) internal {
        address account = accounts[index];
        uint256 before = account.balance;
        try attestation.claim(runId, account, amount, proof) returns (uint256 paid) {
            ++claimsSucceeded;
            ghostPaid += paid;
        } catch {}
        ghostReceived[account] += account.balance - before;
    }

    function _leaves(uint256[ACCOUNTS] memory amounts) internal view returns (bytes32[] memory leaves) {
        leaves = new bytes32[](ACCOUNTS);
        for (uint256 i = 0; i < ACCOUNTS; ++i) {
            leaves[i] = attestation.rewardLeaf(accounts[i], amounts[i]);
        }
    }
}

contract RewardInvariantsTest is AttestationTest {
    RewardHandler internal handler;

    function setUp() public override {
        super.setUp();
        _createRun(20 ether);
        handler = new RewardHandler(attestation, RUN_ID, 20 ether, AGENT_KEY_BASE);
        bytes32 role = attestation.COORDINATOR_ROLE();
        vm.prank(admin);
        attestation.grantRole(role, address(handler));
    }

    /// @dev Read by forge: the fuzzer calls only the handler.
    function targetContracts() public view returns (address[] memory targets) {
        targets = new address[](1);
        targets[0] = address(handler);
    }

    /// @dev The handler's claims do pay when they should, so the invariants below are not vacuous.
    function test_handler_paysLatestAndRefusesStaleOrInflated() public {
        handler.postEpoch(1);
        handler.claimLatest(0);
        assertEq(handler.claimsSucceeded(), 1, "latest claim paid");
        assertTrue(handler.ghostPaid() > 0, "something paid");
        handler.postEpoch(2);
        handler.claimStale(1);
        handler.claimInflated(0, 5);
        assertEq(handler.claimsSucceeded(), 1, "stale and inflated claims refused");
        handler.claimLatest(0);
        assertEq(handler.claimsSucceeded(), 2, "second epoch paid");
    }

    function invariant_totalClaimedNeverExceedsTotalFunded() public view {
        uint256 totalClaimed = attestation.getRun(RUN_ID).totalClaimed;
        assertLe(totalClaimed, handler.ghostFunded(), "claimed <= funded");
        assertEq(totalClaimed, handler.ghostPaid(), "totalClaimed matches payouts");
        assertEq(address(attestation).balance, handler.ghostFunded() - handler.ghostPaid(), "balance");
    }

    /// @dev Each account received exactly its claimed cumulative amount, which a posted root allocated: paying
    ///      twice for the same cumulative amount would make received > claimedAmount.
    function invariant_noAccountPaidTwice() public view {
        for (uint256 i = 0; i < 6; ++i) {
            address account = handler.accounts(i);
            uint256 claimed = attestation.claimedAmount(RUN_ID, account);
            assertEq(handler.ghostReceived(account), claimed, "received == claimedAmount");
            assertEq(account.balance, claimed, "balance == claimedAmount");
            assertLe(claimed, handler.latestCumulative(i), "claimed <= allocated");
        }
    }

    function invariant_allocationWithinPool() public view {
        assertLe(
            attestation.getEpochState(RUN_ID).totalAllocated,
            attestation.getRun(RUN_ID).rewardPool,
            "allocated <= pool"
        );
    }
}
