"""Small typed protocol objects shared by the agent, its faces and coordinator_lite.

All are frozen pydantic models so they validate on the way in, serialize to JSON on the way out, and
cannot be changed by accident after they are made.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from agent.protocol.timeutil import UtcDatetime, utc_now


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NodeStatus(StrEnum):
    """Lifecycle state of one agent."""

    JOINING = "joining"
    LOADING_STATE = "loading_state"
    TRAINING = "training"
    AVERAGING = "averaging"
    QUARANTINED = "quarantined"
    PAUSED = "paused"
    STOPPED = "stopped"


class Hardware(_Frozen):
    """What an agent computes on. ``memory_mb`` is device memory for a GPU, system RAM for a CPU."""

    device: str = Field(description="torch device string: 'cpu' or 'cuda:0'")
    name: str = Field(description="GPU name, or the CPU model")
    memory_mb: int = Field(ge=0, description="memory available to training, MiB")
    cpu_threads: int = Field(ge=1, description="torch intra-op threads")


class NodeMetadata(_Frozen):
    """Who an agent is and how to reach it."""

    peer_id: str = Field(min_length=1, description="libp2p peer id (base58)")
    hardware: Hardware
    address: str = Field(description="a visible multiaddr of the agent, with /p2p/<peer id>")
    status: NodeStatus = NodeStatus.JOINING
    wallet: str | None = Field(default=None, description="EVM address that receives rewards")


class NetworkMetrics(_Frozen):
    """One link measurement from this agent to ``peer_id``."""

    peer_id: str
    rtt_ms: float = Field(ge=0, description="round-trip time, EWMA, milliseconds")
    jitter_ms: float = Field(ge=0, description="standard deviation of recent RTT samples, milliseconds")
    loss: float = Field(ge=0, le=1, description="fraction of exchanges that failed")
    bandwidth_mbps: float | None = Field(default=None, ge=0, description="estimated megabit/s, if measured")
    timestamp: UtcDatetime = Field(default_factory=utc_now)


class AveragingRoundReport(_Frozen):
    """What one agent did in one averaging round."""

    run_id: str
    round: int = Field(ge=0)
    group_id: str = Field(description="hex of hivemind's group id, empty when the round failed")
    members: tuple[str, ...] = Field(description="peer ids of the group members")
    samples: int = Field(ge=0, description="training samples this agent processed since its last round")
    compute_seconds: float = Field(ge=0, description="seconds spent computing those samples")
    wait_seconds: float = Field(ge=0, description="seconds spent waiting for the group (not computing)")
    bytes_sent: int = Field(ge=0)
    bytes_received: int = Field(ge=0)
    success: bool
    timestamp: UtcDatetime = Field(default_factory=utc_now)


class TrainingMetrics(_Frozen):
    """A snapshot of training progress."""

    loss: float
    accuracy: float | None = Field(default=None, ge=0, le=1, description="test accuracy, if evaluated")
    epoch: float = Field(ge=0, description="passes over this agent's shard, fractional")
    step: int = Field(ge=0, description="local optimizer steps so far")
    samples_per_s: float = Field(ge=0)
    timestamp: UtcDatetime = Field(default_factory=utc_now)


class ContributionRecord(_Frozen):
    """One agent's confirmed contribution over an epoch of a run, as coordinator_lite attests it."""

    run_id: str
    epoch: int = Field(ge=0)
    peer_id: str
    wallet: str
    compute_seconds: float = Field(ge=0)
    rounds_accepted: int = Field(ge=0)
    samples: int = Field(ge=0)
    score: float = Field(ge=0)
    reward_wei: int = Field(ge=0, default=0)
