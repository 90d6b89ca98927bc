"""A whole local run on one machine: a bootstrap peer and N agents, each its own OS process and libp2p peer.

``hypergpu swarm`` and ``hypergpu bench`` use :class:`LocalSwarm`. The launcher never takes part in
training: it starts processes, reads each agent's ``status.json``, shows a live line, and at the end
evaluates the agents' final checkpoints on the full test set and writes ``report.json`` + ``progress.png``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil
import tomli_w

from agent.errors import BootstrapError
from agent.protocol.config import RunConfig
from agent.protocol.timeutil import run_folder_stamp

if TYPE_CHECKING:
    from agent.swarm.emulated import EmulatedNetwork

log = logging.getLogger("hypergpu.launcher")
MEMORY_SAMPLE_S = 20.0  # seconds between the launcher's own readings of the agents' memory


@dataclass(frozen=True)
class SwarmPlan:
    """What to launch.

    Args:
        agents: number of agent processes.
        config: the run configuration every agent gets (run id, model, data, hyper-parameters).
        run_dir: folder for the run's files (created).
        max_seconds: stop the run after this much training time.
        threads_per_agent: torch threads per agent (None = cores / agents, at least 1).
        web_port_base: agent i serves its status page on this + i (None = no pages).
        agent_env: extra environment variables for the agent processes.
        agent_args: extra ``hypergpu join`` arguments per agent index (e.g. emulated addresses).
        host_of: listen address per agent index (default 127.0.0.1 for all).
        network: emulated WAN (:class:`agent.swarm.emulated.EmulatedNetwork`): started before the agents,
            gives each agent its listen/announce addresses, gets round events, stopped after them.
        stop_at_target: stop the agents ``stop_grace_s`` after the launcher saw the swarm reach the target
            (see :meth:`LocalSwarm.pooled_slice_accuracy`), even those that have not noticed it themselves.
    """

    agents: int
    config: RunConfig
    run_dir: Path
    max_seconds: float = 120.0
    threads_per_agent: int | None = None
    web_port_base: int | None = None
    agent_env: dict[str, str] = field(default_factory=dict)
    agent_args: dict[int, list[str]] = field(default_factory=dict)
    host_of: dict[int, str] = field(default_factory=dict)
    network: EmulatedNetwork | None = None
    stop_at_target: bool = False
    stop_grace_s: float = 10.0


@dataclass
class AgentProcess:
    """One launched agent."""

    index: int
    workdir: Path
    process: subprocess.Popen[bytes]
    peak_pss_mb: float = 0.0
    last_status: dict[str, Any] = field(default_factory=dict)
    killed: bool = False


@dataclass
class ProgressPoint:
    """The swarm at one moment, seconds since training started."""

    t: float
    accuracy: float | None
    loss: float | None
    samples: int
    samples_per_s: float
    round: int
    alive: int


def default_run_dir(run_id: str, root: Path = Path("runs")) -> Path:
    return root / f"{run_folder_stamp()}-{run_id}"


def write_config_toml(config: RunConfig, path: Path) -> None:
    """Write ``config`` as TOML that :func:`load_run_config` reads back (None fields omitted)."""

    def drop_none(tree: Any) -> Any:
        if isinstance(tree, dict):
            return {k: drop_none(v) for k, v in tree.items() if v is not None}
        return tree

    path.write_text(tomli_w.dumps(drop_none(config.model_dump(mode="json"))))


def process_tree_pss_mb(pid: int) -> float:
    """PSS of a process and all its children, MiB (shared pages split between sharers, so no double count)."""
    total = 0
    try:
        root = psutil.Process(pid)
        for proc in [root, *root.children(recursive=True)]:
            try:
                total += proc.memory_full_info().pss
            except psutil.Error:
                continue
    except psutil.Error:
        return 0.0
    return total / 2**20


class LocalSwarm:
    """Launch, watch and stop a local swarm. Use as a context manager so processes never outlive it."""

    def __init__(self, plan: SwarmPlan) -> None:
        self.plan = plan
        self.run_dir = plan.run_dir
        self.bootstrap: subprocess.Popen[bytes] | None = None
        self.bootstrap_addresses: list[str] = []
        self.agents: list[AgentProcess] = []
        self.progress: list[ProgressPoint] = []
        self.started_at = time.time()
        self.target_seen_at: float | None = None  # when the launcher saw the pooled slices reach the target

    # ---- processes ---------------------------------------------------------------------------------
    def __enter__(self) -> LocalSwarm:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        write_config_toml(self.plan.config, self.run_dir / "config.toml")
        try:
            if self.plan.network is not None:
                self.plan.network.start()  # first: the agents' addresses come from it
            self.start_bootstrap()
            for index in range(self.plan.agents):
                self.start_agent(index)
        except BaseException:
            self.stop_all()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()

    def _python(self) -> list[str]:
        return [sys.executable, "-m", "agent.cli.main"]

    def start_bootstrap(self) -> None:
        address_file = self.run_dir / "bootstrap.json"
        address_file.unlink(missing_ok=True)
        log_file = open(self.run_dir / "bootstrap.log", "wb")  # noqa: SIM115 - owned by the child
        self.bootstrap = subprocess.Popen(
            [*self._python(), "bootstrap", "--address-file", str(address_file)],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while not address_file.exists():
            if self.bootstrap.poll() is not None or time.monotonic() > deadline:
                raise BootstrapError(
                    f"the bootstrap peer did not start; see {self.run_dir / 'bootstrap.log'}"
                )
            time.sleep(0.1)
        self.bootstrap_addresses = json.loads(address_file.read_text())

    def start_agent(
        self, index: int, *, extra_args: list[str] | None = None, resume: bool = False
    ) -> AgentProcess:
        """Start agent ``index`` (again, if it ran before) as a separate process."""
        plan = self.plan
        workdir = self.run_dir / "agents" / str(index)
        workdir.mkdir(parents=True, exist_ok=True)
        threads = plan.threads_per_agent or max(1, (os.cpu_count() or 1) // plan.agents)
        if plan.network is not None:
            listen = plan.network.join_args(index)  # its real address + its proxy
        else:
            listen = ["--host", plan.host_of.get(index, plan.config.swarm.host), "--port", "0"]
        args = [
            *self._python(),
            "join",
            "--no-tui",
            "--config",
            str(self.run_dir / "config.toml"),
            "--workdir",
            str(workdir),
            "--max-seconds",
            str(plan.max_seconds),
            "--threads",
            str(threads),
            *listen,
        ]
        for address in self.bootstrap_addresses[:1]:
            args += ["--initial-peers", address]
        if plan.web_port_base is not None:
            args += ["--web-port", str(plan.web_port_base + index)]
        if resume:
            args.append("--resume")
        args += plan.agent_args.get(index, []) + (extra_args or [])
        env = {**os.environ, **plan.agent_env, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
        stdout = open(workdir / "stdout.log", "ab")  # noqa: SIM115 - owned by the child
        process = subprocess.Popen(
            args, stdout=stdout, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        agent = AgentProcess(index, workdir, process)
        self.agents = [a for a in self.agents if a.index != index] + [agent]
        self.agents.sort(key=lambda a: a.index)
        return agent

    def kill_agent(self, index: int) -> None:
        """SIGKILL agent ``index`` and all its processes (as a crashed host would vanish)."""
        agent = next(a for a in self.agents if a.index == index)
        _kill_tree(agent.process.pid, signal.SIGKILL)
        agent.killed = True

    def stop_all(self, grace_s: float = 15.0) -> None:
        """SIGTERM every agent (they checkpoint and leave), then SIGKILL what is left after ``grace_s``."""
        for agent in self.agents:
            if agent.process.poll() is None:
                with contextlib.suppress(psutil.Error, OSError):
                    agent.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for agent in self.agents:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                agent.process.wait(timeout=remaining)
            except subprocess.TimeoutExpired:
                log.warning("agent %d did not stop in time; killing it", agent.index)
            _kill_tree(agent.process.pid, signal.SIGKILL)
        if self.bootstrap is not None:
            _kill_tree(self.bootstrap.pid, signal.SIGTERM)
            try:
                self.bootstrap.wait(timeout=5)
            except subprocess.TimeoutExpired:
                _kill_tree(self.bootstrap.pid, signal.SIGKILL)
        if self.plan.network is not None:
            self.plan.network.stop()  # last: it writes the final traffic stats of the whole run

    # ---- watching ----------------------------------------------------------------------------------
    def read_statuses(self) -> None:
        for agent in self.agents:
            path = agent.workdir / "status.json"
            try:
                agent.last_status = json.loads(path.read_text())
            except (OSError, ValueError):
                continue

    def sample_memory(self, *, measure: bool) -> None:
        """Track each agent's peak memory (PSS of its process tree, MiB).

        Each agent measures itself every 10 s and reports it in ``status.json``; that figure is taken on
        every call. With ``measure`` the launcher also reads the trees itself. It does so rarely: reading
        ``smaps_rollup`` walks the page tables of every process, and doing it every 2 s for 8 agents was
        two thirds of the launcher's CPU, taken from the agents it measures.
        """
        for agent in self.agents:
            reported = agent.last_status.get("rss_mb")
            if isinstance(reported, int | float):
                agent.peak_pss_mb = max(agent.peak_pss_mb, float(reported))
            if measure and agent.process.poll() is None:
                agent.peak_pss_mb = max(agent.peak_pss_mb, process_tree_pss_mb(agent.process.pid))

    def alive(self) -> list[AgentProcess]:
        return [a for a in self.agents if a.process.poll() is None]

    def train_start(self) -> float | None:
        starts = [a.last_status.get("clock", {}).get("train_start") for a in self.agents]
        starts = [s for s in starts if s]
        return min(starts) if starts else None

    def snapshot(self) -> ProgressPoint | None:
        """The swarm's state now, from the agents' status files (None before training starts)."""
        self.read_statuses()
        t0 = self.train_start()
        if t0 is None:
            return None
        evals = [a.last_status.get("swarm_eval") for a in self.agents if a.last_status.get("swarm_eval")]
        latest = max(evals, key=lambda e: e["at"]) if evals else None
        samples = sum(int(a.last_status.get("samples_total", 0)) for a in self.agents)
        elapsed = max(1e-6, time.time() - t0)
        point = ProgressPoint(
            t=elapsed,
            accuracy=latest["accuracy"] if latest else None,
            loss=latest["loss"] if latest else None,
            samples=samples,
            samples_per_s=samples / elapsed,
            round=max((int(a.last_status.get("round", 0)) for a in self.agents), default=0),
            alive=len(self.alive()),
        )
        self.progress.append(point)
        if self.plan.network is not None and self.plan.network.running:
            self.plan.network.on_round(point.round)
        pooled = self.pooled_slice_accuracy()
        if (
            self.target_seen_at is None
            and pooled is not None
            and pooled >= self.plan.config.training.target_accuracy
        ):
            self.target_seen_at = time.time()
            log.info("the agents' test slices pool to %.4f >= target", pooled)
        return point

    def pooled_slice_accuracy(self, max_age_s: float = 10.0) -> float | None:
        """The swarm's test accuracy pooled here from the agents' own latest slice evaluations.

        Each agent evaluates the agreed (anchor) model on its slice of the test set and writes the
        result to ``status.json``; the slices partition the test set, so correct / total over every live
        agent's whole-slice evaluation (none older than ``max_age_s``) is the swarm's accuracy: the same
        figure the agents pool through the DHT, without depending on DHT lookups. None unless every live
        agent has a fresh whole-slice evaluation.
        """
        now = time.time()
        correct = total = 0.0
        for agent in self.alive():
            evaluation = agent.last_status.get("last_eval")
            if not evaluation or now - float(evaluation.get("at", 0.0)) > max_age_s:
                return None
            if not evaluation.get("full", True):
                return None  # a progress estimate on part of the slice cannot stop the run
            correct += float(evaluation["accuracy"]) * int(evaluation["total"])
            total += int(evaluation["total"])
        return correct / total if total else None

    def wait(self, *, on_tick: Any = None, tick_s: float = 0.5, timeout_s: float | None = None) -> None:
        """Block until every agent has exited (or ``timeout_s``), sampling progress and memory each tick."""
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else self.plan.max_seconds + 120)
        next_memory = 0.0
        while self.alive() and time.monotonic() < deadline:
            measure = time.monotonic() >= next_memory
            self.sample_memory(measure=measure)
            if measure:
                next_memory = time.monotonic() + MEMORY_SAMPLE_S
            point = self.snapshot()
            if on_tick is not None:
                on_tick(point)
            if (
                self.plan.stop_at_target
                and self.target_seen_at is not None
                and time.time() - self.target_seen_at >= self.plan.stop_grace_s
            ):
                log.info("target reached %.0f s ago: stopping the agents", self.plan.stop_grace_s)
                self.stop_all()
            time.sleep(tick_s)
        self.read_statuses()

    # ---- results -----------------------------------------------------------------------------------
    def network_summary(self) -> dict[str, Any] | None:
        """Traffic per agent pair through the emulated network and the round events sent (None if none)."""
        return None if self.plan.network is None else self.plan.network.summary()

    def time_to_target_s(self) -> float | None:
        """Seconds from the first agent's training start to the first sight of the target, by an agent
        (DHT-pooled evaluation) or by the launcher (:meth:`pooled_slice_accuracy`)."""
        t0 = self.train_start()
        reached = [a.last_status.get("clock", {}).get("target_reached_at") for a in self.agents]
        reached = [r for r in reached if r] + ([self.target_seen_at] if self.target_seen_at else [])
        if t0 is None or not reached:
            return None
        return min(reached) - t0

    def throughput(self) -> tuple[int, float]:
        """(samples by all agents, their samples per wall-clock second from first start to last stop)."""
        samples = sum(int(a.last_status.get("samples_total", 0)) for a in self.agents)
        starts = [a.last_status.get("clock", {}).get("train_start") for a in self.agents]
        ends = [
            a.last_status.get("clock", {}).get("train_end") or a.last_status.get("written_at")
            for a in self.agents
        ]
        starts = [s for s in starts if s]
        ends = [e for e in ends if e]
        if not starts or not ends:
            return samples, 0.0
        return samples, samples / max(1e-6, max(ends) - min(starts))


def evaluate_checkpoints(run_dir: Path, config: RunConfig) -> dict[str, float]:
    """Accuracy of each agent's final checkpoint on the full test set, by agent index."""
    import torch

    from agent.training.checkpoint import load_checkpoint
    from agent.training.datasets import load_dataset
    from agent.training.models import build_model

    test = load_dataset(config.training.dataset, config.training.data_dir, "test")
    results: dict[str, float] = {}
    for workdir in sorted(
        (run_dir / "agents").iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else 0
    ):
        checkpoint = load_checkpoint(workdir / "checkpoints")
        if checkpoint is None:
            continue
        model = build_model(
            config.training.model, num_classes=test.num_classes, in_channels=test.images.shape[1]
        )
        model.load_state_dict(checkpoint.model_state)
        model.eval()
        correct = 0
        with torch.no_grad():
            for start in range(0, len(test.labels), 2000):
                logits = model(test.images[start : start + 2000])
                correct += int((logits.argmax(1) == test.labels[start : start + 2000]).sum())
        results[workdir.name] = correct / len(test.labels)
    return results


