// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {IAccessControl} from "@openzeppelin/contracts/access/IAccessControl.sol";
import {Pausable} from "@openzeppelin/contracts/utils/Pausable.sol";

import {ITrainingRegistry} from "../src/interfaces/ITrainingRegistry.sol";
import {AttestationTest} from "./utils/AttestationTest.sol";
import {vm} from "./utils/Vm.sol";

contract TrainingRegistryTest is AttestationTest {
    // ---------------------------------------------------------------- createRun

    function test_createRun_storesRunAndEmits() public {
        vm.expectEmit();
        emit ITrainingRegistry.RunCreated(RUN_ID, MODEL_HASH, DATASET_ID, START_TIME, END_TIME, 5 ether);
        vm.expectEmit();
        emit ITrainingRegistry.RunStatusChanged(
            RUN_ID, ITrainingRegistry.RunStatus.None, ITrainingRegistry.RunStatus.Active
        );
        _createRun(5 ether);

        ITrainingRegistry.Run memory run = attestation.getRun(RUN_ID);
        assertEq(run.modelHash, MODEL_HASH, "modelHash");
        assertEq(run.datasetId, DATASET_ID, "datasetId");
        assertEq(run.rewardPool, 5 ether, "rewardPool");
        assertEq(run.totalClaimed, 0, "totalClaimed");
        assertEq(run.startTime, START_TIME, "startTime");
        assertEq(run.endTime, END_TIME, "endTime");
        assertEq(uint256(run.status), uint256(ITrainingRegistry.RunStatus.Active), "status");
        assertEq(run.nodeCount, 0, "nodeCount");
        assertEq(address(attestation).balance, 5 ether, "contract balance");
    }

    function test_RevertWhen_createRunByNonCoordinator() public {
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector,
                outsider,
                attestation.COORDINATOR_ROLE()
            )
        );
        vm.prank(outsider);
        attestation.createRun(RUN_ID, MODEL_HASH, DATASET_ID, START_TIME, END_TIME);
    }

    function test_RevertWhen_createRunWhilePaused() public {
        vm.prank(admin);
        attestation.pause();
        vm.expectRevert(Pausable.EnforcedPause.selector);
        vm.prank(coordinator);
        attestation.createRun(RUN_ID, MODEL_HASH, DATASET_ID, START_TIME, END_TIME);
    }

    function test_RevertWhen_createRunTwice() public {
        _createRun(0);
        vm.expectRevert(abi.encodeWithSelector(ITrainingRegistry.RunAlreadyExists.selector, RUN_ID));
        vm.prank(coordinator);
        attestation.createRun(RUN_ID, MODEL_HASH, DATASET_ID, START_TIME, END_TIME);
    }

    function test_RevertWhen_createRunWithZeroId() public {
        vm.expectRevert(ITrainingRegistry.InvalidRunId.selector);
        vm.prank(coordinator);
        attestation.createRun(bytes32(0), MODEL_HASH, DATASET_ID, START_TIME, END_TIME);
    }

    function test_RevertWhen_createRunWithEmptyWindow() public {
        vm.expectRevert(
            abi.encodeWithSelector(ITrainingRegistry.InvalidRunWindow.selector, END_TIME, START_TIME)
        );
        vm.prank(coordinator);
        attestation.createRun(RUN_ID, MODEL_HASH, DATASET_ID, END_TIME, START_TIME);
    }

    // ---------------------------------------------------------------- setRunStatus

    function test_setRunStatus_completesActiveRun() public {
        _createRun(0);
        vm.expectEmit();
        emit ITrainingRegistry.RunStatusChanged(
            RUN_ID, ITrainingRegistry.RunStatus.Active, ITrainingRegistry.RunStatus.Completed
        );
        vm.prank(coordinator);
        attestation.setRunStatus(RUN_ID, ITrainingRegistry.RunStatus.Completed);
        assertEq(
            uint256(attestation.getRun(RUN_ID).status),
            uint256(ITrainingRegistry.RunStatus.Completed),
            "status"
        );
    }

    function test_setRunStatus_cancelsActiveRun() public {
        _createRun(0);
        vm.prank(coordinator);
        attestation.setRunStatus(RUN_ID, ITrainingRegistry.RunStatus.Cancelled);
        assertEq(
            uint256(attestation.getRun(RUN_ID).status),
            uint256(ITrainingRegistry.RunStatus.Cancelled),
            "status"
        );
    }

    function test_RevertWhen_setRunStatusLeavesFinalState() public {
        _createRun(0);
        vm.startPrank(coordinator);
        attestation.setRunStatus(RUN_ID, ITrainingRegistry.RunStatus.Completed);
        vm.expectRevert(
            abi.encodeWithSelector(
                ITrainingRegistry.InvalidStatusTransition.selector,
                RUN_ID,
                ITrainingRegistry.RunStatus.Completed,
                ITrainingRegistry.RunStatus.Cancelled
            )
        );
        attestation.setRunStatus(RUN_ID, ITrainingRegistry.RunStatus.Cancelled);
        vm.stopPrank();
    }

    function test_RevertWhen_setRunStatusBackToNone() public {
        _createRun(0);
        vm.expectRevert(
            abi.encodeWithSelector(
                ITrainingRegistry.InvalidStatusTransition.selector,
                RUN_ID,
                ITrainingRegistry.RunStatus.Active,
                ITrainingRegistry.RunStatus.None
            )
        );
        vm.prank(coordinator);
        attestation.setRunStatus(RUN_ID, ITrainingRegistry.RunStatus.None);
    }

    function test_RevertWhen_setRunStatusOfUnknownRun() public {
        vm.expectRevert(abi.encodeWithSelector(ITrainingRegistry.RunNotFound.selector, RUN_ID));
        vm.prank(coordinator);
        attestation.setRunStatus(RUN_ID, ITrainingRegistry.RunStatus.Completed);
    }

    function test_RevertWhen_setRunStatusByNonCoordinator() public {
        _createRun(0);
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector,
                outsider,
                attestation.COORDINATOR_ROLE()
            )
        );
        vm.prank(outsider);
        attestation.setRunStatus(RUN_ID, ITrainingRegistry.RunStatus.Completed);
    }

    // ---------------------------------------------------------------- registerNodes

    function test_registerNodes_bindsBatchAndEmits() public {
        _createRun(0);
        ITrainingRegistry.NodeRegistration[] memory regs = _registrations(3);
        for (uint256 i = 0; i < 3; ++i) {
            vm.expectEmit();
            emit ITrainingRegistry.NodeRegistered(RUN_ID, _agent(i), _peerId(i));
        }
        vm.prank(coordinator);
        uint256 registered = attestation.registerNodes(RUN_ID, regs);

        assertEq(registered, 3, "registered");
        assertEq(attestation.getRun(RUN_ID).nodeCount, 3, "nodeCount");
        for (uint256 i = 0; i < 3; ++i) {
            assertEq(
                attestation.peerIdHashOf(RUN_ID, _agent(i)), keccak256(bytes(_peerId(i))), "peerIdHashOf"
            );
            assertEq(attestation.nodeOfPeerId(RUN_ID, _peerId(i)), _agent(i), "nodeOfPeerId");
        }
    }

    function test_registerNodes_skipsIdenticalBinding() public {
        _createRun(0);
        _registerAgents(2);
        ITrainingRegistry.NodeRegistration[] memory regs = _registrations(3);
        vm.recordLogs();
        vm.prank(coordinator);
        uint256 registered = attestation.registerNodes(RUN_ID, regs);
        assertEq(registered, 1, "only the new agent is registered");
        assertEq(vm.getRecordedLogs().length, 1, "one NodeRegistered event");
        assertEq(attestation.getRun(RUN_ID).nodeCount, 3, "nodeCount");
    }

    function test_nodeBindingDigest_matchesEip712() public view {
        uint256 deadline = 1_900_000_000;
        bytes32 domainSeparator = keccak256(
            abi.encode(
                keccak256(
                    "EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"
                ),
                keccak256("HyperGPU"),
                keccak256("1"),
                block.chainid,
                address(attestation)
            )
        );
        bytes32 structHash = keccak256(
            abi.encode(
                keccak256("NodeBinding(bytes32 runId,address node,string peerId,uint256 deadline)"),
                RUN_ID,
                _agent(0),
                keccak256(bytes(_peerId(0))),
                deadline
            )
        );
        bytes32 expected = keccak256(abi.encodePacked("\x19\x01", domainSeparator, structHash));
        assertEq(attestation.nodeBindingDigest(RUN_ID, _agent(0), _peerId(0), deadline), expected, "digest");
        (, string memory name, string memory version, uint256 chainId, address verifyingContract,,) =
            attestation.eip712Domain();
        assertEq(keccak256(bytes(name)), keccak256("HyperGPU"), "domain name");
        assertEq(keccak256(bytes(version)), keccak256("1"), "domain version");
        assertEq(chainId, block.chainid, "domain chainId");
        assertEq(verifyingContract, address(attestation), "domain verifyingContract");
    }

    function test_RevertWhen_registerNodesByNonCoordinator() public {
        _createRun(0);
        ITrainingRegistry.NodeRegistration[] memory regs = _registrations(1);
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector,
                outsider,
                attestation.COORDINATOR_ROLE()
            )
        );
        vm.prank(outsider);
        attestation.registerNodes(RUN_ID, regs);
    }

    function test_RevertWhen_registerNodesWhilePaused() public {
        _createRun(0);
        ITrainingRegistry.NodeRegistration[] memory regs = _registrations(1);
        vm.prank(admin);
        attestation.pause();
        vm.expectRevert(Pausable.EnforcedPause.selector);
        vm.prank(coordinator);
        attestation.registerNodes(RUN_ID, regs);
    }

    function test_RevertWhen_registerNodesOnEndedRun() public {
        _createRun(0);
        vm.prank(coordinator);
        attestation.setRunStatus(RUN_ID, ITrainingRegistry.RunStatus.Completed);
        ITrainingRegistry.NodeRegistration[] memory regs = _registrations(1);
        vm.expectRevert(
            abi.encodeWithSelector(
                ITrainingRegistry.RunNotActive.selector, RUN_ID, ITrainingRegistry.RunStatus.Completed
            )
        );
        vm.prank(coordinator);
        attestation.registerNodes(RUN_ID, regs);
    }

    function test_RevertWhen_registerNodesOnUnknownRun() public {
        ITrainingRegistry.NodeRegistration[] memory regs = _registrations(1);
        vm.expectRevert(abi.encodeWithSelector(ITrainingRegistry.RunNotFound.selector, RUN_ID));
        vm.prank(coordinator);
        attestation.registerNodes(RUN_ID, regs);
    }

    function test_RevertWhen_registrationSignedByAnotherKey() public {
        _createRun(0);
        ITrainingRegistry.NodeRegistration[] memory regs = _registrations(2);
        regs[1].signature = _signBinding(_agentKey(7), RUN_ID, regs[1].peerId, regs[1].deadline);
        vm.expectRevert(
            abi.encodeWithSelector(ITrainingRegistry.InvalidNodeSignature.selector, RUN_ID, _agent(1))
        );
        vm.prank(coordinator);
        attestation.registerNodes(RUN_ID, regs);
    }

    function test_RevertWhen_registrationSignedForAnotherPeerId() public {
        _createRun(0);
        ITrainingRegistry.NodeRegistration[] memory regs = _registrations(1);
        regs[0].peerId = _peerId(9);
        vm.expectRevert(
            abi.encodeWithSelector(ITrainingRegistry.InvalidNodeSignature.selector, RUN_ID, _agent(0))
        );
        vm.prank(coordinator);
        attestation.registerNodes(RUN_ID, regs);
    }

    function test_RevertWhen_registrationSignedForAnotherRun() public {
        _createRun(0);
        bytes32 otherRun = keccak256("other-run");
        ITrainingRegistry.NodeRegistration[] memory regs = _registrations(1);
        regs[0].signature = _signBinding(_agentKey(0), otherRun, regs[0].peerId, regs[0].deadline);
        vm.expectRevert(
            abi.encodeWithSelector(ITrainingRegistry.InvalidNodeSignature.selector, RUN_ID, _agent(0))
        );
        vm.prank(coordinator);
        attestation.registerNodes(RUN_ID, regs);
    }

    function test_RevertWhen_registrationSignatureMalformed() public {
        _createRun(0);
        ITrainingRegistry.NodeRegistration[] memory regs = _registrations(1);
        regs[0].signature = hex"1234";
        vm.expectRevert(
            abi.encodeWithSelector(ITrainingRegistry.InvalidNodeSignature.selector, RUN_ID, _agent(0))
        );
        vm.prank(coordinator);
        attestation.registerNodes(RUN_ID, regs);
    }

    function test_RevertWhen_registrationExpired() public {
        _createRun(0);
        ITrainingRegistry.NodeRegistration[] memory regs = _registrations(1);
        vm.warp(regs[0].deadline + 1);
        vm.expectRevert(
            abi.encodeWithSelector(ITrainingRegistry.SignatureExpired.selector, _agent(0), regs[0].deadline)
        );
        vm.prank(coordinator);
        attestation.registerNodes(RUN_ID, regs);
    }

    function test_RevertWhen_registrationHasEmptyPeerId() public {
        _createRun(0);
        ITrainingRegistry.NodeRegistration[] memory regs = _registrations(1);
        regs[0].peerId = "";
        vm.expectRevert(abi.encodeWithSelector(ITrainingRegistry.EmptyPeerId.selector, _agent(0)));
        vm.prank(coordinator);
        attestation.registerNodes(RUN_ID, regs);
    }

    function test_RevertWhen_nodeRebindsToAnotherPeerId() public {
        _createRun(0);
        _registerAgents(1);
        ITrainingRegistry.NodeRegistration[] memory regs = _registrations(1);
        regs[0].peerId = _peerId(5);
        regs[0].signature = _signBinding(_agentKey(0), RUN_ID, _peerId(5), regs[0].deadline);
        vm.expectRevert(
            abi.encodeWithSelector(
                ITrainingRegistry.NodeAlreadyBound.selector, RUN_ID, _agent(0), keccak256(bytes(_peerId(0)))
            )
        );
        vm.prank(coordinator);
        attestation.registerNodes(RUN_ID, regs);
    }

    function test_RevertWhen_twoWalletsClaimOnePeerId() public {
        _createRun(0);
        _registerAgents(1);
        ITrainingRegistry.NodeRegistration[] memory regs = _registrations(2);
        regs[1].peerId = _peerId(0);
        regs[1].signature = _signBinding(_agentKey(1), RUN_ID, _peerId(0), regs[1].deadline);
        vm.expectRevert(
            abi.encodeWithSelector(
                ITrainingRegistry.PeerIdAlreadyBound.selector, RUN_ID, keccak256(bytes(_peerId(0))), _agent(0)
            )
        );
        vm.prank(coordinator);
        attestation.registerNodes(RUN_ID, regs);
    }

    // ---------------------------------------------------------------- admin: pause, roles, handover

    function test_pause_unpause_byAdmin() public {
        vm.prank(admin);
        attestation.pause();
        assertTrue(attestation.paused(), "paused");
        vm.prank(admin);
        attestation.unpause();
        assertTrue(!attestation.paused(), "unpaused");
        _createRun(0);
    }

    function test_RevertWhen_pauseByNonAdmin() public {
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, coordinator, bytes32(0)
            )
        );
        vm.prank(coordinator);
        attestation.pause();
    }

    function test_RevertWhen_unpauseByNonAdmin() public {
        vm.prank(admin);
        attestation.pause();
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, outsider, bytes32(0)
            )
        );
        vm.prank(outsider);
        attestation.unpause();
    }

    function test_adminHandover_takesTwoStepsAndTheDelay() public {
        address newAdmin = vm.addr(0xAD2);
        vm.prank(admin);
        attestation.beginDefaultAdminTransfer(newAdmin);
        (address pending, uint48 schedule) = attestation.pendingDefaultAdmin();
        assertEq(pending, newAdmin, "pending admin");
        assertEq(schedule, block.timestamp + ADMIN_DELAY, "schedule");

        vm.expectRevert();
        vm.prank(newAdmin);
        attestation.acceptDefaultAdminTransfer();

        vm.warp(schedule + 1);
        vm.prank(newAdmin);
        attestation.acceptDefaultAdminTransfer();
        assertEq(attestation.defaultAdmin(), newAdmin, "defaultAdmin");

        vm.prank(newAdmin);
        attestation.pause();
        vm.expectRevert(
            abi.encodeWithSelector(
                IAccessControl.AccessControlUnauthorizedAccount.selector, admin, bytes32(0)
            )
        );
        vm.prank(admin);
        attestation.unpause();
    }

    function test_adminGrantsAndRevokesCoordinator() public {
        address second = vm.addr(0xC1);
        bytes32 role = attestation.COORDINATOR_ROLE();
        vm.prank(admin);
        attestation.grantRole(role, second);
        vm.prank(second);
        attestation.createRun(RUN_ID, MODEL_HASH, DATASET_ID, START_TIME, END_TIME);

        vm.prank(admin);
        attestation.revokeRole(role, second);
        vm.expectRevert(
            abi.encodeWithSelector(IAccessControl.AccessControlUnauthorizedAccount.selector, second, role)
        );
        vm.prank(second);
        attestation.setRunStatus(RUN_ID, ITrainingRegistry.RunStatus.Cancelled);
    }
}
