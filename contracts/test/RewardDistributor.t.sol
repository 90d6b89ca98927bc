// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";
import {ReentrancyGuardTransient} from "@openzeppelin/contracts/utils/ReentrancyGuardTransient.sol";

import {HyperGPUAttestation} from "../src/HyperGPUAttestation.sol";
import {IRewardDistributor} from "../src/interfaces/IRewardDistributor.sol";
import {ITrainingRegistry} from "../src/interfaces/ITrainingRegistry.sol";
import {AttestationTest} from "./utils/AttestationTest.sol";
import {MerkleTreeBuilder} from "./utils/MerkleTreeBuilder.sol";
import {vm} from "./utils/Vm.sol";

/// @dev A claimant whose receive() re-enters claim() with the proof it was given.
contract ReenteringClaimant {
    HyperGPUAttestation private immutable attestation;
    bytes32 private runId;
    uint256 private amount;
    bytes32[] private proof;

    constructor(HyperGPUAttestation attestation_) {
        attestation = attestation_;
    }

    function arm(bytes32 runId_, uint256 amount_, bytes32[] memory proof_) external {
        runId = runId_;
        amount = amount_;
        proof = proof_;
    }

    receive() external payable {
        attestation.claim(runId, address(this), amount + 1, proof);
    }
}