def plot_progress(points: list[ProgressPoint], path: Path, title: str, target: float | None = None) -> None:
    """Test accuracy and loss against time, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    measured = [p for p in points if p.accuracy is not None]
    fig, ax_acc = plt.subplots(figsize=(8, 4.5), dpi=110)
    ax_loss = ax_acc.twinx()
    if measured:
        ax_acc.plot(
            [p.t for p in measured], [p.accuracy for p in measured], color="tab:blue", label="test accuracy"
        )
        ax_loss.plot(
            [p.t for p in measured], [p.loss for p in measured], color="tab:orange", label="test loss"
        )
    if target is not None:
        ax_acc.axhline(target, color="tab:blue", linestyle=":", linewidth=1, label=f"target {target:g}")
    ax_acc.set_xlabel("seconds since training started")
    ax_acc.set_ylabel("test accuracy", color="tab:blue")
    ax_loss.set_ylabel("test loss", color="tab:orange")
    lo = min([p.accuracy for p in measured], default=0.0)
    ax_acc.set_ylim(max(0.0, min(lo, (target or 1.0) - 0.05) - 0.01), 1.0)
    ax_acc.set_title(title)
    ax_acc.grid(alpha=0.3)
    handles = ax_acc.get_legend_handles_labels()[0] + ax_loss.get_legend_handles_labels()[0]
    ax_acc.legend(handles=handles, loc="center right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _kill_tree(pid: int, sig: int) -> None:
    try:
        root = psutil.Process(pid)
        procs = [*root.children(recursive=True), root]
    except psutil.Error:
        return
    for proc in procs:
        with contextlib.suppress(psutil.Error, OSError):
            proc.send_signal(sig)
    if sig == signal.SIGKILL:
        psutil.wait_procs(procs, timeout=5)
