"""Adaptive local work: more local work on slow links, less on fast ones, bounds, rollback, slow peers."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from agent.adaptation.local_work import (
    LocalWorkBounds,
    LocalWorkConfig,
    LocalWorkController,
    LocalWorkPlan,
    RoundObservation,
    WorkChange,
)


def _run(
    controller: LocalWorkController,
    rounds: int,
    overhead_s: float,
    speed: Callable[[LocalWorkPlan], float] = lambda plan: 2000.0,
    rtt_ms: float | None = None,
    train_loss: Callable[[LocalWorkPlan], float | None] = lambda plan: None,
    group_ready_s: float | None = None,
    first_round: int = 0,
) -> None:
    """Simulated rounds: compute time = samples / speed, overhead as given."""
    for index in range(rounds):
        plan = controller.plan
        samples = plan.samples_per_round
        controller.observe(
            RoundObservation(
                round=first_round + index,
                samples=samples,
                compute_seconds=samples / speed(plan),
                overhead_seconds=overhead_s,
                rtt_ms=rtt_ms,
                link_loss=0.0 if rtt_ms is not None else None,
                train_loss=train_loss(plan),
                group_ready_seconds=group_ready_s,
            )
        )


def test_high_latency_agent_gets_more_local_work_than_a_fast_one() -> None:
    slow_link = LocalWorkController(LocalWorkPlan.of(32, 2))
    fast_link = LocalWorkController(LocalWorkPlan.of(32, 2))
    _run(slow_link, 80, overhead_s=2.5, rtt_ms=250.0)
    _run(fast_link, 80, overhead_s=0.02, rtt_ms=1.0)
    # 2.5 s overhead at 20%: about 10 s of compute, 20,000 samples at 2,000 samples/s.
    assert slow_link.plan.samples_per_round >= 8192
    assert fast_link.plan.samples_per_round <= 256
    assert slow_link.plan.batch_size == 256  # the batch grows before the local steps
    assert all(decision.change is WorkChange.MORE_WORK for decision in slow_link.log)
    assert "RTT 250 ms" in slow_link.log[0].reason
    assert all(decision.outcome and decision.outcome.startswith("kept") for decision in slow_link.log)


def test_fast_links_bring_averaging_back_to_every_few_steps() -> None:
    controller = LocalWorkController(LocalWorkPlan.of(256, 64))
    _run(controller, 120, overhead_s=0.01)
    # 0.01 s overhead at 20%: about 0.04 s of compute, 80 samples at 2,000 samples/s.
    assert controller.plan.local_steps == 1 and controller.plan.batch_size <= 128
    shrinks = [decision.after for decision in controller.log]
    assert shrinks[0].local_steps == 32 and shrinks[0].batch_size == 256  # steps shrink first


def test_plans_stay_within_bounds_and_change_one_level_at_a_time() -> None:
    bounds = LocalWorkBounds()
    for overhead in (0.0, 0.001, 5.0, 1000.0):
        controller = LocalWorkController(LocalWorkPlan.of(64, 4))
        _run(controller, 150, overhead_s=overhead)
        for decision in controller.log:
            plan = decision.after
            assert bounds.min_batch <= plan.batch_size <= bounds.max_batch
            assert bounds.min_steps <= plan.local_steps <= bounds.max_steps
            assert plan.batch_size & (plan.batch_size - 1) == 0
            ratio = plan.samples_per_round / decision.before.samples_per_round
            assert ratio in (0.5, 2.0)
    big = LocalWorkController(LocalWorkPlan.of(64, 4))
    _run(big, 150, overhead_s=1000.0)
    assert big.plan == LocalWorkPlan.of(256, 64)


def test_a_change_that_lowers_throughput_is_rolled_back_and_not_retried_at_once() -> None:
    # This device slows down sharply beyond batch 64 (say, it starts swapping).
    def speed(plan: LocalWorkPlan) -> float:
        return 2000.0 if plan.batch_size <= 64 else 50.0

    controller = LocalWorkController(LocalWorkPlan.of(64, 1))
    _run(controller, 10, overhead_s=1.0, speed=speed)
    changes = [decision.change for decision in controller.log]
    assert changes[:2] == [WorkChange.MORE_WORK, WorkChange.ROLLBACK]
    assert controller.log[0].outcome.startswith("rolled back: throughput fell")
    assert "undo more_work" in controller.log[1].reason
    assert controller.plan.batch_size == 64
    assert len(controller.log) == 2  # the same direction is blocked for retry_after_rounds ...
    _run(controller, 20, overhead_s=1.0, speed=speed, first_round=10)
    assert controller.log[2].change is WorkChange.MORE_WORK  # ... but tried again later
    assert controller.log[2].round >= controller.log[1].round + LocalWorkConfig().retry_after_rounds


def test_a_change_that_raises_training_loss_is_rolled_back() -> None:
    controller = LocalWorkController(LocalWorkPlan.of(64, 8))

    def train_loss(plan: LocalWorkPlan) -> float:
        return 0.3 if plan.local_steps >= 8 else 0.6  # fewer local steps diverged here

    _run(controller, 8, overhead_s=0.01, train_loss=train_loss)
    assert [decision.change for decision in controller.log] == [WorkChange.LESS_WORK, WorkChange.ROLLBACK]
    assert "training loss rose" in controller.log[0].outcome
    assert controller.plan.local_steps == 8


def test_a_slow_peer_is_not_given_more_work_than_it_finishes_before_the_group_is_ready() -> None:
    controller = LocalWorkController(LocalWorkPlan.of(16, 1))
    _run(controller, 80, overhead_s=5.0, speed=lambda plan: 100.0, group_ready_s=3.0)
    assert controller.plan.samples_per_round / 100.0 <= 3.0
    assert controller.plan.samples_per_round >= 128  # but it still did grow towards the limit
    assert "group ready every 3.0 s" in controller.log[-1].reason


def test_hold_effective_batch_adapts_only_steps_and_accumulation_fits_the_device() -> None:
    config = LocalWorkConfig(hold_effective_batch=True, max_micro_batch=32)
    controller = LocalWorkController(LocalWorkPlan.of(128, 1, max_micro_batch=32), config)
    assert controller.plan.accumulation_steps == 4
    _run(controller, 60, overhead_s=3.0)
    assert controller.plan.batch_size == 128 and controller.plan.local_steps > 1
    assert controller.plan.micro_batch_size == 32 and controller.plan.accumulation_steps == 4
    assert controller.plan.describe().startswith("batch 128 (4 x 32)")


def test_no_decision_before_enough_rounds_and_bad_input_refused() -> None:
    controller = LocalWorkController(LocalWorkPlan.of(32, 1))
    _run(controller, 2, overhead_s=10.0)
    assert controller.log == []
    with pytest.raises(ValueError, match="power of two"):
        LocalWorkController(LocalWorkPlan.of(48, 1))
    with pytest.raises(ValueError, match="outside"):
        LocalWorkController(LocalWorkPlan.of(512, 1))
    with pytest.raises(ValueError, match="link_loss"):
        RoundObservation(round=0, samples=1, compute_seconds=1, overhead_seconds=1, link_loss=2.0)
