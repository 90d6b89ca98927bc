"""End to end on a real anvil and a real hivemind DHT: ``hypergpu-coordinator run`` as a separate process.

Agents' bindings and a group receipt go into the DHT; the coordinator closes epoch 0 and posts it. It is
killed with SIGKILL while its ``postEpochRoot`` transaction waits in anvil's pool (sent, no receipt),
restarted with the same flags, and the epoch ends up on chain exactly once; an agent then claims with
the proof the coordinator serves. A second epoch measures closed -> root on chain -> claim done.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import httpx
import pytest
from eth_account import Account
from hivemind import DHT

from agent.chain.anvil import AnvilProcess, find_anvil, free_port
from agent.chain.attestation import Attestation, run_id_hash
from agent.chain.client import ChainClient
from agent.chain.deploy import deploy_attestation
from agent.protocol.bindings import NodeBinding, onchain_run_id, sign_node_binding
from agent.protocol.reports import ReportDomain, RoundReport, build_group_receipt, sign_round_report
from agent.swarm.evidence import EvidencePublisher

pytestmark = [pytest.mark.chain, pytest.mark.timeout(300)]

RUN = "e2e-run"
FUNDED_WEI = 10 * 10**18
POOL_WEI = 10**18
PEERS = ["12D3KooWAgentA", "12D3KooWAgentB", "12D3KooWAgentC"]


@pytest.fixture
def anvil() -> Iterator[AnvilProcess]:
    if find_anvil() is None:
        pytest.skip("anvil is not installed: run scripts/setup (npm ci installs @foundry-rs/anvil)")
    with AnvilProcess(accounts=5) as chain:
        yield chain


@pytest.fixture
def dht() -> Iterator[DHT]:
    node = DHT(start=True, host_maddrs=["/ip4/127.0.0.1/tcp/0"])
    yield node
    node.shutdown()


def _rows(db: Path, sql: str) -> list[tuple]:
    try:
        with closing(sqlite3.connect(db)) as conn:
            return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:  # not created yet, or locked for a moment
        return []


def _wait(what: str, condition, timeout: float = 90.0, interval: float = 0.1):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


class Coordinator:
    """``python -m coordinator_lite.main run ...`` with its output in files."""

    def __init__(self, tmp: Path, args: list[str], key: str) -> None:
        self.tmp, self.args, self.key, self.starts = tmp, args, key, 0
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.starts += 1
        env = {**os.environ, "HYPERGPU_COORDINATOR_KEY": self.key}
        log = (self.tmp / f"coordinator-{self.starts}.log").open("w")
        # its own process group: hivemind's DHT child and the p2pd daemon survive a SIGKILL of the main
        # process alone (they do not watch their parent), so a crash is the whole group going down
        self.process = subprocess.Popen(
            [sys.executable, "-m", "coordinator_lite.main", "run", *self.args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def log(self) -> str:
        return "\n".join(p.read_text()[-3000:] for p in sorted(self.tmp.glob("coordinator-*.log")))

    def kill(self, sig: int) -> int:
        """SIGKILL: the whole process group, as a crash would; SIGTERM: the main process, to stop cleanly."""
        assert self.process is not None
        if sig == signal.SIGKILL:
            os.killpg(self.process.pid, signal.SIGKILL)
        else:
            self.process.send_signal(sig)
        code = self.process.wait(timeout=30)
        self.reap()
        return code

    def reap(self) -> None:
        """Make sure nothing of this coordinator outlives the test."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)


