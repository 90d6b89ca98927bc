// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

import {TrainingRegistry} from "./TrainingRegistry.sol";
import {RewardDistributor} from "./RewardDistributor.sol";

/// @title HyperGPUAttestation
/// @notice The one deployed contract of HyperGPU's attestation: TrainingRegistry + ContributionLedger +
///         RewardDistributor. They share runs, roles and the pause switch, so one contract keeps claims free of
///         cross-contract calls and gives agents one address and one EIP-712 domain to sign for.
contract HyperGPUAttestation is RewardDistributor {
    /// @param adminDelay Seconds a proposed new default admin waits before accepting (two-step handover).
    /// @param admin The first default admin.
    /// @param coordinator The first holder of COORDINATOR_ROLE, or the zero address to grant it later.
    constructor(uint48 adminDelay, address admin, address coordinator)
        TrainingRegistry(adminDelay, admin, coordinator)
    {}
}