contract RewardDistributorTest is AttestationTest {
    uint256 internal constant POOL = 10 ether;

    function setUp() public override {
        super.setUp();
        _createRun(POOL);
    }

    function _amounts3(uint256 a, uint256 b, uint256 c) internal pure returns (uint256[] memory amounts) {
        amounts = new uint256[](3);
        amounts[0] = a;
        amounts[1] = b;
        amounts[2] = c;
    }

    // ---------------------------------------------------------------- fund

    function test_fund_byAnyoneGrowsPool() public {
        vm.expectEmit();
        emit IRewardDistributor.RewardFunded(RUN_ID, outsider, 2 ether, POOL + 2 ether);
        vm.prank(outsider);
        attestation.fund{value: 2 ether}(RUN_ID);
        assertEq(attestation.getRun(RUN_ID).rewardPool, POOL + 2 ether, "rewardPool");
        assertEq(address(attestation).balance, POOL + 2 ether, "balance");
    }

    function test_RevertWhen_fundWithZero() public {
        vm.expectRevert(IRewardDistributor.ZeroFunding.selector);
        vm.prank(outsider);
        attestation.fund(RUN_ID);
    }

    function test_RevertWhen_fundUnknownRun() public {
        bytes32 unknown = keccak256("unknown");
        vm.expectRevert(abi.encodeWithSelector(ITrainingRegistry.RunNotFound.selector, unknown));
        vm.prank(outsider);
        attestation.fund{value: 1 ether}(unknown);
    }

    function test_RevertWhen_fundEndedRun() public {
        vm.prank(coordinator);
        attestation.setRunStatus(RUN_ID, ITrainingRegistry.RunStatus.Completed);
        vm.expectRevert(
            abi.encodeWithSelector(
                ITrainingRegistry.RunNotActive.selector, RUN_ID, ITrainingRegistry.RunStatus.Completed
            )
        );
        vm.prank(outsider);
        attestation.fund{value: 1 ether}(RUN_ID);
    }

    function test_RevertWhen_fundWhilePaused() public {
        vm.prank(admin);
        attestation.pause();
        vm.expectRevert(Pausable.EnforcedPause.selector);
        vm.prank(outsider);
        attestation.fund{value: 1 ether}(RUN_ID);
    }

    // ---------------------------------------------------------------- claim

    function test_claim_paysCumulativeAmount() public {
        uint256[] memory amounts = _amounts3(1 ether, 2 ether, 3 ether);
        _postRoot(amounts);
        bytes32[] memory proof = _proof(amounts, 1);

        vm.expectEmit();
        emit IRewardDistributor.RewardClaimed(RUN_ID, _agent(1), 2 ether);
        vm.prank(_agent(1));
        uint256 paid = attestation.claim(RUN_ID, _agent(1), 2 ether, proof);

        assertEq(paid, 2 ether, "paid");
        assertEq(_agent(1).balance, 2 ether, "agent balance");
        assertEq(attestation.claimedAmount(RUN_ID, _agent(1)), 2 ether, "claimedAmount");
        assertEq(attestation.getRun(RUN_ID).totalClaimed, 2 ether, "totalClaimed");
        assertEq(address(attestation).balance, POOL - 2 ether, "contract balance");
    }

    function test_claim_bySomeoneElsePaysTheAccount() public {
        uint256[] memory amounts = _amounts3(1 ether, 2 ether, 3 ether);
        _postRoot(amounts);
        bytes32[] memory proof = _proof(amounts, 2);
        uint256 before = outsider.balance;
        vm.prank(outsider);
        attestation.claim(RUN_ID, _agent(2), 3 ether, proof);
        assertEq(_agent(2).balance, 3 ether, "account paid");
        assertEq(outsider.balance, before, "submitter not paid");
    }

    function test_claim_laterEpochPaysOnlyTheDifference() public {
        uint256[] memory first = _amounts3(1 ether, 2 ether, 3 ether);
        _postRoot(first);
        bytes32[] memory firstProof = _proof(first, 0);
        attestation.claim(RUN_ID, _agent(0), 1 ether, firstProof);

        uint256[] memory second = _amounts3(1.5 ether, 2 ether, 4 ether);
        _postRoot(second);
        bytes32[] memory secondProof = _proof(second, 0);
        uint256 paid = attestation.claim(RUN_ID, _agent(0), 1.5 ether, secondProof);

        assertEq(paid, 0.5 ether, "second payment");
        assertEq(_agent(0).balance, 1.5 ether, "total received");
        assertEq(attestation.claimedAmount(RUN_ID, _agent(0)), 1.5 ether, "claimedAmount");
    }

    function test_claim_skippingEpochsStillPaysEverything() public {
        _postRoot(_amounts3(1 ether, 1 ether, 1 ether));
        _postRoot(_amounts3(2 ether, 2 ether, 2 ether));
        uint256[] memory third = _amounts3(3 ether, 3 ether, 3 ether);
        _postRoot(third);
        bytes32[] memory proof = _proof(third, 2);
        attestation.claim(RUN_ID, _agent(2), 3 ether, proof);
        assertEq(_agent(2).balance, 3 ether, "all epochs paid at once");
    }

    function test_claim_stillOpenAfterRunCompleted() public {
        uint256[] memory amounts = _amounts3(1 ether, 2 ether, 3 ether);
        _postRoot(amounts);
        vm.prank(coordinator);
        attestation.setRunStatus(RUN_ID, ITrainingRegistry.RunStatus.Completed);
        bytes32[] memory proof = _proof(amounts, 0);
        attestation.claim(RUN_ID, _agent(0), 1 ether, proof);
        assertEq(_agent(0).balance, 1 ether, "paid after completion");
    }

    function test_RevertWhen_claimTwiceForSameAmount() public {
        uint256[] memory amounts = _amounts3(1 ether, 2 ether, 3 ether);
        _postRoot(amounts);
        bytes32[] memory proof = _proof(amounts, 0);
        attestation.claim(RUN_ID, _agent(0), 1 ether, proof);
        vm.expectRevert(
            abi.encodeWithSelector(
                IRewardDistributor.NothingToClaim.selector, RUN_ID, _agent(0), 1 ether, 1 ether
            )
        );
        attestation.claim(RUN_ID, _agent(0), 1 ether, proof);
    }

    function test_RevertWhen_claimWithBadProof() public {
        uint256[] memory amounts = _amounts3(1 ether, 2 ether, 3 ether);
        _postRoot(amounts);
        bytes32[] memory proof = _proof(amounts, 1);
        vm.expectRevert(
            abi.encodeWithSelector(IRewardDistributor.InvalidProof.selector, RUN_ID, _agent(0), 1 ether)
        );
        attestation.claim(RUN_ID, _agent(0), 1 ether, proof);
    }

    function test_RevertWhen_claimInflatesAmount() public {
        uint256[] memory amounts = _amounts3(1 ether, 2 ether, 3 ether);
        _postRoot(amounts);
        bytes32[] memory proof = _proof(amounts, 0);
        vm.expectRevert(
            abi.encodeWithSelector(IRewardDistributor.InvalidProof.selector, RUN_ID, _agent(0), 5 ether)
        );
        attestation.claim(RUN_ID, _agent(0), 5 ether, proof);
    }

    function test_RevertWhen_claimWithStaleRootProof() public {
        uint256[] memory first = _amounts3(1 ether, 2 ether, 3 ether);
        _postRoot(first);
        bytes32[] memory staleProof = _proof(first, 0);
        _postRoot(_amounts3(2 ether, 2 ether, 3 ether));
        vm.expectRevert(
            abi.encodeWithSelector(IRewardDistributor.InvalidProof.selector, RUN_ID, _agent(0), 1 ether)
        );
        attestation.claim(RUN_ID, _agent(0), 1 ether, staleProof);
    }

    function test_RevertWhen_claimBeforeAnyRoot() public {
        bytes32[] memory proof = new bytes32[](0);
        vm.expectRevert(abi.encodeWithSelector(IRewardDistributor.NoRewardsPosted.selector, RUN_ID));
        attestation.claim(RUN_ID, _agent(0), 1 ether, proof);
    }

    function test_RevertWhen_claimWhilePaused() public {
        uint256[] memory amounts = _amounts3(1 ether, 2 ether, 3 ether);
        _postRoot(amounts);
        bytes32[] memory proof = _proof(amounts, 0);
        vm.prank(admin);
        attestation.pause();
        vm.expectRevert(Pausable.EnforcedPause.selector);
        attestation.claim(RUN_ID, _agent(0), 1 ether, proof);
    }

    /// @dev A coordinator that under-declares totalAllocated cannot make the contract pay beyond the run's pool,
    ///      even though another run's funds would cover the payment.
    function test_RevertWhen_claimWouldOverdrawPool() public {
        vm.prank(coordinator);
        attestation.createRun{value: 100 ether}(
            keccak256("other-run"), MODEL_HASH, DATASET_ID, START_TIME, END_TIME
        );
        uint256[] memory amounts = _amounts3(6 ether, 6 ether, 1 ether);
        bytes32 root = MerkleTreeBuilder.root(_leaves(amounts));
        vm.prank(coordinator);
        attestation.postEpochRoot(RUN_ID, 0, root, uint96(POOL));

        bytes32[] memory proof0 = _proof(amounts, 0);
        attestation.claim(RUN_ID, _agent(0), 6 ether, proof0);
        bytes32[] memory proof1 = _proof(amounts, 1);
        vm.expectRevert(
            abi.encodeWithSelector(IRewardDistributor.InsufficientPool.selector, RUN_ID, 6 ether, 4 ether)
        );
        attestation.claim(RUN_ID, _agent(1), 6 ether, proof1);
        assertEq(address(attestation).balance, 104 ether, "pools left intact");
    }

    function test_RevertWhen_claimantReenters() public {
        ReenteringClaimant claimant = new ReenteringClaimant(attestation);
        bytes32[] memory leaves = new bytes32[](2);
        leaves[0] = attestation.rewardLeaf(address(claimant), 1 ether);
        leaves[1] = attestation.rewardLeaf(_agent(0), 1 ether);
        bytes32 root = MerkleTreeBuilder.root(leaves);
        vm.prank(coordinator);
        attestation.postEpochRoot(RUN_ID, 0, root, 2 ether);
        bytes32[] memory proof = MerkleTreeBuilder.proof(leaves, 0);
        claimant.arm(RUN_ID, 1 ether, proof);

        vm.expectRevert(ReentrancyGuardTransient.ReentrancyGuardReentrantCall.selector);
        attestation.claim(RUN_ID, address(claimant), 1 ether, proof);
        assertEq(attestation.claimedAmount(RUN_ID, address(claimant)), 0, "nothing claimed");
    }

    // ---------------------------------------------------------------- withdrawUnallocated

    function test_withdrawUnallocated_leavesAllocatedRewardsClaimable() public {
        uint256[] memory amounts = _amounts3(1 ether, 2 ether, 3 ether);
        _postRoot(amounts);
        vm.prank(coordinator);
        attestation.setRunStatus(RUN_ID, ITrainingRegistry.RunStatus.Cancelled);

        address payable treasury = payable(vm.addr(0x7E));
        vm.expectEmit();
        emit IRewardDistributor.UnallocatedWithdrawn(RUN_ID, treasury, 4 ether);
        vm.prank(admin);
        uint256 amount = attestation.withdrawUnallocated(RUN_ID, treasury);
        assertEq(amount, 4 ether, "withdrawn");
        assertEq(treasury.balance, 4 ether, "treasury balance");
        assertEq(attestation.getRun(RUN_ID).rewardPool, 6 ether, "pool keeps the allocation");

        for (uint256 i = 0; i < 3; ++i) {
            bytes32[] memory proof = _proof(amounts, i);
            attestation.claim(RUN_ID, _agent(i), amounts[i], proof);
        }
        assertEq(address(attestation).balance, 0, "everything paid out");
    }

    function test_RevertWhen_withdrawUnallocatedFromActiveRun() public {
        vm.expectRevert(abi.encodeWithSelector(IRewardDistributor.RunStillActive.selector, RUN_ID));
        vm.prank(admin);
        attestation.withdrawUnallocated(RUN_ID, payable(admin));
    }

    function test_RevertWhen_withdrawUnallocatedTwice() public {
        vm.prank(coordinator);
        attestation.setRunStatus(RUN_ID, ITrainingRegistry.RunStatus.Completed);
        vm.startPrank(admin);
        attestation.withdrawUnallocated(RUN_ID, payable(admin));
        vm.expectRevert(abi.encodeWithSelector(IRewardDistributor.NothingToWithdraw.selector, RUN_ID));
        attestation.withdrawUnallocated(RUN_ID, payable(admin));
        vm.stopPrank();
    }

    function test_RevertWhen_withdrawUnallocatedByCoordinator() public {
        vm.prank(coordinator);
        attestation.setRunStatus(RUN_ID, ITrainingRegistry.RunStatus.Completed);
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, coordinator, bytes32(0)
            )
        );
        vm.prank(coordinator);
        attestation.withdrawUnallocated(RUN_ID, payable(coordinator));
    }

    function test_RevertWhen_withdrawUnallocatedFromUnknownRun() public {
        bytes32 unknown = keccak256("unknown");
        vm.expectRevert(abi.encodeWithSelector(ITrainingRegistry.RunNotFound.selector, unknown));
        vm.prank(admin);
        attestation.withdrawUnallocated(unknown, payable(admin));
    }

    // ---------------------------------------------------------------- fuzz

    /// @dev Any account of a tree of 1..64 fuzzed amounts claims exactly its amount, once.
    function test_fuzz_claimFromTree(uint256 seed, uint8 rawCount, uint8 rawIndex) public {
        uint256 count = _bound(rawCount, 1, 64);
        uint256 index = _bound(rawIndex, 0, count - 1);
        uint256[] memory amounts = new uint256[](count);
        for (uint256 i = 0; i < count; ++i) {
            amounts[i] = _bound(uint256(keccak256(abi.encode(seed, i))), 1, POOL / 64);
        }
        _postRoot(amounts);

        bytes32[] memory proof = _proof(amounts, index);
        uint256 paid = attestation.claim(RUN_ID, _agent(index), amounts[index], proof);
        assertEq(paid, amounts[index], "paid");
        assertEq(_agent(index).balance, amounts[index], "balance");

        vm.expectRevert(
            abi.encodeWithSelector(
                IRewardDistributor.NothingToClaim.selector,
                RUN_ID,
                _agent(index),
                amounts[index],
                amounts[index]
            )
        );
        attestation.claim(RUN_ID, _agent(index), amounts[index], proof);
    }

    /// @dev A proof for one amount never verifies another amount or another account.
    function test_fuzz_claimRejectsForgedLeaf(uint256 seed, uint256 forgedAmount, uint8 rawIndex) public {
        uint256 count = 16;
        uint256 index = _bound(rawIndex, 0, count - 1);
        uint256[] memory amounts = new uint256[](count);
        for (uint256 i = 0; i < count; ++i) {
            amounts[i] = _bound(uint256(keccak256(abi.encode(seed, i))), 1, POOL / 16);
        }
        vm.assume(forgedAmount != amounts[index]);
        _postRoot(amounts);
        bytes32[] memory proof = _proof(amounts, index);

        vm.expectRevert(
            abi.encodeWithSelector(
                IRewardDistributor.InvalidProof.selector, RUN_ID, _agent(index), forgedAmount
            )
        );
        attestation.claim(RUN_ID, _agent(index), forgedAmount, proof);

        address other = _agent((index + 1) % count);
        vm.expectRevert(
            abi.encodeWithSelector(IRewardDistributor.InvalidProof.selector, RUN_ID, other, amounts[index])
        );
        attestation.claim(RUN_ID, other, amounts[index], proof);
    }

    /// @dev Claims after every epoch (or only some) add up to the final cumulative amount, never more.
    function test_fuzz_claimAcrossEpochs(uint256 seed, uint8 claimMask) public {
        uint256 count = 5;
        uint256[] memory cumulative = new uint256[](count);
        for (uint256 epoch = 0; epoch < 4; ++epoch) {
            for (uint256 i = 0; i < count; ++i) {
                cumulative[i] += _bound(uint256(keccak256(abi.encode(seed, epoch, i))), 0, POOL / 40);
            }
            _postRoot(cumulative);
            for (uint256 i = 0; i < count; ++i) {
                bool wantsClaim = (claimMask >> ((epoch + i) % 8)) & 1 == 1;
                if (!wantsClaim || cumulative[i] <= attestation.claimedAmount(RUN_ID, _agent(i))) continue;
                bytes32[] memory proof = _proof(cumulative, i);
                attestation.claim(RUN_ID, _agent(i), cumulative[i], proof);
            }
        }
        uint256 paidTotal;
        for (uint256 i = 0; i < count; ++i) {
            if (cumulative[i] > attestation.claimedAmount(RUN_ID, _agent(i))) {
                bytes32[] memory proof = _proof(cumulative, i);
                attestation.claim(RUN_ID, _agent(i), cumulative[i], proof);
            }
            assertEq(_agent(i).balance, cumulative[i], "each account received its cumulative amount");
            paidTotal += _agent(i).balance;
        }
        assertEq(attestation.getRun(RUN_ID).totalClaimed, paidTotal, "totalClaimed");
        assertEq(address(attestation).balance, POOL - paidTotal, "balance");
    }
}
