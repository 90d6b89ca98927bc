"""How an agent plans each averaging round: the hook between measurements and the training loop.

The training loop asks its :class:`SwarmPolicy` for a :class:`RoundPlan` before every round and tells it
how the round went afterwards. :class:`StaticPolicy` is plain hivemind behaviour (fixed local work, one
global group, fixed timeouts); the network-aware policy (issue 3) adapts all of these from measured links.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

from agent.protocol.config import RunConfig


@dataclass(frozen=True)
class RoundPlan:
    """What the next round should look like.

    Args:
        local_steps: optimizer steps to take before joining the next round (H).
        batch_size: samples per local step (B); applied from the next batch on.
        group_bits: hivemind group-key suffix that decides which peers can meet (None = leave as is).
        matchmaking_timeout: seconds to look for a group before the round counts as failed.
        weight_scale: multiplies this agent's averaging weight (below 1 for an agent on probation).
        reason: why the plan differs from the last one (logged when it changes).
    """

    local_steps: int
    batch_size: int
    group_bits: str | None = None
    matchmaking_timeout: float = 30.0
    weight_scale: float = 1.0
    reason: str = ""


@dataclass(frozen=True)
class RoundResult:
    """How a round went, as the policy needs it. Times in seconds."""

    success: bool
    members: tuple[str, ...]
    round_seconds: float
    compute_seconds: float
    samples: int
    error: str = ""
    gathered: dict[str, Any] | None = None


class SwarmPolicy(Protocol):
    """Decides local work, grouping and timeouts. Implementations must be fast (they run in the loop)."""

    def start(self, *, dht: Any, peer_id: str, board: Any) -> None: ...

    def plan_round(self, round_number: int) -> RoundPlan: ...

    def on_round_finished(self, result: RoundResult) -> None: ...

    def gather_extras(self) -> dict[str, Any]: ...

    def decision_seconds(self) -> float: ...

    def stop(self) -> None: ...


class StaticPolicy:
    """Plain hivemind: the configured local steps and batch, one global group, a fixed timeout."""

    def __init__(self, config: RunConfig) -> None:
        self._plan = RoundPlan(
            local_steps=config.training.local_steps,
            batch_size=config.training.batch_size,
            group_bits=None,
            matchmaking_timeout=config.swarm.averaging_timeout,
        )
        self._spent = 0.0

    def start(self, *, dht: Any, peer_id: str, board: Any) -> None:
        return None

    def plan_round(self, round_number: int) -> RoundPlan:
        started = time.perf_counter()
        plan = self._plan
        self._spent += time.perf_counter() - started
        return plan

    def on_round_finished(self, result: RoundResult) -> None:
        return None

    def gather_extras(self) -> dict[str, Any]:
        return {}

    def decision_seconds(self) -> float:
        """Total seconds spent deciding (for the adaptation overhead figure)."""
        return self._spent

    def stop(self) -> None:
        return None
