"""A local swarm that trains AND attests: ``hypergpu swarm --agents 8 --attest``.

Everything real, on this machine: an anvil chain, the deployed HyperGPUAttestation contract, a run created
and funded on chain, one encrypted keystore per agent (its password in a 0600 file of the run folder),
agent processes that sign their rounds into the DHT, ``hypergpu-coordinator run`` as a subprocess that
verifies them, closes epochs and posts records and roots, and at the end one claim per agent through
:mod:`agent.chain.claiming` (the code behind ``hypergpu claim``). The sequence:

    anvil -> deploy -> createRun(pool) -> keystores -> gas money -> config.toml [chain]
      -> bootstrap + agents (LocalSwarm) -> coordinator (joins through the bootstrap peer)
      -> agents reach the target and exit -> the coordinator's next epoch check passes their end
      -> every closed epoch's root is on chain -> each agent claims -> table + report.json "attestation"

Anvil, the coordinator and the agents are stopped on every way out (normal end, error, Ctrl+C, SIGTERM).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
from rich.console import Console
from rich.table import Table

from agent.chain.anvil import AnvilProcess, free_port
from agent.chain.claiming import ClaimReceipt, claim_pending, format_amount
from agent.chain.networks import ChainConfig, NetworkName
from agent.errors import UserFacingError
from agent.protocol.config import RunConfig

if TYPE_CHECKING:
    from agent.chain.client import ChainClient
    from agent.swarm.launcher import LocalSwarm

log = logging.getLogger("hypergpu.attested")

WEI_PER_MON = 10**18
DEMO_SCRYPT_N = 2**14
"""scrypt cost of the demo's agent keystores. Lower than the interactive default (2**18, ~1 s and 256 MiB
per unlock) because up to 64 agents unlock at once on one small machine; the keys only ever hold test
money on a local chain. Real wallets come from ``hypergpu wallet new``."""


class AttestationError(UserFacingError):
    """The attested run could not be set up or finished (coordinator down, chain refused a write)."""

    exit_code = 3


@dataclass(frozen=True)
class AttestOptions:
    """How the attested run is set up.

    Args:
        reward_pool_wei: funded into the run's pool on chain when the run is created, wei.
        epoch_reward_wei: what the coordinator pays out per epoch (capped by what is left in the pool), wei;
            None spreads the pool evenly over the run's ``max_seconds`` (see :meth:`epoch_reward_for`).
        epoch_length_s: seconds per coordinator epoch (short, so that a demo sees several).
        agent_gas_wei: sent to every agent wallet so it can pay for its claim, wei.
        scrypt_n: scrypt cost of the agents' keystores (see :data:`DEMO_SCRYPT_N`).
        settle_s: after the last agent stops, its final reports get this long to reach the DHT, seconds.
        final_epoch_timeout_s: most seconds to wait for the coordinator to post the last epoch.
        coordinator_start_timeout_s: most seconds for the coordinator's API to come up.
    """

    reward_pool_wei: int = 10 * WEI_PER_MON
    epoch_reward_wei: int | None = None
    epoch_length_s: float = 10.0
    agent_gas_wei: int = WEI_PER_MON // 10
    scrypt_n: int = DEMO_SCRYPT_N
    settle_s: float = 3.0
    final_epoch_timeout_s: float = 120.0
    coordinator_start_timeout_s: float = 90.0

    def __post_init__(self) -> None:
        if self.reward_pool_wei <= 0 or (self.epoch_reward_wei is not None and self.epoch_reward_wei <= 0):
            raise AttestationError("--reward-pool and --epoch-reward must be more than 0 MON")
        if self.epoch_length_s < 2:
            raise AttestationError(f"--epoch-length must be at least 2 seconds, got {self.epoch_length_s:g}")

    @classmethod
    def from_mon(cls, reward_pool: float, epoch_reward: float | None, epoch_length_s: float) -> AttestOptions:
        """Options from the CLI's amounts in MON (exact to the wei for decimal input such as 0.1)."""
        return cls(
            reward_pool_wei=_mon_to_wei(reward_pool, "--reward-pool"),
            epoch_reward_wei=None if epoch_reward is None else _mon_to_wei(epoch_reward, "--epoch-reward"),
            epoch_length_s=epoch_length_s,
        )

    def epoch_reward_for(self, max_seconds: float) -> int:
        """Wei per epoch: the given amount, else the pool split over every epoch ``max_seconds`` can hold
        (plus one for the start), so that the pool lasts however long the run trains."""
        if self.epoch_reward_wei is not None:
            return self.epoch_reward_wei
        epochs = math.ceil(max_seconds / self.epoch_length_s) + 1
        return self.reward_pool_wei // epochs


