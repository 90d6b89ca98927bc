"""How much an agent computes between averaging rounds, from its links and its own speed.

Rule: a round costs this agent ``overhead`` seconds of not computing (matchmaking, waiting for the
group, all-reduce). Local compute per round should be about ``overhead * (1 - f) / f`` so that the
overhead is a fraction ``f`` (``target_overhead_fraction``) of the round. High RTT or loss makes the
overhead large, so the agent does more local work and averages less often; fast links shrink the
overhead, so it averages more often. The agent's compute speed turns that time into samples, and the
time the group takes to be ready caps it, so a slow peer is not handed more work than it can finish
before the others are waiting.

Changes go one level at a time (the work per round doubles or halves): growing raises the batch size
first, then the local steps; shrinking lowers the local steps first, then the batch. Each change is
logged with its reason and judged over the next ``evaluation_rounds`` rounds against the same number
of rounds before it; one that lowered throughput (samples per second of wall time) or raised the
training loss is rolled back, and the same direction is not tried again for a while.

The caller applies :attr:`LocalWorkController.plan` at the next round boundary, after finishing the
batch in progress.
"""

from __future__ import annotations

import math
import statistics
from collections import deque
from dataclasses import dataclass, field, replace
from enum import StrEnum


def _is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


@dataclass(frozen=True)
class LocalWorkBounds:
    """Limits of the plan: batch size in samples, local optimizer steps between rounds."""

    min_batch: int = 16
    max_batch: int = 256
    power_of_two: bool = True
    min_steps: int = 1
    max_steps: int = 64

    def __post_init__(self) -> None:
        if not 1 <= self.min_batch <= self.max_batch or not 1 <= self.min_steps <= self.max_steps:
            raise ValueError(f"need 1 <= min <= max for batch and steps, got {self}")
        if self.power_of_two and not (_is_power_of_two(self.min_batch) and _is_power_of_two(self.max_batch)):
            raise ValueError(f"power_of_two bounds need power-of-two min_batch and max_batch, got {self}")


@dataclass(frozen=True)
class LocalWorkPlan:
    """What to compute between two averaging rounds.

    ``batch_size`` samples per optimizer step (the effective batch), computed as
    ``accumulation_steps`` micro-batches of ``micro_batch_size`` samples (gradient accumulation, for a
    device that cannot hold the whole batch); ``local_steps`` optimizer steps per round.
    """

    batch_size: int
    local_steps: int
    micro_batch_size: int

    @classmethod
    def of(cls, batch_size: int, local_steps: int, max_micro_batch: int | None = None) -> LocalWorkPlan:
        """A plan whose micro-batch is the batch, or at most ``max_micro_batch`` samples."""
        micro = batch_size if max_micro_batch is None else min(batch_size, max_micro_batch)
        return cls(batch_size=batch_size, local_steps=local_steps, micro_batch_size=micro)

    @property
    def accumulation_steps(self) -> int:
        """Micro-batches per optimizer step (the last one may be smaller when sizes do not divide)."""
        return math.ceil(self.batch_size / self.micro_batch_size)

    @property
    def samples_per_round(self) -> int:
        """Training samples computed between two averaging rounds."""
        return self.batch_size * self.local_steps

    def describe(self) -> str:
        """e.g. ``batch 128 (2 x 64) x 8 steps``."""
        batch = f"batch {self.batch_size}"
        if self.accumulation_steps > 1:
            batch += f" ({self.accumulation_steps} x {self.micro_batch_size})"
        return f"{batch} x {self.local_steps} steps"


