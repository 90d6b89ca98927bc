"""Background parameter averaging with hivemind, overlapped with local training.

The outer loop of one agent: H local steps, then average parameters with a group, weighted by samples.
A round runs in hivemind's averager process while the agent keeps training; when it finishes, the agent
applies the group's correction ``average - snapshot`` on top of the steps it took meanwhile (the same
"delayed update" trick as hivemind's ``delay_optimizer_step``), so no core waits for the network.
"""

from __future__ import annotations

import hashlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import hivemind
import torch
from hivemind.averaging import DecentralizedAverager

log = logging.getLogger("hypergpu.averaging")

StateProvider = Callable[[], tuple[dict[str, Any], list[torch.Tensor]]]


class ModelAverager(DecentralizedAverager):
    """A DecentralizedAverager over model parameters that shares the full training state with newcomers.

    Args:
        parameters: the tensors to average (copied; the model's own tensors are never touched by hivemind).
        dht: this agent's DHT node.
        state_provider: called in the host process when a newcomer downloads state; returns
            (metadata such as the round number, tensors such as parameters and optimizer buffers).
        **kwargs: passed to :class:`hivemind.averaging.DecentralizedAverager`.
    """

    def __init__(
        self,
        parameters: Sequence[torch.Tensor],
        dht: hivemind.DHT,
        *,
        state_provider: StateProvider,
        **kwargs: Any,
    ) -> None:
        self._state_provider = state_provider
        averaged = [p.detach().cpu().clone() for p in parameters]
        super().__init__(averaged, dht, **kwargs)

    def get_current_state(self) -> tuple[Any, Sequence[torch.Tensor], None]:
        metadata, tensors = self._state_provider()
        return metadata, [t.detach().cpu() for t in tensors], None


@dataclass(frozen=True)
class RoundOutcome:
    """The end of one averaging round as this agent saw it.

    ``members`` are base58 peer ids; ``gathered`` maps each member to the payload it sent with the round;
    ``group_id`` is derived from the members and their nonces, so every member computes the same one.
    """

    success: bool
    group_id: str
    members: tuple[str, ...]
    gathered: dict[str, Any]
    seconds: float
    error: str = ""
    rejected_reason: str = ""


def group_id_of(gathered: dict[str, Any]) -> str:
    """A stable id for a group: the hash of its members' (peer id, nonce) pairs, sorted."""
    parts = sorted(f"{peer}:{payload.get('nonce', '')}" for peer, payload in gathered.items())
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]


