"""One HyperGPU agent: joins the DHT, trains its shard, averages with its group, checkpoints, reports.

``hypergpu join`` builds an :class:`AgentNode` and calls :meth:`AgentNode.run`. The loop reads top to
bottom: local steps -> maybe apply a finished averaging round -> maybe start the next one -> maybe
evaluate, refresh membership, checkpoint -> stop when the swarm reaches its target or the user says so.
"""

from __future__ import annotations

import collections
import json
import logging
import math
import os
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from hivemind.utils import get_dht_time

from agent.errors import NoPeersError, UserFacingError
from agent.protocol.config import RunConfig
from agent.protocol.messages import AveragingRoundReport, NodeStatus, TrainingMetrics
from agent.status import AlertLevel, StatusBoard
from agent.swarm.averaging import ModelAverager, OverlappedAveraging, RoundOutcome, update_norm_outliers
from agent.swarm.dht_node import DhtOptions, start_dht, visible_maddrs
from agent.swarm.eval_schedule import SUBSAMPLE, choose_evaluation
from agent.swarm.launcher import process_tree_pss_mb
from agent.swarm.membership import (
    EvalRecord,
    MemberCard,
    SwarmDirectory,
    fresh_evaluations,
    pool_evaluations,
    target_seen,
)
from agent.swarm.policy import RoundPlan, RoundResult, StaticPolicy, SwarmPolicy
from agent.swarm.rolling import RoundStats
from agent.training.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from agent.training.datasets import load_dataset
from agent.training.local_trainer import LocalTrainer
from agent.training.models import build_model
from agent.training.parameters import ParameterPackage, pack, parameters_swapped, unpack_into
from agent.training.sharding import assign_shards

log = logging.getLogger("hypergpu.agent")

POLL_STEPS = 4  # optimizer steps between checks of the round in flight, the stop flag and the clocks


@dataclass(frozen=True)
class NodeOptions:
    """Run-time options of one agent that are not part of the shared run configuration.

    Args:
        workdir: folder for this agent's identity key, checkpoints, status file and log.
        resume: continue from the checkpoint in ``workdir`` instead of starting fresh.
        max_seconds: stop after this much training time (None = no limit).
        announce_host, announce_port: address to announce instead of the listen address (emulation, NAT).
        torch_threads: intra-op threads for this agent (None = torch's default).
        status_interval_s: how often ``status.json`` is rewritten, seconds.
    """

    workdir: Path
    resume: bool = False
    max_seconds: float | None = None
    announce_host: str | None = None
    announce_port: int | None = None
    torch_threads: int | None = None
    status_interval_s: float = 1.0
    keystore: Path | None = None
    password_file: Path | None = None


@dataclass
class _Clock:
    """Wall-clock bookkeeping of one run, seconds since the epoch."""

    process_start: float = field(default_factory=time.time)
    train_start: float | None = None
    train_end: float | None = None
    target_reached_at: float | None = None


def make_policy(config: RunConfig) -> SwarmPolicy:
    """The network-aware policy when ``swarm.adaptive`` is on, else plain hivemind behaviour."""
    if config.swarm.adaptive:
        from agent.swarm.adaptive import AdaptivePolicy

        return AdaptivePolicy(config)
    return StaticPolicy(config)


def pick_device() -> torch.device:
    """CUDA when present, else the CPU: the same code runs on both."""
    return torch.device("cuda:0") if torch.cuda.is_available() else torch.device("cpu")


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    import platform

    return platform.processor() or platform.machine() or "cpu"


