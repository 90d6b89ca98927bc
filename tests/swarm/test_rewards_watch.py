"""The agent's rewards panel and claim action when something is missing or down (no anvil needed; the
happy path runs in test_attested_swarm.py against a real chain and coordinator)."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from eth_account import Account

from agent.chain.anvil import AnvilProcess, find_anvil, free_port
from agent.chain.attestation import Attestation, run_id_hash
from agent.chain.claiming import RewardStatus, RunRewards
from agent.chain.client import ChainClient
from agent.chain.deploy import deploy_attestation
from agent.chain.merkle import RewardTree
from agent.chain.networks import ChainConfig
from agent.chain.proofs import RewardProof
from agent.errors import UserFacingError
from agent.protocol.config import load_run_config
from agent.status import RewardsView, StatusBoard
from agent.swarm.node import AgentNode, NodeOptions
from agent.swarm.rewards_watch import RewardsWatcher, chain_configured, rewards_view

CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
WALLET = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
ETHER = 10**18


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


@pytest.fixture
def proof_server() -> Iterator[tuple[str, dict[str, bytes]]]:
    """A stand-in for coordinator_lite's proof API: path -> JSON body, 404 otherwise."""
    routes: dict[str, bytes] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = routes.get(self.path)
            self.send_response(200 if body is not None else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body if body is not None else b'{"detail": "not found"}')

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", routes
    server.shutdown()
    server.server_close()


@pytest.mark.chain
def test_node_claim_pays_the_pending_reward_once_and_the_panel_follows(
    tmp_path: Path, proof_server: tuple[str, dict[str, bytes]]
) -> None:
    if find_anvil() is None:
        pytest.skip("anvil is not installed: run scripts/setup")
    url, routes = proof_server
    run_name = "watch-test"
    agent, other = Account.create(), Account.create()
    with AnvilProcess(accounts=1) as anvil:
        owner = ChainClient(anvil.rpc_url, anvil.dev_keys[0], poll_interval=0.02)
        deployment = deploy_attestation(owner)
        contract = Attestation(owner, deployment.address)
        run = run_id_hash(run_name)
        contract.send(
            contract.create_run_call(
                run, model_hash=run, dataset_id=run, start_time=1, end_time=2**40, pool_wei=ETHER
            )
        )
        tree = RewardTree.build({agent.address: 3 * 10**15, other.address: 5 * 10**15})
        contract.send(contract.post_epoch_root_call(run, 0, tree.root, tree.total))
        owner.transact(agent.address, b"", 10**17)  # gas money
        proof = {
            "run_id": run_name, "account": agent.address, "epoch": 0, "root": tree.root,
            "cumulative_amount": str(tree.amount(agent.address)), "proof": tree.proof(agent.address),
        }  # fmt: skip
        routes[f"/proof/{run_name}/{agent.address}"] = json.dumps(proof).encode()
        chain = {"rpc_url": anvil.rpc_url, "attestation_address": deployment.address, "coordinator_url": url}
        node = _node(tmp_path, chain)
        node.account = agent
        board = StatusBoard()
        watcher = RewardsWatcher(node.config.chain, agent.address, run_name, board)
        assert watcher.poll_once().pending_wei == 3 * 10**15

        before = owner.balance(agent.address)
        message = node.claim()
        [tx_hash] = [word for word in message.split() if word.startswith("0x")]
        receipt = owner.w3.eth.get_transaction_receipt(tx_hash)
        fee = receipt["gasUsed"] * receipt["effectiveGasPrice"]
        assert message.startswith("claimed 0.003 ETH")
        assert owner.balance(agent.address) == before + 3 * 10**15 - fee

        nonce = owner.w3.eth.get_transaction_count(agent.address)
        with pytest.raises(UserFacingError, match=r"0\.003 ETH earned, all claimed"):
            node.claim()
        assert owner.w3.eth.get_transaction_count(agent.address) == nonce
        view = watcher.poll_once()
        assert (view.pending_wei, view.claimed_wei) == (0, 3 * 10**15)
        assert board.snapshot().rewards == view
