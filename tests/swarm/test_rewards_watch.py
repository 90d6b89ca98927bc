"""The agent's rewards panel and claim action when something is missing or down (no anvil needed; the
happy path runs in test_attested_swarm.py against a real chain and coordinator)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from eth_account import Account

from agent.chain.anvil import free_port
from agent.chain.claiming import RewardStatus, RunRewards
from agent.chain.networks import ChainConfig
from agent.chain.proofs import RewardProof
from agent.errors import UserFacingError
from agent.protocol.config import load_run_config
from agent.status import RewardsView, StatusBoard
from agent.swarm.node import AgentNode, NodeOptions
from agent.swarm.rewards_watch import RewardsWatcher, chain_configured, rewards_view

CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
WALLET = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def _down_chain() -> ChainConfig:
    """A chain section whose RPC and coordinator ports have nothing listening."""
    return ChainConfig(
        rpc_url=f"http://127.0.0.1:{free_port()}",
        attestation_address=CONTRACT,
        coordinator_url=f"http://127.0.0.1:{free_port()}",
        rpc_retries=0,
    )


def _node(tmp_path: Path, chain: dict[str, object] | None = None) -> AgentNode:
    config = load_run_config(None, {"swarm": {"run_id": "watch-test"}, "chain": chain or {}}, use_env=False)
    return AgentNode(config, NodeOptions(workdir=tmp_path))


def test_claim_without_wallet_or_chain_says_what_to_set_up(tmp_path: Path) -> None:
    node = _node(tmp_path)
    with pytest.raises(UserFacingError, match="no wallet"):
        node.claim()
    node.account = Account.create()
    with pytest.raises(UserFacingError, match="no chain configured"):
        node.claim()
    assert not chain_configured(node.config.chain)
    assert chain_configured(ChainConfig(attestation_address=CONTRACT))
    assert chain_configured(ChainConfig(deployment_file=tmp_path / "deployment.json"))


def test_claim_with_the_coordinator_down_is_one_clear_line(tmp_path: Path) -> None:
    chain = _down_chain()
    node = _node(tmp_path, chain.model_dump(mode="json"))
    node.account = Account.create()
    with pytest.raises(UserFacingError, match="cannot reach the coordinator"):
        node.claim()


def test_a_failed_poll_keeps_the_last_amounts_and_says_why() -> None:
    board = StatusBoard()
    board.update(rewards=RewardsView(configured=True, pending_wei=5, claimed_wei=7, note="as before"))
    started = time.monotonic()
    view = RewardsWatcher(_down_chain(), WALLET, "watch-test", board).poll_once()
    assert time.monotonic() - started < 5
    assert (view.configured, view.pending_wei, view.claimed_wei) == (True, 5, 7)
    assert "cannot reach" in view.note
    assert board.snapshot().rewards == view


def test_watcher_thread_starts_configured_and_stops_promptly() -> None:
    board = StatusBoard()
    watcher = RewardsWatcher(_down_chain(), WALLET, "watch-test", board, interval_s=30).start()
    assert board.snapshot().rewards.configured
    started = time.monotonic()
    watcher.stop()
    assert time.monotonic() - started < 6  # the 30 s wait is interrupted
    assert watcher._thread is not None and not watcher._thread.is_alive()


def _status(earned: int, claimed: int, on_chain: bool) -> RewardStatus:
    proof = RewardProof(
        run_id="r", account=WALLET, epoch=3, root="0x" + "11" * 32, cumulative_amount=earned, proof=()
    )
    return RewardStatus(proof, RunRewards("r", 3, earned, claimed, on_chain))


def test_rewards_view_shows_what_a_claim_would_pay() -> None:
    assert rewards_view([], "MON").pending_wei == 0
    assert "no reward yet" in rewards_view([], "MON").note
    pending = rewards_view([_status(3 * 10**18, 10**18, True)], "MON")
    assert (pending.pending_wei, pending.claimed_wei) == (2 * 10**18, 10**18)
    assert "earned 3 MON as of epoch 3" in pending.note
    waiting = rewards_view([_status(3 * 10**18, 10**18, False)], "MON")
    assert waiting.pending_wei == 0 and "not on chain yet" in waiting.note
