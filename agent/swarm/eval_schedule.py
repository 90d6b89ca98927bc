"""When an agent evaluates the agreed model, and on how much of its test slice.

Evaluation is the agent's only work that is not training, and on a host shared by many agents it cost
up to a fifth of the loop: every agent re-evaluated the same anchor every tick, over its whole slice,
even while the swarm was far from its target. Two rules keep it small without slowing target detection:

* evaluate only when the anchor changed (an averaging round was applied, state loaded, reshard) or the
  last evaluation is getting too old to count as fresh in the swarm's pool;
* while the swarm is far below the target, evaluate a fixed 1-in-``SUBSAMPLE`` part of the slice (a
  progress estimate); evaluate the whole slice once the swarm is within ``FULL_MARGIN`` of the target,
  so that only whole-slice evaluations, which together cover the test set, can stop the run.
"""

from __future__ import annotations

from dataclasses import dataclass

SUBSAMPLE = 4  # evaluate every 4th sample of the slice while far from the target
FULL_MARGIN = 0.01  # evaluate the whole slice once accuracy >= target - this (about 3 sigma of the pooled
# subsample estimate, 2,500 samples at 97%)


@dataclass(frozen=True)
class EvalChoice:
    """Whether to evaluate now (``run``) and over the whole slice (``full``) or every SUBSAMPLE-th sample."""

    run: bool
    full: bool


def choose_evaluation(
    *,
    anchor_version: int,
    evaluated_version: int | None,
    evaluated_full: bool,
    evaluated_age_s: float | None,
    refresh_after_s: float,
    accuracy: float | None,
    target: float,
    estimate_every_s: float = 0.0,
) -> EvalChoice:
    """Decide this tick's evaluation.

    Args:
        anchor_version: the version of the agreed model now.
        evaluated_version: the version the last evaluation saw (None: never evaluated).
        evaluated_full: whether the last evaluation covered the whole slice.
        evaluated_age_s: seconds since the last evaluation (None: never evaluated).
        refresh_after_s: re-evaluate an unchanged model after this many seconds, so the swarm's pool,
            which drops evaluations older than the membership TTL, keeps this agent's.
        accuracy: the best accuracy estimate at hand (the swarm's pooled one, else this agent's own).
        target: the run's target accuracy.
        estimate_every_s: far from the target, a changed model is evaluated at most this often (the
            estimate only feeds the progress display); near it, every change is evaluated at once.
    """
    full = accuracy is not None and accuracy >= target - FULL_MARGIN
    if evaluated_version is None or evaluated_age_s is None:
        return EvalChoice(True, full)
    stale = evaluated_age_s >= refresh_after_s
    changed = anchor_version != evaluated_version and (full or evaluated_age_s >= estimate_every_s)
    needs_more = full and not evaluated_full  # a subsample cannot stand in for the whole slice
    return EvalChoice(changed or stale or needs_more, full)
