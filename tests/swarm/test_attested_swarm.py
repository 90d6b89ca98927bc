"""``hypergpu swarm --attest`` for real: anvil, the contract, encrypted keystores, 3 agent processes on
hivemind, ``hypergpu-coordinator run`` posting epochs, and every agent claiming its reward."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from rich.console import Console

from agent.chain.anvil import find_anvil
from agent.chain.attestation import Attestation, run_id_hash
from agent.chain.client import ChainClient
from agent.chain.wallet import read_password, unlock_wallet
from agent.errors import UserFacingError
from agent.protocol.config import load_run_config
from agent.status import StatusBoard
from agent.swarm.attested import AttestationError, AttestedSwarm, AttestOptions, final_epoch_settled
from agent.swarm.node import AgentNode, NodeOptions
from agent.swarm.rewards_watch import RewardsWatcher

MNIST = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mnist"
RUN = "it-attest"
ETHER = 10**18

pytestmark = [
    pytest.mark.swarm,
    pytest.mark.chain,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not MNIST.is_dir(), reason="the shared MNIST folder is missing"),
    pytest.mark.skipif(find_anvil() is None, reason="anvil is not installed: run scripts/setup"),
]


def test_final_epoch_settles_only_after_a_check_past_the_agents_end() -> None:
    posted = {"epoch": 0, "status": "posted", "opened_at": 100.0, "epoch_lengths": 1}
    # the open epoch began at 110 (epoch 0 closed then): a check at 110 happened
    opened = {"epoch": 1, "status": "open", "opened_at": 110.0, "epoch_lengths": 1}
    assert final_epoch_settled([posted, opened], 10.0, agents_end=109.0)
    assert not final_epoch_settled([posted, opened], 10.0, agents_end=111.0)  # no check since 111
    # extended twice (checks at 120 and 130 found nothing new): the check at 130 is past 125
    assert final_epoch_settled([posted, {**opened, "epoch_lengths": 3}], 10.0, agents_end=125.0)
    # a closed epoch whose root is not on chain yet is not settled
    closed = {**opened, "status": "closed"}
    later = {"epoch": 2, "status": "open", "opened_at": 130.0, "epoch_lengths": 1}
    assert not final_epoch_settled([posted, closed, later], 10.0, agents_end=120.0)


def test_the_pool_lasts_the_whole_run_unless_an_epoch_reward_is_given() -> None:
    options = AttestOptions(reward_pool_wei=10 * ETHER, epoch_length_s=10.0)
    assert options.epoch_reward_for(180.0) == 10 * ETHER // 19  # 18 epochs of training + the start
    assert AttestOptions(epoch_reward_wei=ETHER).epoch_reward_for(180.0) == ETHER
    assert AttestOptions.from_mon(0.1, None, 10.0).reward_pool_wei == 10**17  # exact, no float error
    with pytest.raises(AttestationError, match="--epoch-reward must be more than 0"):
        AttestOptions.from_mon(10.0, 0.0, 10.0)
    with pytest.raises(AttestationError, match="--epoch-length must be at least 2 seconds"):
        AttestOptions(epoch_length_s=1.0)


def test_attested_swarm_trains_posts_epochs_and_every_agent_claims_exactly_its_reward(tmp_path: Path) -> None:
    config = load_run_config(
        None,
        {
            # 16 local steps (not the default 32): more averaging rounds before 95 %, so every agent
            # has confirmed rounds to be paid for even when the machine is busy
            "training": {"data_dir": str(MNIST.resolve()), "target_accuracy": 0.95, "local_steps": 16},
            "swarm": {"run_id": RUN, "expected_agents": 3},
        },
        use_env=False,
    )
    options = AttestOptions(reward_pool_wei=10 * ETHER, epoch_length_s=5.0, settle_s=2.0)
    run_dir = tmp_path / "run"
    messages, tables = io.StringIO(), io.StringIO()
    started = time.monotonic()
    with AttestedSwarm(
        config,
        3,
        run_dir,
        max_seconds=90,
        options=options,
        console=Console(file=messages, width=200),
        out=Console(file=tables, width=200),
    ) as attested:
        report = attested.run()
        section = report["attestation"]
        chain = attested.config.chain
        client = ChainClient.from_config(chain)
        contract = Attestation(client, section["contract"])
        run_key = run_id_hash(RUN)

        # rounds were confirmed by the coordinator, for every agent
        agents = section["agents"]
        assert len(agents) == 3
        assert all(agent["rounds_accepted"] >= 1 for agent in agents), agents
        # epoch roots landed on chain: the chain's count and latest root are the coordinator's
        posted = [epoch for epoch in section["epochs"] if epoch["status"] == "posted"]
        assert posted and section["last_epoch_settled"]
        state = contract.epoch_state(run_key)
        assert state.epoch_count == len(posted)
        assert "0x" + state.rewards_root.hex() == posted[-1]["root"]
        assert state.total_allocated == int(posted[-1]["total_allocated_wei"])
        assert sum(int(agent["reward_wei"]) for agent in agents) == state.total_allocated

        # every agent claimed exactly its reward; its balance moved by reward - fee of its claim tx
        for agent in agents:
            reward = int(agent["reward_wei"])
            assert reward > 0
            assert int(agent["claimed_wei"]) == reward
            assert contract.claimed_amount(run_key, agent["wallet"]) == reward
            [tx_hash] = agent["claim_txs"]
            receipt = client.w3.eth.get_transaction_receipt(tx_hash)
            fee = receipt["gasUsed"] * receipt["effectiveGasPrice"]
            assert receipt["gasUsed"] == agent["claim_gas"] and 0 < receipt["gasUsed"] <= 90_000
            assert client.balance(agent["wallet"]) == int(agent["balance_before_wei"]) + reward - fee

        # a second claim (through the agent's own claim action) sends no transaction
        password = read_password(attested.password_file, interactive=False)
        first = attested.wallets[0]
        node = AgentNode(attested.config, NodeOptions(workdir=tmp_path / "node"))
        node.account = unlock_wallet(first.keystore, password)
        nonce = client.w3.eth.get_transaction_count(first.address)
        balance = client.balance(first.address)
        with pytest.raises(UserFacingError, match="all claimed"):
            node.claim()
        assert client.w3.eth.get_transaction_count(first.address) == nonce
        assert client.balance(first.address) == balance
        # the rewards panel's poller sees the same: nothing pending, everything claimed
        view = RewardsWatcher(chain, first.address, RUN, StatusBoard()).poll_once()
        assert view.configured and view.pending_wei == 0
        assert view.claimed_wei == int(agents[0]["reward_wei"])

        coordinator_pid = attested.attested.coordinator.process.pid
        anvil_url = attested.anvil.rpc_url
    elapsed = time.monotonic() - started

    # everything is down: the coordinator's process group, anvil, the agents
    assert not psutil.pid_exists(coordinator_pid) or psutil.Process(coordinator_pid).status() == "zombie"
    assert not attested.anvil.running
    with pytest.raises(Exception):  # noqa: B017 - any connection error: nothing listens any more
        ChainClient(anvil_url, rpc_retries=0).block_number()
    assert set(report["exit_codes"].values()) == {0}

    # the keys stay secret: keystores and the password file are 0600, the password appears nowhere
    for path in [attested.password_file, *(w.keystore for w in attested.wallets)]:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    written = json.dumps(report) + messages.getvalue() + tables.getvalue()
    written += "".join(p.read_text(errors="replace") for p in run_dir.rglob("*.log"))
    assert password not in written
    assert json.loads((run_dir / "report.json").read_text())["attestation"]["contract"] == section["contract"]
    assert "closed -> root on chain" in messages.getvalue()
    timing = next(line for line in messages.getvalue().splitlines() if "closed -> root on chain" in line)
    print(f"\nattested 3-agent run: {elapsed:.1f} s; {timing}")


def test_ctrl_c_stops_anvil_the_coordinator_and_every_agent(tmp_path: Path) -> None:
    """``hypergpu swarm --attest`` interrupted while agents train: exit 130, no process of the run left."""
    run_dir = tmp_path / "run"
    command = [sys.executable, "-m", "agent.cli.main", "swarm", "--agents", "2", "--attest"]
    command += ["--data-dir", str(MNIST.resolve()), "--target-accuracy", "0.995", "--epoch-length", "5"]
    command += ["--max-seconds", "120", "--run-dir", str(run_dir)]
    main = subprocess.Popen(
        command,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        # a shell's Ctrl+C: SIGINT at its default disposition (a test runner may have it ignored)
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )

    def run_processes() -> list[psutil.Process]:
        found = []
        for process in psutil.process_iter(["cmdline"]):
            with contextlib.suppress(psutil.Error):
                if process.pid != main.pid and str(run_dir) in " ".join(process.info["cmdline"] or []):
                    found.append(process)
        return found

    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and main.poll() is None:
            names = " ".join(" ".join(p.info["cmdline"] or []) for p in run_processes())
            statuses = list((run_dir / "agents").glob("*/status.json"))
            if "coordinator_lite" in names and "anvil" in names and len(statuses) == 2:
                break
            time.sleep(0.5)
        assert main.poll() is None, main.stderr.read().decode() if main.stderr else ""
        assert len(run_processes()) >= 5  # anvil, coordinator, bootstrap, 2 agents (and their helpers)
        main.send_signal(signal.SIGINT)
        assert main.wait(timeout=60) == 130
        assert "stopped." in (main.stderr.read().decode() if main.stderr else "")
        time.sleep(0.5)
        assert [p.info["cmdline"] for p in run_processes()] == []
    finally:
        if main.poll() is None:
            main.kill()
        for process in run_processes():
            with contextlib.suppress(psutil.Error):
                process.kill()