def _mon_to_wei(amount: float, flag: str) -> int:
    wei = int(Decimal(str(amount)) * WEI_PER_MON)
    if wei <= 0:
        raise AttestationError(f"{flag} must be more than 0 MON, got {amount:g}")
    return wei


# ---- wallets -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentWallet:
    """Agent ``index``'s keystore and address. The password is in the run's password file only."""

    index: int
    address: str
    keystore: Path


def create_agent_wallets(
    folder: Path, count: int, scrypt_n: int = DEMO_SCRYPT_N
) -> tuple[list[AgentWallet], Path]:
    """One new encrypted keystore per agent in ``folder`` (0700), and the password file (0600) they share.

    The password is random and written only to the file; it is never printed or logged.
    """
    from agent.chain.wallet import create_wallet

    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    password_file = folder / "password"
    descriptor = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    password = secrets.token_urlsafe(24)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(password + "\n")
    os.chmod(password_file, 0o600)
    wallets = []
    for index in range(count):
        keystore = folder / f"agent-{index}.json"
        address = create_wallet(keystore, password, scrypt_n=scrypt_n)
        wallets.append(AgentWallet(index, address, keystore))
    return wallets, password_file


# ---- the chain ---------------------------------------------------------------------------------------


@dataclass
class ChainSetup:
    """What was put on chain before training: contract, run, gas money. Gas in gas units."""

    rpc_url: str
    chain_id: int
    contract: str
    deployment_file: Path
    deploy_tx: str
    deploy_gas: int
    create_run_tx: str
    create_run_gas: int
    funding: list[dict[str, Any]] = field(default_factory=list)


def prepare_chain(
    client: ChainClient, config: RunConfig, run_dir: Path, wallets: list[AgentWallet], options: AttestOptions
) -> ChainSetup:
    """Deploy the contract (the client's account is admin and coordinator), create and fund the run,
    and send every agent wallet ``options.agent_gas_wei``."""
    from agent.chain.attestation import Attestation, run_id_hash
    from agent.chain.deploy import deploy_attestation

    deployment = deploy_attestation(client)
    deployment_file = run_dir / "chain" / "deployment.json"
    deployment.save(deployment_file)
    attestation = Attestation(client, deployment.address)
    now = int(time.time())
    created = attestation.send(
        attestation.create_run_call(
            run_id_hash(config.swarm.run_id),
            model_hash=run_id_hash(config.training.model),
            dataset_id=run_id_hash(config.training.dataset),
            start_time=now,
            end_time=now + 30 * 86400,
            pool_wei=options.reward_pool_wei,
        )
    )
    setup = ChainSetup(
        rpc_url=client.rpc_url,
        chain_id=client.chain_id,
        contract=deployment.address,
        deployment_file=deployment_file,
        deploy_tx=deployment.tx_hash,
        deploy_gas=deployment.gas_used,
        create_run_tx=created.tx_hash,
        create_run_gas=created.gas_used,
    )
    for wallet in wallets:
        sent = client.transact(wallet.address, b"", options.agent_gas_wei, action="gas money")
        setup.funding.append(
            {
                "wallet": wallet.address,
                "wei": str(options.agent_gas_wei),
                "tx": sent.tx_hash,
                "gas": sent.gas_used,
            }
        )
    return setup


