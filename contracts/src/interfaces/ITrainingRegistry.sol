// SPDX-License-Identifier: MIT
pragma solidity ^0.8.24;

/// @title ITrainingRegistry
/// @notice Training runs and the binding of each agent's wallet to its libp2p peer id.
/// @dev Node bindings are proven by the agent's EIP-712 signature over
///      `NodeBinding(bytes32 runId,address node,string peerId,uint256 deadline)` in the domain
///      `EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)` with
///      name "HyperGPU", version "1", the chain's id and this contract's address (read it on chain with
///      EIP-5267 `eip712Domain()`). `peerId` is the libp2p peer id in its base58 text form (e.g. "12D3KooW...",
///      or "Qm..." for RSA keys), hashed as `keccak256(bytes(peerId))` per EIP-712's rule for `string`.
///      A binding is fixed for the life of a run: within a run a wallet has one peer id and a peer id one wallet,
///      so two wallets cannot both be paid for one peer's work. A repeated registration of the same pair is
///      skipped (idempotent), so a coordinator may resend a batch after a crash.
interface ITrainingRegistry {
    /// @notice Life cycle of a run. `None` marks a run id that was never created.
    /// @dev Active -> Completed and Active -> Cancelled are the only transitions; both end states are final.
    enum RunStatus {
        None,
        Active,
        Completed,
        Cancelled
    }

    /// @notice A training run as stored on chain (four storage slots).
    /// @param modelHash Hash of the model definition the run trains (e.g. keccak256 of its config).
    /// @param datasetId Identifier of the dataset (e.g. keccak256("mnist")).
    /// @param rewardPool Native MON (wei) funded for the run, net of unallocated funds withdrawn after it ended.
    /// @param totalClaimed Wei already paid out to claimants; never exceeds `rewardPool`.
    /// @param startTime Planned start, unix seconds. Informational: the status, not the clock, gates writes.
    /// @param status Current life-cycle state.
    /// @param endTime Planned end, unix seconds, greater than `startTime`. Informational like `startTime`.
    /// @param nodeCount Number of wallets bound to the run.
    struct Run {
        bytes32 modelHash;
        bytes32 datasetId;
        uint96 rewardPool;
        uint96 totalClaimed;
        uint48 startTime;
        RunStatus status;
        uint48 endTime;
        uint32 nodeCount;
    }

    /// @notice One agent's signed request to bind its wallet to its peer id for a run.
    /// @param node The agent's wallet address (the signer).
    /// @param peerId The agent's libp2p peer id, base58 text.
    /// @param deadline Unix seconds after which the signature is no longer accepted.
    /// @param signature 65-byte ECDSA signature (r, s, v) of the EIP-712 digest of the `NodeBinding` struct.
    struct NodeRegistration {
        address node;
        string peerId;
        uint256 deadline;
        bytes signature;
    }

    /// @notice The run id is zero; pick a non-zero id (e.g. keccak256 of the run's name).
    error InvalidRunId();
    /// @notice A run with this id exists already.
    error RunAlreadyExists(bytes32 runId);
    /// @notice The planned window is empty: `endTime` must be greater than `startTime`.
    error InvalidRunWindow(uint48 startTime, uint48 endTime);
    /// @notice No run with this id was created.
    error RunNotFound(bytes32 runId);
    /// @notice The operation needs an active run, and the run is in `status`.
    error RunNotActive(bytes32 runId, RunStatus status);
    /// @notice The status change is not allowed (only Active -> Completed or Active -> Cancelled are).
    error InvalidStatusTransition(bytes32 runId, RunStatus from, RunStatus to);
    /// @notice The registration's signature expired at `deadline`; ask the agent for a fresh one.
    error SignatureExpired(address node, uint256 deadline);
    /// @notice The signature does not recover to `node` for this run, peer id and deadline.
    error InvalidNodeSignature(bytes32 runId, address node);
    /// @notice The peer id is empty.
    error EmptyPeerId(address node);
    /// @notice `node` is already bound to another peer id (`boundPeerIdHash`) in this run.
    error NodeAlreadyBound(bytes32 runId, address node, bytes32 boundPeerIdHash);
    /// @notice The peer id is already bound to another wallet (`boundNode`) in this run.
    error PeerIdAlreadyBound(bytes32 runId, bytes32 peerIdHash, address boundNode);

    /// @notice A run was created.
    /// @param initialPool Wei sent with the creation, the run's first reward pool.
    event RunCreated(
        bytes32 indexed runId,
        bytes32 modelHash,
        bytes32 datasetId,
        uint48 startTime,
        uint48 endTime,
        uint256 initialPool
    );

    /// @notice `node` was bound to `peerId` for `runId`.
    event NodeRegistered(bytes32 indexed runId, address indexed node, string peerId);

    /// @notice The run's status changed from `previous` to `current`.
    event RunStatusChanged(bytes32 indexed runId, RunStatus previous, RunStatus current);

    /// @notice Role allowed to create runs, register nodes, change run status and post contributions and roots.
    function COORDINATOR_ROLE() external view returns (bytes32);

    /// @notice EIP-712 type hash of `NodeBinding(bytes32 runId,address node,string peerId,uint256 deadline)`.
    function NODE_BINDING_TYPEHASH() external view returns (bytes32);

    /// @notice Creates an active run; the wei sent (may be zero) funds its reward pool.
    /// @dev Only COORDINATOR_ROLE, when not paused.
    /// @param runId Non-zero unique id of the run.
    /// @param modelHash Hash of the model definition.
    /// @param datasetId Identifier of the dataset.
    /// @param startTime Planned start, unix seconds.
    /// @param endTime Planned end, unix seconds, greater than `startTime`.
    function createRun(bytes32 runId, bytes32 modelHash, bytes32 datasetId, uint48 startTime, uint48 endTime)
        external
        payable;

    /// @notice Ends an active run as Completed or Cancelled.
    /// @dev Only COORDINATOR_ROLE, when not paused. Claims stay open in every state; writes need Active.
    function setRunStatus(bytes32 runId, RunStatus status) external;

    /// @notice Binds many agents' wallets to their peer ids in one transaction, checking each agent's signature.
    /// @dev Only COORDINATOR_ROLE, when not paused, on an active run. Entries already bound to the same peer id
    ///      are skipped; any invalid entry reverts the whole batch.
    /// @return registered Number of new bindings (skipped entries excluded).
    function registerNodes(bytes32 runId, NodeRegistration[] calldata registrations)
        external
        returns (uint256 registered);

    /// @notice Pauses every state-changing function except the admin's. Only the default admin.
    function pause() external;

    /// @notice Lifts a pause. Only the default admin.
    function unpause() external;

    /// @notice The run's stored record; `status` is `None` when it does not exist.
    function getRun(bytes32 runId) external view returns (Run memory);

    /// @notice keccak256 of the peer id bound to `node` in the run, or zero when unbound.
    function peerIdHashOf(bytes32 runId, address node) external view returns (bytes32);

    /// @notice Wallet bound to `peerId` in the run, or the zero address.
    function nodeOfPeerId(bytes32 runId, string calldata peerId) external view returns (address);

    /// @notice The EIP-712 digest an agent signs to bind `node` to `peerId` for `runId` until `deadline`.
    function nodeBindingDigest(bytes32 runId, address node, string calldata peerId, uint256 deadline)
        external
        view
        returns (bytes32);
}
