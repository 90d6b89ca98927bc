// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";

import {IContributionLedger} from "../src/interfaces/IContributionLedger.sol";
import {ITrainingRegistry} from "../src/interfaces/ITrainingRegistry.sol";
import {AttestationTest} from "./utils/AttestationTest.sol";
import {vm} from "./utils/Vm.sol";

contract ContributionLedgerTest is AttestationTest {
    bytes32 internal constant ROOT = keccak256("root-0");

    function setUp() public override {
        super.setUp();
        _createRun(10 ether);
        _registerAgents(4);
    }

    // ---------------------------------------------------------------- recordContributions

    function test_recordContributions_emitsOneEventPerRecord() public {
        IContributionLedger.Contribution[] memory records = _contributions(4);
        for (uint256 i = 0; i < records.length; ++i) {
            vm.expectEmit();
            emit IContributionLedger.ContributionRecorded(
                RUN_ID,
                0,
                records[i].node,
                records[i].computeSeconds,
                records[i].roundsAccepted,
                records[i].samples,
                records[i].score
            );
        }
        vm.prank(coordinator);
        attestation.recordContributions(RUN_ID, 0, records);
    }

    function test_recordContributions_acceptsSeveralBatchesForTheOpenEpoch() public {
        IContributionLedger.Contribution[] memory records = _contributions(4);
        vm.startPrank(coordinator);
        attestation.recordContributions(RUN_ID, 0, records);
        attestation.recordContributions(RUN_ID, 0, records);
        attestation.postEpochRoot(RUN_ID, 0, ROOT, 1 ether);
        attestation.recordContributions(RUN_ID, 1, records);
        vm.stopPrank();
        assertEq(attestation.getEpochState(RUN_ID).epochCount, 1, "epochCount");
    }

    function test_RevertWhen_recordContributionsByNonCoordinator() public {
        IContributionLedger.Contribution[] memory records = _contributions(1);
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector,
                outsider,
                attestation.COORDINATOR_ROLE()
            )
        );
        vm.prank(outsider);
        attestation.recordContributions(RUN_ID, 0, records);
    }

    function test_RevertWhen_recordContributionsWhilePaused() public {
        IContributionLedger.Contribution[] memory records = _contributions(1);
        vm.prank(admin);
        attestation.pause();
        vm.expectRevert(Pausable.EnforcedPause.selector);
        vm.prank(coordinator);
        attestation.recordContributions(RUN_ID, 0, records);
    }

    function test_RevertWhen_recordContributionsForUnregisteredNode() public {
        IContributionLedger.Contribution[] memory records = _contributions(5);
        vm.expectRevert(
            abi.encodeWithSelector(IContributionLedger.NodeNotRegistered.selector, RUN_ID, _agent(4))
        );
        vm.prank(coordinator);
        attestation.recordContributions(RUN_ID, 0, records);
    }

    function test_RevertWhen_recordContributionsForPostedEpoch() public {
        vm.startPrank(coordinator);
        attestation.postEpochRoot(RUN_ID, 0, ROOT, 1 ether);
        IContributionLedger.Contribution[] memory records = _contributions(1);
        vm.expectRevert(abi.encodeWithSelector(IContributionLedger.EpochAlreadyPosted.selector, RUN_ID, 0));
        attestation.recordContributions(RUN_ID, 0, records);
        vm.stopPrank();
    }

    function test_RevertWhen_recordContributionsForFutureEpoch() public {
        IContributionLedger.Contribution[] memory records = _contributions(1);
        vm.expectRevert(abi.encodeWithSelector(IContributionLedger.EpochOutOfOrder.selector, RUN_ID, 2, 0));
        vm.prank(coordinator);
        attestation.recordContributions(RUN_ID, 2, records);
    }

    function test_RevertWhen_recordContributionsEmpty() public {
        IContributionLedger.Contribution[] memory records = _contributions(0);
        vm.expectRevert(IContributionLedger.EmptyContributionBatch.selector);
        vm.prank(coordinator);
        attestation.recordContributions(RUN_ID, 0, records);
    }

    function test_RevertWhen_recordContributionsOnCancelledRun() public {
        vm.prank(coordinator);
        attestation.setRunStatus(RUN_ID, ITrainingRegistry.RunStatus.Cancelled);
        IContributionLedger.Contribution[] memory records = _contributions(1);
        vm.expectRevert(
            abi.encodeWithSelector(
                ITrainingRegistry.RunNotActive.selector, RUN_ID, ITrainingRegistry.RunStatus.Cancelled
            )
        );
        vm.prank(coordinator);
        attestation.recordContributions(RUN_ID, 0, records);
    }

    // ---------------------------------------------------------------- postEpochRoot

    function test_postEpochRoot_closesEpochAndEmits() public {
        vm.expectEmit();
        emit IContributionLedger.EpochRootPosted(RUN_ID, 0, ROOT, 3 ether);
        vm.prank(coordinator);
        attestation.postEpochRoot(RUN_ID, 0, ROOT, 3 ether);

        IContributionLedger.EpochState memory state = attestation.getEpochState(RUN_ID);
        assertEq(state.rewardsRoot, ROOT, "rewardsRoot");
        assertEq(state.epochCount, 1, "epochCount");
        assertEq(state.totalAllocated, 3 ether, "totalAllocated");
    }

    function test_postEpochRoot_nextEpochReplacesRoot() public {
        bytes32 second = keccak256("root-1");
        vm.startPrank(coordinator);
        attestation.postEpochRoot(RUN_ID, 0, ROOT, 3 ether);
        attestation.postEpochRoot(RUN_ID, 1, second, 3 ether);
        vm.stopPrank();
        IContributionLedger.EpochState memory state = attestation.getEpochState(RUN_ID);
        assertEq(state.rewardsRoot, second, "rewardsRoot");
        assertEq(state.epochCount, 2, "epochCount");
    }

    function test_postEpochRoot_mayAllocateTheWholePool() public {
        vm.prank(coordinator);
        attestation.postEpochRoot(RUN_ID, 0, ROOT, 10 ether);
        assertEq(attestation.getEpochState(RUN_ID).totalAllocated, 10 ether, "totalAllocated");
    }

    function test_RevertWhen_postEpochRootTwice() public {
        vm.startPrank(coordinator);
        attestation.postEpochRoot(RUN_ID, 0, ROOT, 1 ether);
        vm.expectRevert(abi.encodeWithSelector(IContributionLedger.EpochAlreadyPosted.selector, RUN_ID, 0));
        attestation.postEpochRoot(RUN_ID, 0, ROOT, 1 ether);
        vm.stopPrank();
    }

    function test_RevertWhen_postEpochRootSkipsAnEpoch() public {
        vm.expectRevert(abi.encodeWithSelector(IContributionLedger.EpochOutOfOrder.selector, RUN_ID, 1, 0));
        vm.prank(coordinator);
        attestation.postEpochRoot(RUN_ID, 1, ROOT, 1 ether);
    }

    function test_RevertWhen_postEpochRootByNonCoordinator() public {
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector,
                outsider,
                attestation.COORDINATOR_ROLE()
            )
        );
        vm.prank(outsider);
        attestation.postEpochRoot(RUN_ID, 0, ROOT, 1 ether);
    }

    function test_RevertWhen_postEpochRootByAdminWithoutCoordinatorRole() public {
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector,
                admin,
                attestation.COORDINATOR_ROLE()
            )
        );
        vm.prank(admin);
        attestation.postEpochRoot(RUN_ID, 0, ROOT, 1 ether);
    }

    function test_RevertWhen_postEpochRootWhilePaused() public {
        vm.prank(admin);
        attestation.pause();
        vm.expectRevert(Pausable.EnforcedPause.selector);
        vm.prank(coordinator);
        attestation.postEpochRoot(RUN_ID, 0, ROOT, 1 ether);
    }

    function test_RevertWhen_postEpochRootIsZero() public {
        vm.expectRevert(IContributionLedger.InvalidRewardsRoot.selector);
        vm.prank(coordinator);
        attestation.postEpochRoot(RUN_ID, 0, bytes32(0), 1 ether);
    }

    function test_RevertWhen_postEpochRootAllocatesMoreThanPool() public {
        vm.expectRevert(
            abi.encodeWithSelector(
                IContributionLedger.AllocationExceedsPool.selector, RUN_ID, 10 ether + 1, 10 ether
            )
        );
        vm.prank(coordinator);
        attestation.postEpochRoot(RUN_ID, 0, ROOT, 10 ether + 1);
    }

    function test_RevertWhen_postEpochRootDecreasesAllocation() public {
        vm.startPrank(coordinator);
        attestation.postEpochRoot(RUN_ID, 0, ROOT, 2 ether);
        vm.expectRevert(
            abi.encodeWithSelector(IContributionLedger.AllocationDecreased.selector, RUN_ID, 2 ether, 1 ether)
        );
        attestation.postEpochRoot(RUN_ID, 1, ROOT, 1 ether);
        vm.stopPrank();
    }

    function test_RevertWhen_postEpochRootOnCompletedRun() public {
        vm.startPrank(coordinator);
        attestation.setRunStatus(RUN_ID, ITrainingRegistry.RunStatus.Completed);
        vm.expectRevert(
            abi.encodeWithSelector(
                ITrainingRegistry.RunNotActive.selector, RUN_ID, ITrainingRegistry.RunStatus.Completed
            )
        );
        attestation.postEpochRoot(RUN_ID, 0, ROOT, 1 ether);
        vm.stopPrank();
    }

    function test_RevertWhen_postEpochRootOnUnknownRun() public {
        bytes32 unknown = keccak256("unknown");
        vm.expectRevert(abi.encodeWithSelector(ITrainingRegistry.RunNotFound.selector, unknown));
        vm.prank(coordinator);
        attestation.postEpochRoot(unknown, 0, ROOT, 1 ether);
    }
}