def attested_config(config: RunConfig, setup: ChainSetup, coordinator_url: str) -> RunConfig:
    """``config`` with the ``[chain]`` section the agents sign under and claim through."""
    chain = ChainConfig(
        network=NetworkName.LOCAL,
        rpc_url=setup.rpc_url,
        attestation_address=setup.contract,
        deployment_file=setup.deployment_file.resolve(),
        coordinator_url=coordinator_url,
    )
    return config.model_copy(update={"chain": chain})


# ---- the coordinator ---------------------------------------------------------------------------------


class CoordinatorProcess:
    """``hypergpu-coordinator run`` in its own process group, output in ``log_path``.

    Args:
        args: the ``run`` command's flags.
        key: the coordinator's private key (hex), passed in the environment, never on the command line.
        api_url: where its API answers (``/healthz``, ``/api/epochs``, ``/proof``).
    """

    def __init__(self, args: list[str], key: str, api_url: str, log_path: Path) -> None:
        self.args = args
        self.key = key
        self.api_url = api_url
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float) -> None:
        """Start it and wait until its API answers; raises :class:`AttestationError` if it exits first."""
        env = {**os.environ, "HYPERGPU_COORDINATOR_KEY": self.key, "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "ab") as log_file:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "coordinator_lite.main", "run", *self.args],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,  # its DHT child and p2pd go down with the group
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AttestationError(
                    f"the coordinator exited at start; see {self.log_path}: {self.last_line()}"
                )
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.api_url + "/healthz", timeout=2).status_code == 200:
                    return
            time.sleep(0.3)
        raise AttestationError(
            f"the coordinator's API did not answer within {timeout_s:g} s; see {self.log_path}"
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def last_line(self) -> str:
        try:
            lines = [line for line in self.log_path.read_text(errors="replace").splitlines() if line.strip()]
        except OSError:
            return ""
        return lines[-1] if lines else ""

    def get(self, path: str) -> Any:
        response = httpx.get(self.api_url + path, timeout=5)
        response.raise_for_status()
        return response.json()

    def stop(self, grace_s: float = 15.0) -> None:
        """SIGTERM (it finishes its loop, closes the outbox and the DHT), then SIGKILL the whole group."""
        process, self.process = self.process, None
        if process is None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                log.warning("the coordinator did not stop within %.0f s; killing it", grace_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)


def final_epoch_settled(epochs: list[dict[str, Any]], epoch_length_s: float, agents_end: float) -> bool:
    """Whether the coordinator has checked its epoch clock after ``agents_end`` and posted what it closed.

    After a check at time t the open epoch either starts at t (the previous one closed then) or was
    extended to cover one more epoch length (nothing new to count): in both cases its start plus all
    but its last epoch length is >= t. Every closed epoch must also be posted (root on chain).
    """
    if any(epoch["status"] == "closed" for epoch in epochs):
        return False
    open_epochs = [epoch for epoch in epochs if epoch["status"] == "open"]
    if not open_epochs:
        return False
    current = open_epochs[-1]
    last_check = current["opened_at"] + (current["epoch_lengths"] - 1) * epoch_length_s
    return last_check >= agents_end


class AttestedRun:
    """The hooks :func:`agent.cli.swarm_cmd.run_local_swarm` calls: start the coordinator once the
    bootstrap peer is up; after the agents are done, wait until the last epoch is on chain."""

    def __init__(
        self,
        config: RunConfig,
        run_dir: Path,
        options: AttestOptions,
        coordinator_key: str,
        console: Console,
        wallets: list[AgentWallet],
        password_file: Path,
        coordinator_port: int,
        epoch_reward_wei: int,
    ) -> None:
        self.config = config
        self.epoch_reward_wei = epoch_reward_wei
        self.wallets = wallets
        self.password_file = password_file
        self.claims: list[AgentClaim] = []
        self.claims_started_at: float | None = None
        self.claims_done_at: float | None = None
        self.options = options
        self.console = console
        self.port = coordinator_port
        self.coordinator = CoordinatorProcess(
            [], coordinator_key, f"http://127.0.0.1:{coordinator_port}", run_dir / "coordinator.log"
        )
        self.run_dir = run_dir
        self.agents_end: float | None = None
        self.settled = False

    @property
    def api_url(self) -> str:
        return self.coordinator.api_url

    def started(self, swarm: LocalSwarm) -> None:
        """Start the coordinator once every agent trains. Earlier, its first epoch would find no rounds,
        stretch over the agents' start-up, and pay one epoch's reward per stretched length to the
        first round's group (the coordinator grows an empty epoch's pool)."""
        opts = self.options
        with self.console.status(f"starting {len(swarm.agents)} agents (DHT, bootstrap, data)..."):
            deadline = time.monotonic() + swarm.plan.config.swarm.bootstrap_timeout + 60
            while time.monotonic() < deadline and swarm.alive():
                swarm.read_statuses()
                if all(a.last_status.get("clock", {}).get("train_start") for a in swarm.alive()):
                    break
                time.sleep(0.3)
        self.coordinator.args = [
            "--config", str(swarm.run_dir / "config.toml"),
            "--run-id", self.config.swarm.run_id,
            "--initial-peers", swarm.bootstrap_addresses[0],
            "--epoch-length", f"{opts.epoch_length_s:g}",
            "--pool-wei", str(self.epoch_reward_wei),
            "--state-dir", str(self.run_dir / "coordinator"),
            "--port", str(self.port),
            "--poll", "0.5",
        ]  # fmt: skip
        with self.console.status("starting the coordinator (DHT, chain, API)..."):
            self.coordinator.start(opts.coordinator_start_timeout_s)
        currency = self.config.chain.network_info.currency
        self.console.print(
            f"coordinator: {self.api_url} (epochs of {opts.epoch_length_s:g} s, "
            f"{format_amount(self.epoch_reward_wei, currency)} each)"
        )

    def agents_done(self, swarm: LocalSwarm) -> None:
        """Wait for the last epoch to be on chain, then claim for every agent (here, before the slow
        checkpoint evaluation of the report, so the claims follow the root as closely as they can)."""
        # An agent's last signed report comes after train_end: the final averaging round runs once the
        # loop has stopped. Its final status is written after that round, so count from there.
        ends = [
            a.last_status.get("written_at")
            if a.last_status.get("final")
            else a.last_status.get("clock", {}).get("train_end")
            for a in swarm.agents
        ]
        self.agents_end = max([e for e in ends if e] or [time.time()]) + self.options.settle_s
        with self.console.status(
            "agents done; waiting for the coordinator to close and post the last epoch..."
        ):
            self.settled = self.wait_for_last_epoch()
        if not self.settled:
            self.console.print(
                "[yellow]the coordinator did not post the last epoch within "
                f"{self.options.final_epoch_timeout_s:g} s; claiming what is on chain[/yellow]"
            )
        self.claims_started_at = time.time()
        with self.console.status("claiming every agent's reward..."):
            self.claims = claim_for_agents(
                self.config.chain, self.config.swarm.run_id, self.wallets, self.password_file
            )
            self.claims_done_at = time.time()

    def wait_for_last_epoch(self) -> bool:
        """True once :func:`final_epoch_settled`; False after ``final_epoch_timeout_s``."""
        assert self.agents_end is not None
        deadline = time.monotonic() + self.options.final_epoch_timeout_s
        while time.monotonic() < deadline:
            if not self.coordinator.alive():
                where = self.coordinator.log_path
                raise AttestationError(
                    f"the coordinator stopped; see {where}: {self.coordinator.last_line()}"
                )
            with contextlib.suppress(httpx.HTTPError, ValueError):
                epochs = self.coordinator.get("/api/epochs")
                if final_epoch_settled(epochs, self.options.epoch_length_s, self.agents_end):
                    return True
            time.sleep(0.1)
        return False


EPOCH_FIELDS = (
    "epoch", "status", "opened_at", "closed_at", "posted_at", "epoch_lengths", "pool_wei", "distributed_wei",
    "carried_out_wei", "total_allocated_wei", "root",
)  # fmt: skip
"""The coordinator's epoch fields copied into report.json."""


# ---- claims and the report ---------------------------------------------------------------------------


@dataclass(frozen=True)
class AgentClaim:
    """One agent's claim at the end of the run; amounts in wei. ``balance_ok``: the balance changed by
    exactly the claimed amount minus the claim's fee. ``seconds``: proof fetch + claim tx + receipt."""

    index: int
    wallet: str
    receipts: tuple[ClaimReceipt, ...]
    note: str
    balance_before: int
    balance_after: int
    seconds: float

    @property
    def claimed_wei(self) -> int:
        return sum(r.amount_wei for r in self.receipts)

    @property
    def fee_wei(self) -> int:
        return sum(r.fee_wei for r in self.receipts)

    @property
    def balance_ok(self) -> bool:
        return self.balance_after - self.balance_before == self.claimed_wei - self.fee_wei


def claim_for_agents(
    chain: ChainConfig, run_id: str, wallets: list[AgentWallet], password_file: Path
) -> list[AgentClaim]:
    """Unlock each agent's keystore and claim what is pending, as ``hypergpu claim`` does."""
    from agent.chain.claiming import connect, nothing_to_claim_reason
    from agent.chain.wallet import read_password, unlock_wallet

    password = read_password(password_file, interactive=False)
    reader = connect(chain)
    claims = []
    for wallet in wallets:
        account = unlock_wallet(wallet.keystore, password)
        before = reader.balance(wallet.address)
        started = time.perf_counter()
        statuses, receipts = claim_pending(chain, account, run_id)
        seconds = time.perf_counter() - started
        after = reader.balance(wallet.address)
        note = (
            ""
            if receipts
            else nothing_to_claim_reason(statuses, wallet.address, run_id, chain.network_info.currency)
        )
        claims.append(AgentClaim(wallet.index, wallet.address, tuple(receipts), note, before, after, seconds))
    return claims


def _per_wallet_records(
    coordinator: CoordinatorProcess, epochs: list[dict[str, Any]]
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """Per wallet: rounds accepted, score and reward over all closed epochs; and each epoch with its txs."""
    totals: dict[str, dict[str, Any]] = {}
    detailed = []
    for epoch in epochs:
        if epoch["status"] == "open":
            continue
        detail = coordinator.get(f"/api/epochs/{epoch['epoch']}")
        detailed.append(detail)
        for record in detail["records"]:
            row = totals.setdefault(
                record["wallet"], {"rounds_accepted": 0, "score": 0.0, "reward_wei": 0, "peers": set()}
            )
            row["rounds_accepted"] += int(record["rounds_accepted"])
            row["score"] += float(record["score"])
            row["reward_wei"] += int(record["reward_wei"])
            row["peers"].add(record["peer_id"])
    return totals, detailed


def attestation_section(setup: ChainSetup, options: AttestOptions, run: AttestedRun) -> dict[str, Any]:
    """The ``attestation`` section of report.json (wei as decimal strings, times in Unix seconds)."""
    epochs = run.coordinator.get("/api/epochs")
    totals, detailed = _per_wallet_records(run.coordinator, epochs)
    by_index = {claim.index: claim for claim in run.claims}
    claims_done_at = run.claims_done_at or time.time()
    agents = []
    for wallet in run.wallets:
        record = totals.get(
            wallet.address, {"rounds_accepted": 0, "score": 0.0, "reward_wei": 0, "peers": set()}
        )
        claim = by_index.get(wallet.index)
        agents.append(
            {
                "index": wallet.index,
                "wallet": wallet.address,
                "peer_ids": sorted(record["peers"]),
                "rounds_accepted": record["rounds_accepted"],
                "score": record["score"],
                "reward_wei": str(record["reward_wei"]),
                "claimed_wei": str(claim.claimed_wei if claim else 0),
                "claim_txs": [r.tx_hash for r in claim.receipts] if claim else [],
                "explorer_links": [r.explorer_link for r in claim.receipts if r.explorer_link]
                if claim
                else [],
                "claim_gas": sum(r.gas_used for r in claim.receipts) if claim else 0,
                "claim_fee_wei": str(claim.fee_wei if claim else 0),
                "claim_seconds": claim.seconds if claim else None,
                "balance_before_wei": str(claim.balance_before if claim else 0),
                "balance_after_wei": str(claim.balance_after if claim else 0),
                "balance_change_is_reward_minus_fee": claim.balance_ok if claim else None,
                "note": claim.note if claim else "not claimed",
            }
        )
    epoch_rows = []
    coordinator_gas = 0
    for detail in detailed:
        txs = [
            {
                "purpose": tx["purpose"],
                "state": tx["state"],
                "tx_hash": tx["tx_hash"],
                "gas_used": tx["gas_used"],
            }
            for tx in detail["txs"]
        ]
        coordinator_gas += sum(int(tx["gas_used"] or 0) for tx in txs)
        epoch_rows.append(
            {key: detail[key] for key in EPOCH_FIELDS} | {"agents": len(detail["records"]), "txs": txs}
        )
    posted = [e for e in epoch_rows if e["status"] == "posted"]
    last = posted[-1] if posted else None
    claim_gas = [a["claim_gas"] for a in agents if a["claim_gas"]]
    timing = None
    if last is not None:
        claims_started_at = run.claims_started_at or claims_done_at
        timing = {
            "epoch": last["epoch"],
            "closed_at": last["closed_at"],
            "root_on_chain_at": last["posted_at"],
            "claims_started_at": claims_started_at,
            "claims_done_at": claims_done_at,
            "closed_to_root_on_chain_s": last["posted_at"] - last["closed_at"],
            "root_on_chain_to_claims_done_s": claims_done_at - last["posted_at"],
            "closed_to_claims_done_s": claims_done_at - last["closed_at"],
            "claims_s": claims_done_at - claims_started_at,
            "claim_s_max": max((a["claim_seconds"] or 0.0 for a in agents), default=0.0),
            "note": "claims start once every agent has stopped and the coordinator has checked its epoch "
            "clock after that, so root -> claims done includes that wait; claims_s is the claims alone "
            "(one agent after another: unlock, proof fetch, claim tx, receipt)",
        }
    return {
        "network": NetworkName.LOCAL.value,
        "chain_id": setup.chain_id,
        "rpc_url": setup.rpc_url,
        "contract": setup.contract,
        "coordinator_api": run.api_url,
        "reward_pool_wei": str(options.reward_pool_wei),
        "epoch_reward_wei": str(run.epoch_reward_wei),
        "epoch_length_s": options.epoch_length_s,
        "last_epoch_settled": run.settled,
        "setup_txs": {
            "deploy": {"tx_hash": setup.deploy_tx, "gas_used": setup.deploy_gas},
            "create_run": {"tx_hash": setup.create_run_tx, "gas_used": setup.create_run_gas},
            "agent_gas_money": setup.funding,
        },
        "epochs": epoch_rows,
        "agents": agents,
        "gas": {
            "deploy": setup.deploy_gas,
            "create_run": setup.create_run_gas,
            "coordinator_total": coordinator_gas,
            "claims_total": sum(claim_gas),
            "claim_max": max(claim_gas, default=0),
            "rule": "Ethereum rules (anvil 1.7): gas used; Monad bills the gas limit (estimate + 10 %)",
        },
        "timing": timing,
        "rewards_total_wei": str(sum(int(a["reward_wei"]) for a in agents)),
        "claimed_total_wei": str(sum(int(a["claimed_wei"]) for a in agents)),
    }


def attestation_table(section: dict[str, Any], currency: str) -> Table:
    """Per agent: wallet, rounds accepted, score, reward, claimed, claim tx (its explorer link if any)."""
    table = Table(title=f"attestation on chain {section['chain_id']} ({section['contract']})")
    for column in (
        "agent",
        "wallet",
        "rounds",
        "score",
        f"reward {currency}",
        f"claimed {currency}",
        "claim tx",
    ):
        table.add_column(column, justify="left" if column in ("agent", "wallet", "claim tx") else "right")
    for agent in section["agents"]:
        tx = (agent["explorer_links"] or agent["claim_txs"] or [agent["note"] or "-"])[0]
        table.add_row(
            str(agent["index"]),
            agent["wallet"],
            str(agent["rounds_accepted"]),
            f"{agent['score']:.3f}",
            short_amount(int(agent["reward_wei"])),
            short_amount(int(agent["claimed_wei"])),
            tx,
        )
    return table


def short_amount(wei: int) -> str:
    """``wei`` in whole units to 6 decimals, for tables (report.json keeps the exact wei)."""
    return f"{Decimal(wei) / WEI_PER_MON:.6f}"


def timing_line(section: dict[str, Any]) -> str:
    timing = section["timing"]
    epochs = len(section["epochs"])
    if timing is None:
        return f"{epochs} epochs closed; none is on chain, so nothing could be claimed"
    claims = len([a for a in section["agents"] if a["claim_txs"]])
    return (
        f"{epochs} epochs on chain; last epoch {timing['epoch']}: closed -> root on chain "
        f"{timing['closed_to_root_on_chain_s']:.2f} s -> {claims} claims done "
        f"{timing['root_on_chain_to_claims_done_s']:.2f} s later (the {claims} claims themselves "
        f"{timing['claims_s']:.2f} s, the slowest {timing['claim_s_max']:.2f} s); gas: coordinator "
        f"{section['gas']['coordinator_total']:,} in all, one claim {section['gas']['claim_max']:,}"
    )


# ---- the whole run -----------------------------------------------------------------------------------


def _raise_interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


class AttestedSwarm:
    """The whole attested run as a context manager: entering starts anvil, deploys, creates and funds the
    run and the wallets; :meth:`run` trains, settles and claims; leaving stops the coordinator and anvil
    (the agents and the bootstrap peer are stopped by :meth:`run` itself, on every way out).

    Args:
        config: the run configuration (its ``[chain]`` section is replaced by the local chain's).
        agents: number of agent processes.
        run_dir: the run folder (wallets/, chain/, coordinator/, agents/, report.json).
        max_seconds: stop training after this long.
        options: pool, epoch length, gas money, keystore cost.
        console: progress and messages (stderr by default); ``out``: the result tables (stdout).
        web_port_base, plan_extras: as for :func:`agent.cli.swarm_cmd.run_local_swarm`.
    """

    def __init__(
        self,
        config: RunConfig,
        agents: int,
        run_dir: Path,
        max_seconds: float,
        options: AttestOptions,
        console: Console | None = None,
        out: Console | None = None,
        web_port_base: int | None = None,
        plan_extras: dict[str, Any] | None = None,
    ) -> None:
        self.base_config = config
        self.agents = agents
        self.run_dir = run_dir
        self.max_seconds = max_seconds
        self.options = options
        self.console = console or Console(stderr=True)
        self.out = out or Console()
        self.web_port_base = web_port_base
        self.plan_extras = dict(plan_extras or {})
        self._stack = contextlib.ExitStack()
        self.anvil: AnvilProcess | None = None
        self.setup: ChainSetup | None = None
        self.wallets: list[AgentWallet] = []
        self.password_file: Path | None = None
        self.config: RunConfig = config
        self.attested: AttestedRun | None = None

    def __enter__(self) -> AttestedSwarm:
        try:
            previous = signal.signal(signal.SIGTERM, _raise_interrupt)  # SIGTERM unwinds like Ctrl+C
            self._stack.callback(signal.signal, signal.SIGTERM, previous)
        except ValueError:  # not the main thread: the caller handles signals
            pass
        try:
            self._start_chain()
        except BaseException:
            self._stack.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def _start_chain(self) -> None:
        from agent.chain.client import ChainClient

        options, run_dir = self.options, self.run_dir
        run_dir.mkdir(parents=True, exist_ok=True)
        with self.console.status("starting anvil, deploying the contract, creating wallets..."):
            self.anvil = self._stack.enter_context(
                AnvilProcess(accounts=2, state_path=run_dir / "chain" / "anvil-state.json")
            )
            deployer_key = self.anvil.dev_keys[0]  # anvil's well-known test key: worthless off this chain
            client = ChainClient(
                self.anvil.rpc_url, deployer_key, expected_chain_id=self.anvil.chain_id, poll_interval=0.02
            )
            self.wallets, self.password_file = create_agent_wallets(
                run_dir / "wallets", self.agents, options.scrypt_n
            )
            self.setup = prepare_chain(client, self.base_config, run_dir, self.wallets, options)
        coordinator_port = free_port()
        self.config = attested_config(self.base_config, self.setup, f"http://127.0.0.1:{coordinator_port}")
        self.attested = AttestedRun(
            self.config,
            run_dir,
            options,
            deployer_key,
            self.console,
            self.wallets,
            self.password_file,
            coordinator_port,
            options.epoch_reward_for(self.max_seconds),
        )
        self._stack.callback(self.attested.coordinator.stop)
        currency = self.config.chain.network_info.currency
        self.console.print(
            f"chain: anvil {self.anvil.rpc_url}, contract {self.setup.contract}, run "
            f"{self.config.swarm.run_id!r} funded with {format_amount(options.reward_pool_wei, currency)}; "
            f"wallets in {run_dir / 'wallets'}"
        )

    def run(self) -> dict[str, Any]:
        """Train, let the coordinator post the last epoch, claim for every agent; return the report
        (also written to ``run_dir/report.json``, with its ``attestation`` section)."""
        from agent.cli.swarm_cmd import run_local_swarm, summary_table

        assert self.setup is not None and self.attested is not None and self.password_file is not None
        extras = dict(self.plan_extras)
        agent_args = {i: list(a) for i, a in extras.pop("agent_args", {}).items()}
        for wallet in self.wallets:
            agent_args.setdefault(wallet.index, []).extend(
                ["--keystore", str(wallet.keystore), "--password-file", str(self.password_file)]
            )
        extras["agent_args"] = agent_args
        report = run_local_swarm(
            self.config,
            self.agents,
            run_dir=self.run_dir,
            max_seconds=self.max_seconds,
            web_port_base=self.web_port_base,
            console=self.console,
            label="swarm --attest",
            plan_extras=extras,
            hooks=self.attested,
        )
        self.out.print(summary_table(report))
        section = attestation_section(self.setup, self.options, self.attested)
        report["attestation"] = section
        (self.run_dir / "report.json").write_text(json.dumps(report, indent=2, default=_json_default))
        self.out.print(attestation_table(section, self.config.chain.network_info.currency))
        self.console.print(timing_line(section))
        self.console.print(f"wrote {self.run_dir / 'report.json'} and {self.run_dir / 'progress.png'}")
        return report


def run_attested_swarm(
    config: RunConfig,
    agents: int,
    run_dir: Path,
    max_seconds: float,
    options: AttestOptions,
    console: Console | None = None,
    web_port_base: int | None = None,
    plan_extras: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Run the whole attested demo (see the module docstring); return the report, also in report.json."""
    with AttestedSwarm(
        config,
        agents,
        run_dir,
        max_seconds,
        options,
        console=console,
        web_port_base=web_port_base,
        plan_extras=plan_extras,
    ) as attested:
        return attested.run()


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, set):
        return sorted(value)
    if hasattr(value, "__dataclass_fields__"):
        return asdict(value)
    raise TypeError(f"cannot serialise {type(value).__name__}")
