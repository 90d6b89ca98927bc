"""What an operator may ask a running agent to do, from the TUI or the web page."""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class AgentActions(Protocol):
    """Implemented by the agent. Every method returns quickly or raises.

    ``pause``/``resume`` only flip a flag that the training loop reads between steps (the agent keeps
    averaging with its group so its peers are not stalled); the agent reflects the new state with
    ``board.update(paused=..., status=...)``. ``claim`` sends the reward claim and may take seconds;
    faces call it off their UI thread. Raise :class:`agent.errors.UserFacingError` for an operator's
    mistake (nothing to claim, chain not configured) so the face can show the one-line message.
    """

    def pause(self) -> None:
        """Stop local training steps after the current one."""
        ...

    def resume(self) -> None:
        """Resume local training steps."""
        ...

    def claim(self) -> str:
        """Claim pending rewards; returns a short human-readable result such as the transaction hash."""
        ...