def test_epoch_lands_on_chain_exactly_once_across_kill9_and_is_claimable(anvil, dht, tmp_path):
    coordinator_key = anvil.dev_keys[0]
    client = ChainClient(anvil.rpc_url, coordinator_key, expected_chain_id=31337, poll_interval=0.02)
    deployment = deploy_attestation(client)
    attestation = Attestation(client, deployment.address)
    run_key = run_id_hash(RUN)
    assert onchain_run_id(RUN) == run_key  # agents and the chain client name runs the same way
    now = int(time.time())
    attestation.send(
        attestation.create_run_call(
            run_key,
            model_hash=run_id_hash("cnn-small"),
            dataset_id=run_id_hash("mnist"),
            start_time=now,
            end_time=now + 86400,
            pool_wei=FUNDED_WEI,
        )
    )

    # three agents (funded dev accounts, so they can pay for their claims) publish bindings and a receipt
    agents = [Account.from_key(key) for key in anvil.dev_keys[1:4]]
    domain = ReportDomain(chain_id=31337, verifying_contract=deployment.address)
    publisher = EvidencePublisher(dht)
    for peer, agent in zip(PEERS, agents, strict=True):
        binding = NodeBinding(
            run_id=RUN, peer_id=peer, wallet=agent.address, device="cpu", timestamp=now,
            registration_deadline=now + 86400,
        )  # fmt: skip
        assert publisher.publish_binding(sign_node_binding(agent, binding, domain), wait=True)

    def publish_round(group_id: str, compute_ms: list[int]) -> None:
        reports = [
            sign_round_report(
                agent,
                RoundReport(
                    run_id=RUN, round=1, group_id=group_id, members=tuple(PEERS), peer_id=peer, samples=5000,
                    compute_ms=ms, bytes_sent=10**6, bytes_received=10**6, timestamp=int(time.time()),
                ),
                domain,
            )
            for peer, agent, ms in zip(PEERS, agents, compute_ms, strict=True)
        ]  # fmt: skip
        assert publisher.publish_receipt(build_group_receipt(1, reports), PEERS[0], wait=True)

    publish_round("a0", [1000, 2000, 3000])

    api_port = free_port()
    args = [
        "--run-id", RUN, "--initial-peers", str(dht.get_visible_maddrs()[0]), "--network", "local",
        "--rpc-url", anvil.rpc_url, "--contract", deployment.address, "--epoch-length", "4",
        "--pool-wei", str(POOL_WEI), "--state-dir", str(tmp_path / "state"), "--port", str(api_port),
        "--poll", "0.3", "--log-level", "INFO",
    ]  # fmt: skip
    outbox_db = tmp_path / "state" / RUN / "outbox.sqlite"
    coordinator = Coordinator(tmp_path, args, coordinator_key)

    # --- first life: mine its registration and records by hand, kill it while the root waits in the pool
    anvil.rpc("evm_setAutomine", [False])
    coordinator.start()
    try:
        mined: set[str] = set()

        def root_in_pool() -> str | None:
            for key, state, tx_hash in _rows(
                outbox_db, "SELECT key, state, tx_hash FROM outbox ORDER BY seq"
            ):
                if (
                    state != "sent"
                    or tx_hash is None
                    or anvil.rpc("eth_getTransactionByHash", [tx_hash]) is None
                ):
                    continue
                if key.startswith("root:"):
                    return tx_hash
                if tx_hash not in mined:
                    mined.add(tx_hash)
                    anvil.rpc("evm_mine")
            return None

        root_hash = _wait("the epoch root transaction in the pool", root_in_pool)
    finally:
        assert coordinator.kill(signal.SIGKILL) == -signal.SIGKILL, coordinator.log()
    assert attestation.epoch_state(run_key).epoch_count == 0  # the root is not mined yet

    # --- the pool's transaction is mined while no coordinator runs; the restarted one must not resend
    anvil.rpc("evm_setAutomine", [True])
    anvil.rpc("evm_mine")
    coordinator.start()
    api = f"http://127.0.0.1:{api_port}"

    def epoch_status(number: int) -> dict | None:
        try:
            epochs = httpx.get(f"{api}/api/epochs", timeout=2).json()
        except httpx.HTTPError:
            return None
        return next((e for e in epochs if e["epoch"] == number and e["status"] == "posted"), None)

    try:
        first = _wait("epoch 0 posted after the restart", lambda: epoch_status(0))
        assert attestation.epoch_state(run_key).epoch_count == 1
        roots = client.get_logs(attestation.contract.events.EpochRootPosted, from_block=deployment.block)
        records = client.get_logs(
            attestation.contract.events.ContributionRecorded, from_block=deployment.block
        )
        registered = client.get_logs(attestation.contract.events.NodeRegistered, from_block=deployment.block)
        assert [log["args"]["epoch"] for log in roots] == [0], "the epoch root must be on chain exactly once"
        # the very transaction the killed process had signed is the one that landed: nothing was re-signed
        assert bytes(roots[0]["transactionHash"]).hex() == root_hash.removeprefix("0x").lower()
        assert sorted(log["args"]["node"] for log in records) == sorted(a.address for a in agents)
        assert len(registered) == 3
        root_rows = _rows(outbox_db, "SELECT state, attempts FROM outbox WHERE key LIKE 'root:%'")
        assert [row[0] for row in root_rows] == ["confirmed"]
        assert int(first["distributed_wei"]) + int(first["carried_out_wei"]) == POOL_WEI

        # --- epoch 1, undisturbed: closed -> root on chain -> a claim
        publish_round("b1", [3000, 3000, 3000])
        second = _wait("epoch 1 posted", lambda: epoch_status(1), timeout=60)
        agent = agents[2]
        proof = httpx.get(f"{api}/proof/{RUN}/{agent.address}", timeout=5).json()
        assert proof["epoch"] == 1
        amount = int(proof["cumulative_amount"])
        agent_client = ChainClient(anvil.rpc_url, agent, expected_chain_id=31337, poll_interval=0.02)
        agent_attestation = Attestation(agent_client, deployment.address)
        before = agent_client.balance(agent.address)
        result = agent_attestation.send(
            agent_attestation.claim_call(run_key, agent.address, amount, proof["proof"])
        )
        claimed_at = time.time()
        assert agent_client.balance(agent.address) == before + amount - result.fee_wei
        assert agent_attestation.claimed_in(result) == amount
        # the swarm page's on-chain check, served by the real process, finds the chain as it decided
        check = httpx.get(f"{api}/api/chain-check", timeout=30).json()
        assert check["differences"] == 0 and check["onchain_epoch_count"] == 2, check
        assert {r["verdict"] for r in check["records"]} == {"match"} and len(check["records"]) == 6
        assert check["claimed_wei"] == {agent.address: str(amount)}
        print(
            f"\nepoch 1: closed -> root on chain {second['posted_at'] - second['closed_at']:.2f} s, "
            f"closed -> claim done {claimed_at - second['closed_at']:.2f} s; claim gas {result.gas_used}"
        )
        assert coordinator.kill(signal.SIGTERM) == 0, coordinator.log()
    finally:
        if coordinator.process and coordinator.process.poll() is None:
            coordinator.process.kill()
            coordinator.process.wait()
        coordinator.reap()