@dataclass(frozen=True)
class RoundObservation:
    """What this agent saw in one averaging round. Seconds, samples, fractions.

    - ``samples`` / ``compute_seconds``: work done since the previous round and the time it took.
    - ``overhead_seconds``: time not computing in this round (matchmaking, waiting, all-reduce).
    - ``success``: whether the round averaged; a failed one still costs its overhead.
    - ``rtt_ms`` / ``link_loss``: median RTT and loss to the group's peers, from the link monitor.
    - ``train_loss``: mean training loss over the round, if known (used to judge decisions).
    - ``group_ready_seconds``: how long the group took from one round to the next (the swarm's
      cadence), if known: local compute is kept below it.
    """

    round: int
    samples: int
    compute_seconds: float
    overhead_seconds: float
    success: bool = True
    rtt_ms: float | None = None
    link_loss: float | None = None
    train_loss: float | None = None
    group_ready_seconds: float | None = None

    def __post_init__(self) -> None:
        numbers = (self.samples, self.compute_seconds, self.overhead_seconds)
        if any(not math.isfinite(value) or value < 0 for value in numbers):
            raise ValueError(f"samples and seconds must be finite and >= 0, got {self}")
        if self.link_loss is not None and not 0 <= self.link_loss <= 1:
            raise ValueError(f"link_loss is a fraction in [0, 1], got {self.link_loss}")

    @property
    def wall_seconds(self) -> float:
        return self.compute_seconds + self.overhead_seconds


class WorkChange(StrEnum):
    MORE_WORK = "more_work"
    LESS_WORK = "less_work"
    ROLLBACK = "rollback"


@dataclass(frozen=True)
class LocalWorkDecision:
    """One change of plan, why it was made, and (once judged) what came of it."""

    round: int
    change: WorkChange
    before: LocalWorkPlan
    after: LocalWorkPlan
    reason: str
    throughput_before: float | None = None
    train_loss_before: float | None = None
    outcome: str | None = None


@dataclass(frozen=True)
class LocalWorkConfig:
    """Knobs of the controller.

    - ``target_overhead_fraction``: share of a round's wall time the overhead should take.
    - ``grow_ratio`` / ``shrink_ratio``: act when wanted compute time / current compute time is above
      the first or below the second (a deadband around one level, so one change does not undo itself).
    - ``round_trips_per_round``: floor on the expected overhead, in RTTs (matchmaking and all-reduce
      need several), inflated by 1 / (1 - loss).
    - ``ewma_alpha``: smoothing of compute speed and overhead over rounds.
    - ``evaluation_rounds``: rounds before a first decision and after each decision to judge it.
    - ``rollback_throughput_drop`` / ``rollback_loss_rise``: relative worsening that undoes a decision.
    - ``retry_after_rounds``: rounds before a rolled-back direction is tried again.
    - ``hold_effective_batch``: keep the batch size (e.g. the learning rate was tuned for it) and
      adapt only the local steps.
    - ``max_micro_batch``: samples the device can hold; larger batches use gradient accumulation.
    """

    bounds: LocalWorkBounds = field(default_factory=LocalWorkBounds)
    target_overhead_fraction: float = 0.2
    grow_ratio: float = 1.5
    shrink_ratio: float = 0.5
    round_trips_per_round: float = 10.0
    ewma_alpha: float = 0.3
    evaluation_rounds: int = 3
    rollback_throughput_drop: float = 0.10
    rollback_loss_rise: float = 0.05
    retry_after_rounds: int = 10
    hold_effective_batch: bool = False
    max_micro_batch: int | None = None

    def __post_init__(self) -> None:
        if not 0 < self.target_overhead_fraction < 1:
            raise ValueError(
                f"target_overhead_fraction must be in (0, 1), got {self.target_overhead_fraction}"
            )
        if not 0 < self.shrink_ratio < 1 < self.grow_ratio:
            raise ValueError(
                f"need 0 < shrink_ratio < 1 < grow_ratio, got {self.shrink_ratio}, {self.grow_ratio}"
            )
        if self.evaluation_rounds < 1 or not 0 < self.ewma_alpha <= 1:
            raise ValueError("evaluation_rounds must be >= 1 and ewma_alpha in (0, 1]")


