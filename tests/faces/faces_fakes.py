"""A fake agent behind AgentActions, for the faces' tests (a uniquely named module, not a conftest)."""

from __future__ import annotations

import threading

from agent.errors import UserFacingError
from agent.protocol.messages import NodeStatus
from agent.status import RewardsView, StatusBoard


class FakeActions:
    """Does what a real agent does with the board (flip ``paused``, move rewards) and records calls.

    Args:
        board: the board to update.
        claim_error: when set, ``claim`` raises it as a UserFacingError.
        claim_gate: when set, ``claim`` waits for it (to show the UI does not block).
    """

    def __init__(
        self, board: StatusBoard, claim_error: str | None = None, claim_gate: threading.Event | None = None
    ) -> None:
        self.board = board
        self.calls: list[str] = []
        self.claim_error = claim_error
        self.claim_gate = claim_gate

    def pause(self) -> None:
        self.calls.append("pause")
        self.board.update(paused=True, status=NodeStatus.PAUSED)

    def resume(self) -> None:
        self.calls.append("resume")
        self.board.update(paused=False, status=NodeStatus.TRAINING)

    def claim(self) -> str:
        self.calls.append("claim")
        if self.claim_gate is not None:
            self.claim_gate.wait(10)
        if self.claim_error:
            raise UserFacingError(self.claim_error)
        rewards = self.board.snapshot().rewards
        self.board.update(
            rewards=RewardsView(
                configured=True, pending_wei=0, claimed_wei=rewards.claimed_wei + rewards.pending_wei, note=""
            )
        )
        return "claimed in tx 0xfeed"