class AgentNode:
    """A training agent. Thread-safe controls: :meth:`request_stop`, :meth:`pause`, :meth:`resume`."""

    def __init__(self, config: RunConfig, options: NodeOptions, board: StatusBoard | None = None) -> None:
        self.config = config
        self.options = options
        self.board = board or StatusBoard()
        self._stop = threading.Event()
        self._paused = threading.Event()
        self.stop_reason = ""
        self.clock = _Clock()
        self.round = 0
        self.stats = RoundStats()
        self.last_eval: dict[str, Any] | None = None
        self.swarm_eval: dict[str, Any] | None = None
        self.peer_id = ""
        self.visible_addresses: list[str] = []
        self.members: tuple[str, ...] = ()
        self.samples_total = 0
        self.compute_seconds_total = 0.0
        self.loop_seconds: dict[str, float] = collections.defaultdict(float)  # where the loop's time goes
        self.rounds_failed = 0
        self._samples_since_round = 0
        self._compute_since_round = 0.0
        self._steps_since_round = 0
        self._last_params: list[torch.Tensor] | None = None
        self._acc_history: list[tuple[float, float]] = []
        self._round_meta: dict[str, Any] = {}
        self._round_applied = False
        self._test_tensors: tuple[torch.Tensor, torch.Tensor] | None = None
        self._eval_record: EvalRecord | None = None  # the last evaluation, republished until the next
        self._eval_version: int | None = None  # the anchor version it evaluated
        self._eval_monotonic = 0.0
        self._overlapped: OverlappedAveraging | None = None
        self.loaded_state: dict[str, Any] | None = None
        self.resumed_from: dict[str, Any] | None = None
        self.first_eval: dict[str, Any] | None = None
        self.account: Any = None
        self.policy: SwarmPolicy = make_policy(config)
        self._local_steps = config.training.local_steps
        self._group_bits: str | None = None
        self._done_at: float | None = None
        self._cards: dict[str, MemberCard] = {}
        self._failed_streak = 0
        self._last_seen: dict[str, float] = {}
        self._averager: ModelAverager | None = None
        self._evidence: Any = None
        self._domain: Any = None

    # ---- controls ----------------------------------------------------------------------------------
    def request_stop(self, reason: str = "stopped by user") -> None:
        if not self._stop.is_set():
            self.stop_reason = reason
            self._stop.set()

    def pause(self) -> None:
        self._paused.set()
        self.board.update(paused=True, status=NodeStatus.PAUSED)

    def resume(self) -> None:
        self._paused.clear()
        self.board.update(paused=False, status=NodeStatus.TRAINING)

    # ---- the run -----------------------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Train until the target, the epoch budget, ``max_seconds`` or a stop request; returns a summary."""
        cfg, opts = self.config, self.options
        opts.workdir.mkdir(parents=True, exist_ok=True)
        self._unlock_wallet()
        if opts.torch_threads:
            torch.set_num_threads(opts.torch_threads)
        torch.manual_seed(cfg.training.seed)
        device = pick_device()
        self.board.update(
            run_id=cfg.swarm.run_id,
            device=str(device),
            device_name=device_name(device),
            status=NodeStatus.JOINING,
            target_accuracy=cfg.training.target_accuracy,
            local_batch_size=cfg.training.batch_size,
            local_steps=cfg.training.local_steps,
        )
        train = load_dataset(cfg.training.dataset, cfg.training.data_dir, "train")
        test = load_dataset(cfg.training.dataset, cfg.training.data_dir, "test")
        model = build_model(
            cfg.training.model, num_classes=train.num_classes, in_channels=train.images.shape[1]
        )
        model = model.to(device)

        dht = start_dht(
            DhtOptions(
                host=cfg.swarm.host,
                port=cfg.swarm.port,
                initial_peers=tuple(cfg.swarm.initial_peers),
                announce_host=opts.announce_host,
                announce_port=opts.announce_port,
                identity_path=opts.workdir / "identity.key",
            )
        )
        averager: ModelAverager | None = None
        try:
            self.peer_id = dht.peer_id.to_base58()
            self._start_evidence(dht, device)
            self._watch_rewards()
            self.visible_addresses = visible_maddrs(dht)
            log.info("joined the DHT as %s; peers can use %s", self.peer_id, self.visible_addresses[:1])
            self.board.update(peer_id=self.peer_id)
            directory = SwarmDirectory(dht, cfg.swarm.run_id, self.peer_id, ttl=cfg.swarm.member_ttl)
            checkpoint = load_checkpoint(opts.workdir / "checkpoints") if opts.resume else None
            if opts.resume and checkpoint is None:
                raise UserFacingError(
                    f"--resume: no checkpoint in {opts.workdir / 'checkpoints'}; "
                    "run without --resume to start fresh"
                )
            self._publish_card(directory, str(device))
            members = self._wait_for_members(directory, str(device))
            self.members = members
            train_labels = train.labels.numpy()
            test_labels = test.labels.numpy()
            shard = _shard_of(train_labels, members, "train", self.peer_id)
            test_slice = _shard_of(test_labels, members, "test", self.peer_id)
            now = time.monotonic()
            self._last_seen = {peer: now for peer in members}
            log.info(
                "shard: %d training samples, %d test samples, %d members",
                len(shard),
                len(test_slice),
                len(members),
            )

            trainer = LocalTrainer(
                model,
                train.images,
                train.labels,
                shard,
                batch_size=cfg.training.batch_size,
                learning_rate=cfg.training.learning_rate,
                momentum=cfg.training.momentum,
                weight_decay=cfg.training.weight_decay,
                grad_clip_norm=cfg.training.grad_clip_norm,
                device=device,
                seed=cfg.training.seed + int.from_bytes(self.peer_id.encode()[-4:], "little"),
            )
            params = [p for p in model.parameters()]
            if checkpoint is not None:
                self._restore(checkpoint, model, trainer)

            averager = ModelAverager(
                params,
                dht,
                state_provider=lambda: self._shareable_state(model, trainer),
                prefix=f"{cfg.swarm.run_id}_avg",
                start=True,
                target_group_size=cfg.swarm.target_group_size,
                min_group_size=cfg.swarm.min_group_size,
                min_matchmaking_time=cfg.swarm.matchmaking_time,
                request_timeout=cfg.swarm.request_timeout,
                allreduce_timeout=cfg.swarm.averaging_timeout,
                next_chunk_timeout=cfg.swarm.averaging_timeout / 2,
                sender_timeout=cfg.swarm.averaging_timeout / 3,
                reducer_timeout=cfg.swarm.averaging_timeout / 2,
                allow_state_sharing=True,
                declare_state_period=5.0,
                shutdown_timeout=3.0,
            )
            if checkpoint is None and self._swarm_has_progress(directory):
                self._load_state_from_peers(averager, model, trainer)
            overlapped = OverlappedAveraging(
                averager,
                params,
                timeout=cfg.swarm.averaging_timeout,
                outer_lr=cfg.training.outer_lr,
                outer_momentum=cfg.training.outer_momentum,
            )
            self._overlapped = overlapped
            self._averager = averager
            self.policy.start(dht=dht, peer_id=self.peer_id, board=self.board)
            self._train_loop(
                model, trainer, overlapped, directory, test, test_slice, train_labels, test_labels
            )
            overlapped.cancel()
            self.policy.stop()
            self._save(model, trainer)
            directory.withdraw(self._card(str(device)))
        finally:
            self.board.update(status=NodeStatus.STOPPED)
            self._write_status(final=True)
            if averager is not None:
                _quietly(averager.shutdown)
            _quietly(dht.shutdown)
            if self._rewards_watch is not None:
                _quietly(self._rewards_watch.stop)
        return self.summary()

    def _train_loop(
        self,
        model: torch.nn.Module,
        trainer: LocalTrainer,
        overlapped: OverlappedAveraging,
        directory: SwarmDirectory,
        test: Any,
        test_slice: np.ndarray,
        train_labels: np.ndarray,
        test_labels: np.ndarray,
    ) -> None:
        cfg, opts = self.config, self.options
        self._test_tensors = (
            test.images[torch.from_numpy(test_slice)],
            test.labels[torch.from_numpy(test_slice)],
        )
        self.clock.train_start = time.time()
        self.board.update(status=NodeStatus.TRAINING, started_at=_utc(self.clock.train_start))
        # A newcomer that loaded the swarm's state reports its accuracy at once, before its first round.
        next_tick = time.monotonic() + (0.0 if self.loaded_state else cfg.training.eval_interval_s)
        next_status = 0.0
        rate_window: list[tuple[float, int]] = [(time.monotonic(), 0)]
        self._last_params = [p.detach().cpu().clone() for p in model.parameters()]
        loss = math.nan
        while not self._stop.is_set():
            if self._paused.is_set():
                time.sleep(0.2)
                self._apply_finished_round(overlapped, model)
                continue
            result = trainer.train_steps(POLL_STEPS)
            self.samples_total += result.samples
            self._samples_since_round += result.samples
            self._compute_since_round += result.compute_seconds
            self.compute_seconds_total += result.compute_seconds
            self._steps_since_round += result.steps
            if result.steps:
                loss = result.loss
                self.stats.add(grad_norm=result.grad_norm)
            t_poll = time.perf_counter()
            self._apply_finished_round(overlapped, model)
            t_start = time.perf_counter()
            if not overlapped.in_flight and self._steps_since_round >= self._local_steps:
                self._start_round(overlapped, model, trainer)
            t_end = time.perf_counter()
            self.loop_seconds["apply_round"] += t_start - t_poll
            self.loop_seconds["start_round"] += t_end - t_start
            self.loop_seconds["train"] += result.compute_seconds
            now = time.monotonic()
            rate_window.append((now, self.samples_total))
            rate_window = [item for item in rate_window if now - item[0] <= 10.0] or rate_window[-1:]
            rate = _rate(rate_window)
            if now >= next_tick:
                # One tick: evaluate the agreed model on our test slice, publish the card, read the others'.
                t0 = time.perf_counter()
                self._tick(trainer, directory, train_labels, test_labels, test, loss, rate)
                spent = time.perf_counter() - t0
                self.loop_seconds["tick"] += spent
                # Keep the tick under ~10% of the time on a slow host, but heartbeat well within the TTL.
                interval = max(cfg.training.eval_interval_s, 10 * spent)
                next_tick = time.monotonic() + min(interval, cfg.swarm.member_ttl / 3)
            if now >= next_status:
                next_status = now + opts.status_interval_s
                self.board.update(
                    round=self.round,
                    step=trainer.steps_done,
                    epoch=trainer.epochs_done,
                    loss=loss,
                    samples_per_s=rate,
                    samples_total=self.samples_total,
                )
                t0 = time.perf_counter()
                self._write_status()
                self.loop_seconds["status"] += time.perf_counter() - t0
            if trainer.epochs_done >= cfg.training.epochs:
                self.request_stop(f"finished {cfg.training.epochs} epochs")
            if opts.max_seconds is not None and time.time() - self.clock.train_start >= opts.max_seconds:
                self.request_stop(f"reached max_seconds={opts.max_seconds:g}")
            if self.round and self.round % cfg.checkpoint.every_rounds == 0 and self._round_applied:
                self._save(model, trainer)
            self._round_applied = False
        self.clock.train_end = time.time()
        log.info("stopping: %s", self.stop_reason)
        if self._done_at is not None:
            self._final_round(overlapped, model, trainer)

    # ---- averaging rounds --------------------------------------------------------------------------
    def _final_round(
        self, overlapped: OverlappedAveraging, model: torch.nn.Module, trainer: LocalTrainer
    ) -> None:
        """Once the swarm reached its target, average one last time so every agent keeps the same model.

        Bounded in time: a peer that already left only makes the group smaller, and a failed round leaves
        the agent with its last agreed parameters.
        """
        cfg = self.config.swarm
        deadline = time.monotonic() + 2 * cfg.matchmaking_time + 10.0
        while overlapped.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
            self._apply_finished_round(overlapped, model)
        if overlapped.in_flight:
            return
        self._steps_since_round = max(self._steps_since_round, self._local_steps)
        self._start_round(overlapped, model, trainer)
        while overlapped.in_flight and time.monotonic() < deadline:
            time.sleep(0.05)
            self._apply_finished_round(overlapped, model)
        log.info("final averaging round: %s", "done" if not overlapped.in_flight else "timed out")

    def _apply_plan(self, plan: RoundPlan, trainer: LocalTrainer) -> None:
        if plan.batch_size != trainer.batch_size or plan.local_steps != self._local_steps:
            log.info(
                "local work: batch %d -> %d, steps %d -> %d (%s)",
                trainer.batch_size,
                plan.batch_size,
                self._local_steps,
                plan.local_steps,
                plan.reason or "policy",
            )
            trainer.batch_size = plan.batch_size  # takes effect from the next batch: the current one is done
            self._local_steps = plan.local_steps
            self.board.update(local_batch_size=plan.batch_size, local_steps=plan.local_steps)
        if plan.group_bits is not None and self._averager is not None:
            # Every round: hivemind's key manager rewrites non-empty bits after each assembled group.
            self._averager.set_group_bits(plan.group_bits, wait=False)
            self._group_bits = plan.group_bits

    def _start_round(
        self, overlapped: OverlappedAveraging, model: torch.nn.Module, trainer: LocalTrainer
    ) -> None:
        plan = self.policy.plan_round(self.round)
        self._apply_plan(plan, trainer)
        current = [p.detach().cpu() for p in model.parameters()]
        update_norm = math.sqrt(
            sum(
                float((c - last).pow(2).sum())
                for c, last in zip(current, self._last_params or current, strict=True)
            )
        )
        gather = {
            "nonce": secrets.token_hex(4),
            "round": self.round,
            "samples": self._samples_since_round,
            "compute_s": round(self._compute_since_round, 4),
            "update_norm": update_norm,
        }
        gather.update(self.policy.gather_extras())
        self._round_meta = dict(gather, started=time.monotonic())
        overlapped.start_round(
            weight=self._samples_since_round * plan.weight_scale,
            gather=gather,
            timeout=plan.matchmaking_timeout,
        )
        self.board.update(status=NodeStatus.AVERAGING)
        self._samples_since_round = 0
        self._compute_since_round = 0.0
        self._steps_since_round = 0

    def _apply_finished_round(self, overlapped: OverlappedAveraging, model: torch.nn.Module) -> None:
        outcome = overlapped.poll()
        if outcome is None:
            return
        self._round_applied = outcome.success
        self._last_params = [p.detach().cpu().clone() for p in model.parameters()]
        self._record_round(outcome)
        self.policy.on_round_finished(
            RoundResult(
                success=outcome.success,
                members=outcome.members,
                round_seconds=outcome.seconds,
                compute_seconds=float(self._round_meta.get("compute_s", 0.0)),
                samples=int(self._round_meta.get("samples", 0)),
                error=outcome.error or outcome.rejected_reason,
                gathered=outcome.gathered,
            )
        )
        self.board.update(status=NodeStatus.PAUSED if self._paused.is_set() else NodeStatus.TRAINING)

    # ---- rewards (the faces' claim button and rewards panel) ---------------------------------------
    _rewards_watch: Any = None

    def claim(self) -> str:
        """Claim this agent's pending reward through the code behind ``hypergpu claim``; returns one line.

        Raises :class:`UserFacingError` when there is no wallet or chain, or nothing is pending.
        """
        from agent.chain.claiming import claim_pending, format_amount, nothing_to_claim_reason
        from agent.swarm.rewards_watch import chain_configured

        chain = self.config.chain
        if self.account is None:
            raise UserFacingError("no wallet: start the agent with --keystore (hypergpu wallet new) to claim")
        if not chain_configured(chain):
            raise UserFacingError("no chain configured: set chain.attestation_address or deployment_file")
        run_id = self.config.swarm.run_id
        statuses, receipts = claim_pending(chain, self.account, run_id)
        if self._rewards_watch is not None:
            self._rewards_watch.refresh_soon()
        currency = chain.network_info.currency
        if not receipts:
            raise UserFacingError(nothing_to_claim_reason(statuses, self.account.address, run_id, currency))
        paid = format_amount(sum(r.amount_wei for r in receipts), currency)
        where = receipts[0].explorer_link or receipts[0].tx_hash
        return f"claimed {paid} in {where}"

    def _watch_rewards(self) -> None:
        """Keep ``board.rewards`` filled (a background thread) when this agent has a wallet and a chain."""
        from agent.swarm.rewards_watch import RewardsWatcher, chain_configured

        if self.account is not None and chain_configured(self.config.chain):
            self._rewards_watch = RewardsWatcher(
                self.config.chain, self.account.address, self.config.swarm.run_id, self.board
            ).start()

    def _unlock_wallet(self) -> None:
        """Unlock the keystore, if one is configured, before anything slow (a wrong password fails fast)."""
        from agent.chain.wallet import read_password, unlock_wallet

        path = self.options.keystore
        if path is None:
            return
        password = read_password(self.options.password_file, interactive=False)
        self.account = unlock_wallet(path, password)
        self.board.update(wallet=self.account.address)

    def _start_evidence(self, dht: Any, device: torch.device) -> None:
        """Publish this agent's signed wallet <-> peer id binding; later rounds publish signed reports."""
        if self.account is None:
            log.warning("no wallet (--keystore): this agent trains, but its contributions are not attested")
            return
        from agent.protocol.messages import Hardware
        from agent.swarm.evidence import EvidencePublisher, report_domain

        self._evidence = EvidencePublisher(dht)
        self._domain = report_domain(self.config.chain)
        hardware = Hardware(
            device=str(device),
            name=device_name(device),
            memory_mb=int(psutil.virtual_memory().total / 2**20),
            cpu_threads=torch.get_num_threads(),
        )
        self._evidence.publish_node(
            self.account, self.config.swarm.run_id, self.peer_id, hardware, self._domain
        )
        log.info(
            "wallet %s bound to peer %s for run %s",
            self.account.address,
            self.peer_id[:12],
            self.config.swarm.run_id,
        )

    def _attest(self, report: AveragingRoundReport, update_norm: float, flagged: list[str]) -> None:
        if self._evidence is None or self.account is None or not report.success:
            return
        try:
            self._evidence.publish_round(
                self.account, report, self.peer_id, self._domain, update_norm=update_norm, flagged=flagged
            )
        except Exception as exc:  # evidence must never stop training; the next round tries again
            log.warning("could not publish the signed report of round %d: %s", report.round, exc)

    def _record_round(self, outcome: RoundOutcome) -> None:
        meta = self._round_meta
        n = len(outcome.members)
        param_bytes = sum(t.numel() * t.element_size() for t in self._last_params or [])
        # Butterfly all-reduce: each member sends and receives (n-1)/n of the vector twice (scatter, gather).
        traffic = int(2 * (n - 1) / n * param_bytes) if n else 0
        if outcome.success:
            rounds_seen = [int(p.get("round", 0)) for p in outcome.gathered.values() if isinstance(p, dict)]
            self.round = max([self.round, *rounds_seen]) + 1
            norms = {peer: float(p.get("update_norm", math.nan)) for peer, p in outcome.gathered.items()}
            flagged = update_norm_outliers(norms)
            for peer in flagged:
                if peer != self.peer_id:
                    self.board.alert(
                        "update_outlier",
                        f"peer {peer[:12]} sent an update of norm {norms[peer]:.3g}, far from the group's",
                        peer_id=peer,
                    )
            self.stats.ok_rounds += 1
            self._failed_streak = 0
            self.stats.add(
                round_s=outcome.seconds,
                group_size=n,
                bytes=traffic,
                update_norm=float(meta.get("update_norm", 0.0)),
                wait_s=max(0.0, outcome.seconds - self.config.swarm.matchmaking_time),
            )
            self.board.update(group=outcome.members)
        else:
            self.rounds_failed += 1
            self.stats.failed_rounds += 1
            self._failed_streak += 1
            if self._failed_streak == 3:
                log.warning(
                    "no averaging group formed in the last 3 rounds (%s): training alone for now. "
                    "Check that other agents use the same --run-id and that --initial-peers is reachable.",
                    outcome.error or outcome.rejected_reason,
                )
            log.info("averaging round skipped: %s", outcome.error or outcome.rejected_reason)
            self.board.alert(
                "round_failed",
                f"averaging round failed: {outcome.error or outcome.rejected_reason}",
                level=AlertLevel.INFO,
            )
        report = AveragingRoundReport(
            run_id=self.config.swarm.run_id,
            round=self.round,
            group_id=outcome.group_id,
            members=outcome.members,
            samples=int(meta.get("samples", 0)),
            compute_seconds=float(meta.get("compute_s", 0.0)),
            wait_seconds=max(0.0, outcome.seconds),
            bytes_sent=traffic,
            bytes_received=traffic,
            success=outcome.success,
        )
        self.board.record_round(report)
        if outcome.success:
            self._attest(report, float(meta.get("update_norm", 0.0)), flagged)

    # ---- evaluation, membership, state --------------------------------------------------------------
    def _tick(
        self,
        trainer: LocalTrainer,
        directory: SwarmDirectory,
        train_labels: np.ndarray,
        test_labels: np.ndarray,
        test: Any,
        loss: float,
        rate: float,
    ) -> None:
        cfg = self.config
        assert self._test_tensors is not None
        version = self._overlapped.version if self._overlapped else 0
        now_mono = time.monotonic()
        estimate = (self.swarm_eval or self.last_eval or {}).get("accuracy")
        choice = choose_evaluation(
            anchor_version=version,
            evaluated_version=self._eval_version,
            evaluated_full=bool(self.last_eval and self.last_eval.get("full")),
            evaluated_age_s=None if self._eval_record is None else now_mono - self._eval_monotonic,
            refresh_after_s=cfg.swarm.member_ttl / 2,
            accuracy=estimate,
            target=cfg.training.target_accuracy,
            estimate_every_s=2 * cfg.training.eval_interval_s,
        )
        if choice.run:  # always the first time (no evaluation yet)
            images, labels = self._test_tensors
            if not choice.full:
                images, labels = images[::SUBSAMPLE], labels[::SUBSAMPLE]
            started = time.perf_counter()
            with parameters_swapped(trainer.model, self._overlapped.anchor if self._overlapped else None):
                result = trainer.evaluate(images, labels)  # the agreed (anchor) model, not the local drift
            self.loop_seconds["evaluate"] += time.perf_counter() - started
            self.last_eval = {
                "accuracy": result.accuracy,
                "loss": result.loss,
                "total": result.total,
                "full": choice.full,
                "at": time.time(),
            }
            self.first_eval = self.first_eval or self.last_eval
            self._eval_record = EvalRecord(
                self.peer_id, result.correct, result.total, result.loss * result.total, get_dht_time()
            )
            self._eval_version, self._eval_monotonic = version, now_mono
        evaluation = self._eval_record
        started = time.perf_counter()
        self._publish_card(directory, str(trainer.device), evaluation)
        fetched = directory.read_async()  # the lookup started last tick; never blocks training
        self.loop_seconds["membership"] += time.perf_counter() - started
        if fetched is not None:
            self._cards = fetched
        cards = self._cards
        now = time.monotonic()
        for peer in directory.members(cards):
            self._last_seen[peer] = now
        for peer, card in cards.items():
            if card.left:
                self._last_seen.pop(peer, None)
        # A member counts as gone only after member_ttl seconds unseen: one incomplete DHT read must
        # not trigger a reshard (which moves data and costs a second of CPU on a busy host).
        ttl = cfg.swarm.member_ttl
        members = tuple(
            sorted({p for p, seen in self._last_seen.items() if now - seen <= ttl} | {self.peer_id})
        )
        if members != self.members:
            self._reshard(members, trainer, train_labels, test_labels, test)
        pooled = pool_evaluations(fresh_evaluations(cards, max_age=cfg.swarm.member_ttl), len(test_labels))
        accuracy = self.last_eval["accuracy"] if self.last_eval else 0.0
        if pooled is not None:
            self.swarm_eval = {**asdict(pooled), "at": time.time()}
            accuracy = pooled.accuracy
            if pooled.coverage >= 0.9 and pooled.accuracy >= cfg.training.target_accuracy:
                if self.clock.target_reached_at is None:
                    self.clock.target_reached_at = time.time()
                self._done_at = pooled.accuracy
                self._publish_card(directory, str(trainer.device), evaluation)  # tell the others at once
                self.request_stop(
                    f"swarm reached {pooled.accuracy:.4f} >= target {cfg.training.target_accuracy}"
                )
        seen = target_seen(cards)
        if seen is not None and not self._stop.is_set():
            self._done_at = seen
            self.request_stop(f"another agent saw the swarm reach the target ({seen:.4f})")
        self.board.update(accuracy=accuracy, eta_to_target_s=self._eta(accuracy))
        self.board.record_metrics(
            TrainingMetrics(
                loss=loss if math.isfinite(loss) else float((self.last_eval or {}).get("loss", math.nan)),
                accuracy=accuracy,
                epoch=trainer.epochs_done,
                step=trainer.steps_done,
                samples_per_s=rate,
            )
        )

    def _eta(self, accuracy: float) -> float | None:
        """Seconds to the target at the present rate of accuracy gain (linear in the error, last minute)."""
        now = time.time()
        self._acc_history.append((now, accuracy))
        self._acc_history = [(t, a) for t, a in self._acc_history if now - t <= 60.0]
        (t0, a0), (t1, a1) = self._acc_history[0], self._acc_history[-1]
        target = self.config.training.target_accuracy
        if a1 >= target:
            return 0.0
        if t1 - t0 < 3.0 or a1 <= a0:
            return None
        return (target - a1) / ((a1 - a0) / (t1 - t0))

    def _card(self, device: str, evaluation: EvalRecord | None = None) -> MemberCard:
        wallet = self.account.address if self.account is not None else None
        return MemberCard(
            self.peer_id, self.round, self.samples_total, device, wallet, evaluation, self._done_at
        )

    def _publish_card(
        self, directory: SwarmDirectory, device: str, evaluation: EvalRecord | None = None
    ) -> None:
        directory.publish_card(self._card(device, evaluation))

    def _wait_for_members(self, directory: SwarmDirectory, device: str) -> tuple[str, ...]:
        """Wait (up to ``bootstrap_timeout``) until ``expected_agents`` members are visible."""
        cfg = self.config.swarm
        deadline = time.monotonic() + cfg.bootstrap_timeout
        while True:
            cards = directory.read()
            members = tuple(sorted(set(directory.members(cards)) | {self.peer_id}))
            if len(members) >= max(cfg.expected_agents, 1) or self._stop.is_set():
                return members
            if target_seen(cards) is not None:
                self.request_stop(f"run {cfg.run_id!r} has already reached its target")
                return members
            if time.monotonic() > deadline:
                if cfg.expected_agents and len(members) < 2:
                    raise NoPeersError(
                        f"no other agent of run {cfg.run_id!r} appeared within {cfg.bootstrap_timeout:g} s; "
                        "check --initial-peers and --run-id, or lower --expected-agents"
                    )
                log.warning(
                    "only %d of %d expected agents visible; starting anyway",
                    len(members),
                    cfg.expected_agents,
                )
                return members
            self._publish_card(directory, device)
            time.sleep(0.3)

    def _reshard(
        self,
        members: tuple[str, ...],
        trainer: LocalTrainer,
        train_labels: np.ndarray,
        test_labels: np.ndarray,
        test: Any,
    ) -> None:
        gone = set(self.members) - set(members)
        came = set(members) - set(self.members)
        for peer in gone:
            self.board.alert("peer_lost", f"peer {peer[:12]} left the run (no heartbeat)", peer_id=peer)
        for peer in came:
            self.board.alert(
                "peer_joined", f"peer {peer[:12]} joined the run", level=AlertLevel.INFO, peer_id=peer
            )
        self.members = members
        trainer.set_shard(_shard_of(train_labels, members, "train", self.peer_id))
        index = torch.from_numpy(_shard_of(test_labels, members, "test", self.peer_id))
        self._test_tensors = (test.images[index], test.labels[index])
        self._eval_version = None  # a new slice: the last evaluation no longer describes it
        log.info("membership changed (%d members): resharded to %d samples", len(members), len(trainer.shard))

    def _swarm_has_progress(self, directory: SwarmDirectory) -> bool:
        return any(
            card.round > 0 or card.samples > 0
            for peer, card in directory.members().items()
            if peer != self.peer_id
        )

    def _shareable_state(
        self, model: torch.nn.Module, trainer: LocalTrainer
    ) -> tuple[dict[str, Any], list[torch.Tensor]]:
        """State for a newcomer: a hashed parameter package (version = round) plus momentum buffers."""
        package = pack(model, version=self.round, model_name=self.config.training.model)
        momentum = [trainer.optimizer.state.get(p, {}).get("momentum_buffer") for p in model.parameters()]
        has_momentum = all(m is not None for m in momentum)
        tensors = list(package.tensors)
        if has_momentum:
            tensors += [m.detach() for m in momentum]  # type: ignore[union-attr]
        metadata = {
            "round": self.round,
            "momentum": has_momentum,
            "package": package.header(),
            "sha256": package.sha256,
        }
        return metadata, tensors

    def _load_state_from_peers(
        self, averager: ModelAverager, model: torch.nn.Module, trainer: LocalTrainer
    ) -> None:
        self.board.update(status=NodeStatus.LOADING_STATE)
        started = time.perf_counter()
        loaded = averager.load_state_from_peers(timeout=self.config.swarm.averaging_timeout)
        if loaded is None:
            log.warning("could not load state from peers; starting from fresh parameters")
            self.board.alert("state_load_failed", "could not download the swarm's state; starting fresh")
            return
        metadata, tensors = loaded
        try:
            header = metadata["package"]
            count = len(header["names"])
            package = ParameterPackage(
                version=int(header["version"]),
                model_name=str(header["model_name"]),
                names=tuple(header["names"]),
                shapes=tuple(tuple(int(x) for x in shape) for shape in header["shapes"]),
                dtypes=tuple(header["dtypes"]),
                sha256=str(metadata["sha256"]),
                tensors=tuple(tensors[:count]),
            )
            unpack_into(model, package, source="a peer's shared state")  # checks hash, names, shapes, NaN/Inf
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("the swarm's state was rejected (%s); starting from fresh parameters", exc)
            self.board.alert("state_load_failed", f"peer state rejected: {exc}")
            return
        params = list(model.parameters())
        if metadata.get("momentum") and len(tensors) == count + len(params):
            for param, value in zip(params, tensors[count:], strict=True):
                if value.shape == param.shape and torch.isfinite(value).all():
                    trainer.optimizer.state[param]["momentum_buffer"] = value.to(param.device).clone()
        self.round = int(metadata.get("round", 0))
        self.loaded_state = {"round": self.round, "sha256": package.sha256, "at": time.time()}
        log.info("loaded the swarm's state (round %d) in %.2f s", self.round, time.perf_counter() - started)
        self.board.alert("state_loaded", f"loaded swarm state at round {self.round}", level=AlertLevel.INFO)

    def _restore(self, checkpoint: Checkpoint, model: torch.nn.Module, trainer: LocalTrainer) -> None:
        if checkpoint.model_name != self.config.training.model:
            raise UserFacingError(
                f"checkpoint is for model {checkpoint.model_name!r}, not {self.config.training.model!r}; "
                "use the same --model or start without --resume"
            )
        model.load_state_dict(checkpoint.model_state)
        trainer.optimizer.load_state_dict(checkpoint.optimizer_state)
        self.round = checkpoint.round
        self.samples_total = checkpoint.samples
        trainer.steps_done = checkpoint.step
        digest = pack(model, version=checkpoint.round, model_name=checkpoint.model_name).sha256
        self.resumed_from = {"round": checkpoint.round, "params_sha256": digest}
        log.info("resumed from checkpoint at round %d (parameters sha256 %s)", checkpoint.round, digest[:16])

    def _save(self, model: torch.nn.Module, trainer: LocalTrainer) -> Path:
        """Checkpoint the agreed (anchor) parameters: what evaluation measured and what peers share."""
        with parameters_swapped(model, self._overlapped.anchor if self._overlapped else None):
            checkpoint = Checkpoint(
                model_state={k: v.detach().clone() for k, v in model.state_dict().items()},
                optimizer_state=trainer.optimizer.state_dict(),
                round=self.round,
                samples=self.samples_total,
                step=trainer.steps_done,
                run_id=self.config.swarm.run_id,
                model_name=self.config.training.model,
            )
        return save_checkpoint(
            self.options.workdir / "checkpoints", checkpoint, keep=self.config.checkpoint.keep
        )

    # ---- reporting ---------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        snap = self.board.snapshot()
        return {
            "peer_id": self.peer_id,
            "addresses": self.visible_addresses,
            "status": snap.status.value,
            "stop_reason": self.stop_reason,
            "round": self.round,
            "rounds_ok": self.stats.ok_rounds,
            "rounds_failed": self.rounds_failed,
            "samples_total": self.samples_total,
            "compute_seconds_total": self.compute_seconds_total,
            "cpu_seconds_main": sum(os.times()[:2]),
            "loop_seconds": dict(self.loop_seconds),
            "members": len(self.members),
            "loss": snap.loss,
            "last_eval": self.last_eval,
            "first_eval": self.first_eval,
            "loaded_state": self.loaded_state,
            "resumed_from": self.resumed_from,
            "swarm_eval": self.swarm_eval,
            "clock": asdict(self.clock),
            "round_stats": self.stats.as_dict(),
            "rss_mb": self._memory_mb(),
            "policy": type(self.policy).__name__,
            "decision_seconds": self.policy.decision_seconds(),
            "policy_report": getattr(self.policy, "report", dict)(),
            "pid": os.getpid(),
        }

    def _memory_mb(self) -> float:
        """PSS of this agent's process tree, sampled at most every 10 s (reading smaps is not free)."""
        now = time.monotonic()
        if now - self._memory_at >= 10.0 or self._memory_value is None:
            self._memory_value = process_tree_pss_mb(os.getpid())
            self._memory_at = now
        return self._memory_value

    _memory_at = 0.0
    _memory_value: float | None = None

    def _write_status(self, final: bool = False) -> None:
        data = self.summary() | {"final": final, "written_at": time.time()}
        target = self.options.workdir / "status.json"
        tmp = target.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, default=str))
        os.replace(tmp, target)


_SHARDS: dict[tuple[int, tuple[str, ...], str], np.ndarray] = {}


def _shard_of(labels: np.ndarray, members: tuple[str, ...], salt: str, peer_id: str) -> np.ndarray:
    """This agent's shard for ``members``, memoised: membership that flaps back costs nothing."""
    key = (id(labels), members, salt)
    if key not in _SHARDS:
        if len(_SHARDS) > 16:
            _SHARDS.clear()
        _SHARDS[key] = assign_shards(labels, members, salt=salt)[peer_id]
    return _SHARDS[key]


def _rate(window: list[tuple[float, int]]) -> float:
    (t0, s0), (t1, s1) = window[0], window[-1]
    return (s1 - s0) / (t1 - t0) if t1 > t0 else 0.0


def _utc(timestamp: float) -> Any:
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC)


def _quietly(action: Any) -> None:
    try:
        action()
    except Exception:  # shutdown of hivemind helpers must not mask the reason we stopped
        log.debug("shutdown step failed", exc_info=True)
