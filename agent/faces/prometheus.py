"""Prometheus metrics of one agent, read from its :class:`~agent.status.StatusBoard` at scrape time.

Gauges come straight from the latest snapshot. Counters that the snapshot does not hold (rounds,
bytes, alerts) are tallied from the board's event stream, because the board's histories are bounded
and would make a counter go backwards once they wrap. Units follow Prometheus conventions: seconds,
bytes, ratios; rewards stay in wei.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
    StateSetMetricFamily,
)
from prometheus_client.registry import Collector

from agent.protocol.messages import AveragingRoundReport, NodeStatus
from agent.status import StatusBoard, StatusEvent

PREFIX = "hypergpu"


class _RoundTally:
    """Running totals over every round and alert seen since the collector started."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.rounds: Counter[str] = Counter()
        self.bytes_sent = 0
        self.bytes_received = 0
        self.compute_seconds = 0.0
        self.wait_seconds = 0.0
        self.alerts: Counter[tuple[str, str]] = Counter()

    def add_round(self, report: AveragingRoundReport) -> None:
        with self.lock:
            self.rounds["success" if report.success else "failed"] += 1
            self.bytes_sent += report.bytes_sent
            self.bytes_received += report.bytes_received
            self.compute_seconds += report.compute_seconds
            self.wait_seconds += report.wait_seconds

    def add_alert(self, kind: str, level: str) -> None:
        with self.lock:
            self.alerts[(kind, level)] += 1


class BoardCollector(Collector):
    """A custom collector: ``registry.register(BoardCollector(board))``, then :meth:`start`.

    Args:
        board: the agent's status board.
    """

    def __init__(self, board: StatusBoard) -> None:
        self._board = board
        self._tally = _RoundTally()
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> None:
        """Count the rounds and alerts already on the board, then follow new ones."""
        if self._unsubscribe is not None:
            return
        for report in self._board.rounds():
            self._tally.add_round(report)
        for alert in self._board.alerts():
            self._tally.add_alert(alert.kind, alert.level.value)
        self._unsubscribe = self._board.subscribe(self._on_event)

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _on_event(self, event: StatusEvent) -> None:
        if event.kind == "round":
            self._tally.add_round(AveragingRoundReport.model_validate(event.data))
        elif event.kind == "alert":
            self._tally.add_alert(str(event.data.get("kind", "")), str(event.data.get("level", "")))

    def collect(self) -> Iterator[Metric]:
        yield from self._training()
        yield from self._network()
        yield from self._chain()

    def _training(self) -> Iterator[Metric]:
        snap = self._board.snapshot()
        info = InfoMetricFamily(f"{PREFIX}_agent", "Who this agent is")
        info.add_metric(
            [],
            {
                "run_id": snap.run_id,
                "peer_id": snap.peer_id,
                "device": snap.device,
                "device_name": snap.device_name,
            },
        )
        yield info
        state = StateSetMetricFamily(f"{PREFIX}_agent_state", "Lifecycle state of this agent")
        state.add_metric([], {s.value: snap.status == s for s in NodeStatus})
        yield state

        def gauge(name: str, doc: str, value: float | None) -> Iterator[Metric]:
            if value is not None:
                yield GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value)

        yield from gauge("training_loss", "Latest training loss", snap.loss)
        yield from gauge("training_accuracy_ratio", "Latest test accuracy (0..1)", snap.accuracy)
        yield from gauge("training_samples_per_second", "Local training throughput", snap.samples_per_s)
        yield from gauge("training_epoch", "Passes over this agent's shard, fractional", snap.epoch)
        yield from gauge("training_round", "Current averaging round", snap.round)
        yield from gauge("training_local_batch_size", "Local batch size as adapted", snap.local_batch_size)
        yield from gauge("training_local_steps", "Local steps between rounds as adapted", snap.local_steps)
        yield from gauge("training_target_accuracy_ratio", "The run's target accuracy", snap.target_accuracy)
        yield from gauge(
            "training_eta_to_target_seconds", "Time to target at the present rate", snap.eta_to_target_s
        )
        yield from gauge("training_paused", "1 when local training is paused", float(snap.paused))
        yield CounterMetricFamily(
            f"{PREFIX}_training_samples", "Training samples processed", value=snap.samples_total
        )
        yield CounterMetricFamily(f"{PREFIX}_training_steps", "Local optimizer steps", value=snap.step)

    def _network(self) -> Iterator[Metric]:
        snap = self._board.snapshot()
        tally = self._tally
        with tally.lock:
            rounds = dict(tally.rounds)
            sent, received = tally.bytes_sent, tally.bytes_received
            compute, wait = tally.compute_seconds, tally.wait_seconds
            alerts = dict(tally.alerts)
        family = CounterMetricFamily(
            f"{PREFIX}_averaging_rounds", "Averaging rounds by outcome", labels=["outcome"]
        )
        for outcome in ("success", "failed"):
            family.add_metric([outcome], rounds.get(outcome, 0))
        yield family
        yield CounterMetricFamily(f"{PREFIX}_averaging_sent_bytes", "Bytes sent in averaging", value=sent)
        yield CounterMetricFamily(
            f"{PREFIX}_averaging_received_bytes", "Bytes received in averaging", value=received
        )
        yield CounterMetricFamily(
            f"{PREFIX}_averaging_compute_seconds", "Seconds computing between rounds", value=compute
        )
        yield CounterMetricFamily(
            f"{PREFIX}_averaging_wait_seconds", "Seconds waiting for a group", value=wait
        )
        alert_family = CounterMetricFamily(f"{PREFIX}_alerts", "Alerts raised", labels=["kind", "level"])
        for (kind, level), count in sorted(alerts.items()):
            alert_family.add_metric([kind, level], count)
        yield alert_family
        yield GaugeMetricFamily(f"{PREFIX}_peers", "Peers this agent knows", value=len(snap.peers))
        yield GaugeMetricFamily(f"{PREFIX}_group_size", "Members of the current group", value=len(snap.group))
        rtt = GaugeMetricFamily(f"{PREFIX}_peer_rtt_seconds", "Round-trip time to a peer", labels=["peer_id"])
        jitter = GaugeMetricFamily(
            f"{PREFIX}_peer_jitter_seconds", "RTT jitter to a peer", labels=["peer_id"]
        )
        loss = GaugeMetricFamily(
            f"{PREFIX}_peer_loss_ratio", "Failed exchanges with a peer", labels=["peer_id"]
        )
        for peer in snap.peers:
            if peer.rtt_ms is not None:
                rtt.add_metric([peer.peer_id], peer.rtt_ms / 1000)
            if peer.jitter_ms is not None:
                jitter.add_metric([peer.peer_id], peer.jitter_ms / 1000)
            if peer.loss is not None:
                loss.add_metric([peer.peer_id], peer.loss)
        yield rtt
        yield jitter
        yield loss

    def _chain(self) -> Iterator[Metric]:
        rewards = self._board.snapshot().rewards
        yield GaugeMetricFamily(
            f"{PREFIX}_chain_configured", "1 when a chain is configured", value=float(rewards.configured)
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_rewards_pending_wei", "Rewards not yet claimed", value=rewards.pending_wei
        )
        yield GaugeMetricFamily(
            f"{PREFIX}_rewards_claimed_wei", "Rewards claimed so far", value=rewards.claimed_wei
        )


def board_registry(board: StatusBoard) -> tuple[CollectorRegistry, BoardCollector]:
    """A registry of its own (so several agents in one process never clash) with the board and process."""
    registry = CollectorRegistry()
    collector = BoardCollector(board)
    registry.register(collector)
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry, collector