class LocalWorkController:
    """Per-agent batch size and local steps between rounds (see the module docstring).

    Feed one :class:`RoundObservation` per round to :meth:`observe`; read :attr:`plan`; the decisions
    (changes and rollbacks, with reasons and outcomes) are in :attr:`log`.
    """

    def __init__(self, initial: LocalWorkPlan, config: LocalWorkConfig | None = None) -> None:
        self.config = config or LocalWorkConfig()
        bounds = self.config.bounds
        if not bounds.min_batch <= initial.batch_size <= bounds.max_batch:
            raise ValueError(
                f"initial batch {initial.batch_size} is outside [{bounds.min_batch}, {bounds.max_batch}]"
            )
        if bounds.power_of_two and not _is_power_of_two(initial.batch_size):
            raise ValueError(
                f"initial batch {initial.batch_size} is not a power of two (bounds.power_of_two)"
            )
        if not bounds.min_steps <= initial.local_steps <= bounds.max_steps:
            raise ValueError(
                f"initial local steps {initial.local_steps} is outside "
                f"[{bounds.min_steps}, {bounds.max_steps}]"
            )
        self.plan = initial
        self.log: list[LocalWorkDecision] = []
        self._history: deque[RoundObservation] = deque(maxlen=4 * self.config.evaluation_rounds)
        self._since_change = 0
        self._pending: int | None = None  # index in log of the decision being judged
        self._blocked_until: dict[WorkChange, int] = {}
        self.compute_speed: float | None = None  # samples per compute second, EWMA
        self.overhead_seconds: float | None = None  # EWMA

    def observe(self, observation: RoundObservation) -> LocalWorkDecision | None:
        """Record one round; return the decision it led to (already applied to :attr:`plan`), if any."""
        alpha = self.config.ewma_alpha
        if observation.samples > 0 and observation.compute_seconds > 0:
            speed = observation.samples / observation.compute_seconds
            self.compute_speed = (
                speed if self.compute_speed is None else (1 - alpha) * self.compute_speed + alpha * speed
            )
        overhead = observation.overhead_seconds
        self.overhead_seconds = (
            overhead
            if self.overhead_seconds is None
            else (1 - alpha) * self.overhead_seconds + alpha * overhead
        )
        self._history.append(observation)
        self._since_change += 1
        window = self.config.evaluation_rounds
        if self._pending is not None:
            if self._since_change < window:
                return None
            return self._judge(observation)
        if self._since_change < window or self.compute_speed is None:
            return None
        return self._decide(observation)

    def _window_stats(self, rounds: list[RoundObservation]) -> tuple[float, float | None]:
        """Throughput (samples per wall second) and mean training loss over ``rounds``."""
        wall = sum(round_.wall_seconds for round_ in rounds)
        throughput = sum(round_.samples for round_ in rounds) / wall if wall > 0 else 0.0
        losses = [round_.train_loss for round_ in rounds if round_.train_loss is not None]
        return throughput, (statistics.fmean(losses) if losses else None)

    def _judge(self, observation: RoundObservation) -> LocalWorkDecision | None:
        assert self._pending is not None
        index, self._pending = self._pending, None
        decision = self.log[index]
        throughput, train_loss = self._window_stats(list(self._history)[-self.config.evaluation_rounds :])
        worse: list[str] = []
        if decision.throughput_before and throughput < decision.throughput_before * (
            1 - self.config.rollback_throughput_drop
        ):
            worse.append(f"throughput fell {decision.throughput_before:.0f} -> {throughput:.0f} samples/s")
        if (
            decision.train_loss_before is not None
            and train_loss is not None
            and train_loss > decision.train_loss_before * (1 + self.config.rollback_loss_rise)
        ):
            worse.append(f"training loss rose {decision.train_loss_before:.3f} -> {train_loss:.3f}")
        if not worse:
            outcome = f"kept: throughput {decision.throughput_before or 0:.0f} -> {throughput:.0f} samples/s"
            self.log[index] = replace(decision, outcome=outcome)
            return None
        self.log[index] = replace(decision, outcome="rolled back: " + "; ".join(worse))
        self._blocked_until[decision.change] = observation.round + self.config.retry_after_rounds
        rollback = LocalWorkDecision(
            round=observation.round,
            change=WorkChange.ROLLBACK,
            before=self.plan,
            after=decision.before,
            reason=f"undo {decision.change} of round {decision.round} ({decision.before.describe()} -> "
            f"{decision.after.describe()}): " + "; ".join(worse),
            throughput_before=throughput,
            train_loss_before=train_loss,
        )
        self._apply(rollback, judge=False)
        return rollback

    def _decide(self, observation: RoundObservation) -> LocalWorkDecision | None:
        assert self.compute_speed is not None and self.overhead_seconds is not None
        config = self.config
        loss = observation.link_loss or 0.0
        overhead = self.overhead_seconds
        if observation.rtt_ms is not None:
            floor = config.round_trips_per_round * observation.rtt_ms / 1000 / max(1e-3, 1 - loss)
            overhead = max(overhead, floor)
        wanted_compute = overhead * (1 - config.target_overhead_fraction) / config.target_overhead_fraction
        ready = observation.group_ready_seconds
        if ready is not None and ready > 0:
            wanted_compute = min(wanted_compute, ready)
        current_compute = self.plan.samples_per_round / self.compute_speed
        ratio = wanted_compute / current_compute if current_compute > 0 else math.inf
        links = f"RTT {observation.rtt_ms:.0f} ms, " if observation.rtt_ms is not None else ""
        links += f"loss {loss:.1%}, " if observation.link_loss is not None else ""
        context = (
            f"overhead {overhead:.2f} s/round ({links}target {config.target_overhead_fraction:.0%}), "
            f"compute {self.compute_speed:.0f} samples/s"
            + (f", group ready every {ready:.1f} s" if ready is not None else "")
        )
        if ratio > config.grow_ratio:
            change, after = WorkChange.MORE_WORK, self._grown()
            why = f"local compute {current_compute:.2f} s/round is below the wanted {wanted_compute:.2f} s"
        elif ratio < config.shrink_ratio:
            change, after = WorkChange.LESS_WORK, self._shrunk()
            why = f"local compute {current_compute:.2f} s/round is above the wanted {wanted_compute:.2f} s"
        else:
            return None
        if after is None or self._blocked_until.get(change, -1) > observation.round:
            return None
        throughput, train_loss = self._window_stats(list(self._history)[-config.evaluation_rounds :])
        decision = LocalWorkDecision(
            round=observation.round,
            change=change,
            before=self.plan,
            after=after,
            reason=f"{why} ({context}): {self.plan.describe()} -> {after.describe()}",
            throughput_before=throughput,
            train_loss_before=train_loss,
        )
        self._apply(decision, judge=True)
        return decision

    def _apply(self, decision: LocalWorkDecision, judge: bool) -> None:
        self.log.append(decision)
        self.plan = decision.after
        self._since_change = 0
        self._pending = len(self.log) - 1 if judge else None

    def _with(self, batch_size: int, local_steps: int) -> LocalWorkPlan:
        return LocalWorkPlan.of(batch_size, local_steps, self.config.max_micro_batch)

    def _grown(self) -> LocalWorkPlan | None:
        """One level more work (batch first, then steps), or None at the bounds."""
        bounds, plan = self.config.bounds, self.plan
        if not self.config.hold_effective_batch and plan.batch_size < bounds.max_batch:
            return self._with(min(bounds.max_batch, plan.batch_size * 2), plan.local_steps)
        if plan.local_steps < bounds.max_steps:
            return self._with(plan.batch_size, min(bounds.max_steps, plan.local_steps * 2))
        return None

    def _shrunk(self) -> LocalWorkPlan | None:
        """One level less work (steps first, then batch), or None at the bounds."""
        bounds, plan = self.config.bounds, self.plan
        if plan.local_steps > bounds.min_steps:
            return self._with(plan.batch_size, max(bounds.min_steps, plan.local_steps // 2))
        if not self.config.hold_effective_batch and plan.batch_size > bounds.min_batch:
            return self._with(max(bounds.min_batch, plan.batch_size // 2), plan.local_steps)
        return None
