"""Keeps the StatusBoard's rewards panel filled: a background thread asks the coordinator for this wallet's
proof and the chain for the root and the claimed amount every ``interval_s`` seconds.

    watcher = RewardsWatcher(config.chain, account.address, config.swarm.run_id, board)
    watcher.start()          # never blocks training: slow or failing reads only delay the next refresh
    ...
    watcher.stop()

It reads through :func:`agent.chain.claiming.reward_statuses`, the same reads ``hypergpu claim`` makes,
so the pending amount shown is exactly what a claim would pay.
"""

from __future__ import annotations

import logging
import threading
from typing import TYPE_CHECKING

from agent.chain.claiming import format_amount, reward_statuses
from agent.chain.networks import ChainConfig
from agent.errors import UserFacingError
from agent.status import RewardsView, StatusBoard

if TYPE_CHECKING:
    from agent.chain.attestation import Attestation
    from agent.chain.claiming import RewardStatus

log = logging.getLogger("hypergpu.rewards")

POLL_RPC_RETRIES = 1  # a failed read is simply tried again at the next poll


def chain_configured(chain: ChainConfig) -> bool:
    """Whether the ``[chain]`` section names a contract (an address or a deployment file)."""
    return chain.attestation_address is not None or chain.deployment_file is not None


class RewardsWatcher:
    """Polls rewards for ``address`` in ``run_id`` and writes them to ``board.rewards``.

    Args:
        chain: the run's ``[chain]`` section (RPC, contract, coordinator URL).
        address: the agent's wallet address.
        run_id: the run's name (``swarm.run_id``).
        board: the status board the faces read.
        interval_s: seconds between polls.
    """

    def __init__(
        self, chain: ChainConfig, address: str, run_id: str, board: StatusBoard, interval_s: float = 10.0
    ) -> None:
        self.chain = chain
        self.address = address
        self.run_id = run_id
        self.board = board
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._reader: Attestation | None = None

    def start(self) -> RewardsWatcher:
        # httpx logs every request at INFO: one line per poll would drown the agent's own log
        logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger("httpx").level))
        self.board.update(
            rewards=RewardsView(configured=True, note="waiting for the coordinator's first epoch")
        )
        self._thread = threading.Thread(target=self._loop, name="rewards-watch", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def refresh_soon(self) -> None:
        """Poll now instead of at the next interval (e.g. right after a claim)."""
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.poll_once()
            self._wake.wait(self.interval_s)
            self._wake.clear()

    def poll_once(self) -> RewardsView:
        """Read once and update the board; a failure keeps the last amounts and says why in the note."""
        previous = self.board.snapshot().rewards
        try:
            if self._reader is None:
                from agent.chain.claiming import attestation_reader

                self._reader = attestation_reader(self.chain, rpc_retries=POLL_RPC_RETRIES)
            statuses = reward_statuses(
                self.chain, self.address, self.run_id, reader=self._reader, rpc_retries=POLL_RPC_RETRIES
            )
        except UserFacingError as error:
            view = previous.model_copy(update={"configured": True, "note": str(error)})
        except Exception as error:  # a polling thread must never die: log, show, try again later
            log.debug("rewards poll failed", exc_info=True)
            view = previous.model_copy(update={"configured": True, "note": f"rewards read failed: {error}"})
        else:
            view = rewards_view(statuses, self.chain.network_info.currency)
        self.board.update(rewards=view)
        return view


def rewards_view(statuses: list[RewardStatus], currency: str) -> RewardsView:
    """The board's view of what :func:`reward_statuses` read."""
    if not statuses:
        return RewardsView(
            configured=True, note="no reward yet: waiting for an epoch with this agent's rounds"
        )
    rewards = statuses[0].rewards
    if not rewards.root_on_chain:
        note = f"epoch {rewards.epoch}: root not on chain yet"
    else:
        note = f"earned {format_amount(rewards.earned, currency)} as of epoch {rewards.epoch}"
    return RewardsView(configured=True, pending_wei=rewards.pending, claimed_wei=rewards.claimed, note=note)