@dataclass
class OverlappedAveraging:
    """Runs one averaging round at a time in the background and applies its result on arrival.

    Each agent keeps an *anchor*: the parameters the swarm last agreed on. A round averages snapshots of
    the live parameters; the pseudo-gradient ``anchor - average`` then moves the anchor through an outer
    SGD step with Nesterov momentum (as in DiLoCo), and the live parameters become ``new anchor + the local
    progress made while the round ran``. With ``outer_lr=1`` and ``outer_momentum=0`` this is plain
    parameter averaging; momentum makes up for the averaging of nearly parallel local updates, which
    otherwise costs a factor of the group size in progress per sample.

    Args:
        averager: the hivemind averager (its tensors mirror ``parameters``).
        parameters: the live model parameters, in the averager's order.
        timeout: give up on a round after this many seconds (matchmaking + all-reduce).
        outer_lr: step size of the outer update (1.0 = move the anchor to the group average).
        outer_momentum: Nesterov momentum of the outer update (0 = none).
    """

    averager: ModelAverager
    parameters: list[torch.Tensor]
    timeout: float
    outer_lr: float = 1.0
    outer_momentum: float = 0.0
    _control: Any = None
    _snapshot: list[torch.Tensor] = field(default_factory=list)
    _anchor: list[torch.Tensor] = field(default_factory=list)
    _momentum: list[torch.Tensor] = field(default_factory=list)
    _started: float = 0.0
    version: int = 0  # bumped whenever the anchor changes, so evaluation can skip an unchanged model

    def __post_init__(self) -> None:
        self.reset_anchor()

    def reset_anchor(self) -> None:
        """Take the current parameters as the agreed ones (after loading state or a checkpoint)."""
        with torch.no_grad():
            self._anchor = [p.detach().cpu().clone() for p in self.parameters]
            self._momentum = [torch.zeros_like(a) for a in self._anchor]
        self.version += 1

    @property
    def anchor(self) -> list[torch.Tensor]:
        """The parameters the swarm last agreed on (what evaluation and checkpoints should see)."""
        return self._anchor

    @property
    def in_flight(self) -> bool:
        return self._control is not None

    def start_round(self, *, weight: float, gather: dict[str, Any], timeout: float | None = None) -> None:
        """Snapshot the parameters and start averaging them with a group (returns at once)."""
        assert self._control is None, "one round at a time"
        with torch.no_grad():
            self._snapshot = [p.detach().cpu().clone() for p in self.parameters]
            with self.averager.get_tensors() as shared:
                for target, source in zip(shared, self._snapshot, strict=True):
                    target.copy_(source)
        self._started = time.perf_counter()
        self._control = self.averager.step(
            weight=max(float(weight), 1e-6), gather=gather, timeout=timeout or self.timeout, wait=False
        )

    def poll(self) -> RoundOutcome | None:
        """If the round in flight has finished, apply it and return its outcome; otherwise None."""
        if self._control is None or not self._control.done():
            return None
        control, self._control = self._control, None
        seconds = time.perf_counter() - self._started
        try:
            gathered_raw = control.result()
        except BaseException as exc:  # a vanished peer, a timeout: skip the round, keep the model
            return RoundOutcome(False, "", (), {}, seconds, error=f"{type(exc).__name__}: {exc}")
        if not gathered_raw:
            return RoundOutcome(False, "", (), {}, seconds, error="no group formed")
        gathered = {peer.to_base58(): payload for peer, payload in gathered_raw.items()}
        members = tuple(sorted(gathered))
        group_id = group_id_of(gathered)
        with torch.no_grad(), self.averager.get_tensors() as shared:
            averaged = [t.clone() for t in shared]
        bad = [i for i, t in enumerate(averaged) if not torch.isfinite(t).all()]
        if bad:
            log.error("round %s: averaged tensors %s contain NaN/Inf; not applied", group_id, bad)
            return RoundOutcome(
                False, group_id, members, gathered, seconds, rejected_reason="non-finite average"
            )
        with torch.no_grad():
            for i, (param, avg, snap) in enumerate(
                zip(self.parameters, averaged, self._snapshot, strict=True)
            ):
                new_anchor = outer_step(
                    self._anchor[i],
                    avg,
                    self._momentum[i],
                    outer_lr=self.outer_lr,
                    momentum=self.outer_momentum,
                )
                param.add_((new_anchor - snap).to(param.device))  # keep the progress made during the round
                self._anchor[i] = new_anchor
        self.version += 1
        return RoundOutcome(True, group_id, members, gathered, seconds)

    def cancel(self) -> None:
        if self._control is not None:
            self._control.cancel()
            self._control = None


def outer_step(
    anchor: torch.Tensor, average: torch.Tensor, buffer: torch.Tensor, *, outer_lr: float, momentum: float
) -> torch.Tensor:
    """The new anchor after one round: an SGD step with Nesterov momentum on ``anchor - average``.

    ``buffer`` is the outer momentum buffer, updated in place (untouched when ``momentum`` is 0); with
    ``outer_lr=1`` and ``momentum=0`` the result is ``average``.
    """
    pseudo_gradient = anchor - average
    if momentum > 0:
        buffer.mul_(momentum).add_(pseudo_gradient)
        pseudo_gradient = pseudo_gradient + momentum * buffer
    return anchor - outer_lr * pseudo_gradient


def update_norm_outliers(norms: dict[str, float], factor: float = 5.0) -> list[str]:
    """Peers whose update norm is more than ``factor`` times the group's median (or non-finite)."""
    finite = sorted(v for v in norms.values() if math.isfinite(v))
    if len(finite) < 3:
        return [peer for peer, v in norms.items() if not math.isfinite(v)]
    median = finite[len(finite) // 2]
    return [peer for peer, v in norms.items() if not math.isfinite(v) or (median > 0 and v > factor * median)]
