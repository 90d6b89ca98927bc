"""The one status object the agent updates and its faces (TUI, web page, logs) read.

The training loop calls :meth:`StatusBoard.update`, :meth:`StatusBoard.record_metrics`,
:meth:`StatusBoard.record_round` and :meth:`StatusBoard.alert`; faces call :meth:`StatusBoard.snapshot`,
:meth:`StatusBoard.history` and subscribe to the live :class:`StatusEvent` stream. Thread-safe: the
training loop, hivemind callbacks and an asyncio web server may all touch it.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import threading
from collections import deque
from collections.abc import Callable
from datetime import datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agent.protocol.messages import AveragingRoundReport, NodeStatus, TrainingMetrics
from agent.protocol.timeutil import UtcDatetime, utc_now


class AlertLevel(StrEnum):
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"


class Alert(BaseModel):
    """Something an operator should notice: a peer degraded or lost, a round failed, a quarantine."""

    model_config = ConfigDict(frozen=True)

    timestamp: UtcDatetime = Field(default_factory=utc_now)
    level: AlertLevel = AlertLevel.INFO
    kind: str = Field(description="peer_degraded | peer_lost | round_failed | quarantined | readmitted | ...")
    message: str
    peer_id: str | None = None


class PeerView(BaseModel):
    """One row of the peers table."""

    model_config = ConfigDict(frozen=True)

    peer_id: str
    rtt_ms: float | None = None
    jitter_ms: float | None = None
    loss: float | None = None
    quality: str = Field(default="unknown", description="excellent | good | fair | poor | critical | unknown")
    in_group: bool = False
    last_seen: UtcDatetime | None = None


class RttMatrix(BaseModel):
    """The swarm's round-trip times as this agent knows them (from the DHT); empty until measured."""

    model_config = ConfigDict(frozen=True)

    peers: tuple[str, ...] = Field(default=(), description="peer ids, in row and column order")
    rtt_ms: tuple[tuple[float | None, ...], ...] = Field(
        default=(), description="rtt_ms[i][j]: milliseconds from peers[i] to peers[j]; null = not measured"
    )

    @model_validator(mode="after")
    def _square(self) -> RttMatrix:
        size = len(self.peers)
        if len(self.rtt_ms) != size or any(len(row) != size for row in self.rtt_ms):
            raise ValueError(f"rtt_ms must be a {size}x{size} matrix, one row and column per peer")
        return self


class RewardsView(BaseModel):
    """Rewards as far as this agent knows them. ``configured`` is False until a chain is set up."""

    model_config = ConfigDict(frozen=True)

    configured: bool = False
    pending_wei: int = 0
    claimed_wei: int = 0
    note: str = "chain not configured"


class AgentSnapshot(BaseModel):
    """Everything a face shows at one moment."""

    model_config = ConfigDict(frozen=True)

    run_id: str = ""
    peer_id: str = ""
    wallet: str | None = None
    device: str = "cpu"
    device_name: str = ""
    status: NodeStatus = NodeStatus.JOINING
    round: int = 0
    epoch: float = 0.0
    step: int = 0
    loss: float | None = None
    accuracy: float | None = None
    samples_per_s: float = 0.0
    samples_total: int = 0
    local_batch_size: int = 0
    local_steps: int = 0
    target_accuracy: float | None = None
    eta_to_target_s: float | None = None
    group: tuple[str, ...] = ()
    peers: tuple[PeerView, ...] = ()
    rtt_matrix: RttMatrix = Field(default_factory=RttMatrix)
    rewards: RewardsView = Field(default_factory=RewardsView)
    web_url: str | None = None
    paused: bool = False
    started_at: UtcDatetime = Field(default_factory=utc_now)
    updated_at: UtcDatetime = Field(default_factory=utc_now)


class StatusEvent(BaseModel):
    """One live update. ``kind`` is status | metrics | round | alert | peers."""

    model_config = ConfigDict(frozen=True)

    seq: int
    kind: str
    timestamp: UtcDatetime = Field(default_factory=utc_now)
    data: dict[str, Any]


Subscriber = Callable[[StatusEvent], None]


class StatusBoard:
    """Holds the latest :class:`AgentSnapshot`, bounded histories, and fans events out to subscribers.

    Args:
        history_len: how many metrics points, rounds and alerts to keep (oldest dropped first).
    """

    def __init__(self, history_len: int = 2000) -> None:
        self._lock = threading.Lock()
        self._snapshot = AgentSnapshot()
        self._metrics: deque[TrainingMetrics] = deque(maxlen=history_len)
        self._rounds: deque[AveragingRoundReport] = deque(maxlen=history_len)
        self._alerts: deque[Alert] = deque(maxlen=history_len)
        self._subscribers: list[Subscriber] = []
        self._seq = itertools.count(1)

    # ---- writers (the agent) -------------------------------------------------------------------
    def update(self, **fields: Any) -> AgentSnapshot:
        """Replace some snapshot fields and emit a ``status`` event with the changed ones."""
        with self._lock:
            self._snapshot = self._snapshot.model_copy(update={**fields, "updated_at": utc_now()})
            snap = self._snapshot
        self._emit("status", snap.model_dump(mode="json", include=set(fields) | {"updated_at"}))
        return snap

    def record_metrics(self, metrics: TrainingMetrics) -> None:
        with self._lock:
            self._metrics.append(metrics)
        self._emit("metrics", metrics.model_dump(mode="json"))

    def record_round(self, report: AveragingRoundReport) -> None:
        with self._lock:
            self._rounds.append(report)
        self._emit("round", report.model_dump(mode="json"))

    def alert(
        self,
        kind: str,
        message: str,
        *,
        level: AlertLevel = AlertLevel.WARNING,
        peer_id: str | None = None,
        timestamp: datetime | None = None,
    ) -> Alert:
        """Record an alert; ``timestamp`` defaults to now (give one to replay or to make tests repeatable)."""
        moment = timestamp or utc_now()
        item = Alert(kind=kind, message=message, level=level, peer_id=peer_id, timestamp=moment)
        with self._lock:
            self._alerts.append(item)
        self._emit("alert", item.model_dump(mode="json"))
        return item

    def set_peers(self, peers: list[PeerView]) -> None:
        self.update(peers=tuple(peers))

    # ---- readers (the faces) -------------------------------------------------------------------
    def snapshot(self) -> AgentSnapshot:
        with self._lock:
            return self._snapshot

    def metrics_history(self, since: datetime | None = None) -> list[TrainingMetrics]:
        with self._lock:
            items = list(self._metrics)
        return [m for m in items if since is None or m.timestamp > since]

    def rounds(self) -> list[AveragingRoundReport]:
        with self._lock:
            return list(self._rounds)

    def alerts(self) -> list[Alert]:
        with self._lock:
            return list(self._alerts)

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(event)`` for every future event, from the writer's thread.

        Returns a function that unsubscribes.
        """
        with self._lock:
            self._subscribers.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._subscribers:
                    self._subscribers.remove(callback)

        return unsubscribe

    def subscribe_asyncio(
        self, loop: asyncio.AbstractEventLoop, maxsize: int = 1000
    ) -> tuple[asyncio.Queue[StatusEvent], Callable[[], None]]:
        """An asyncio queue fed from any thread; for SSE handlers. Drops events when the reader lags."""
        queue: asyncio.Queue[StatusEvent] = asyncio.Queue(maxsize=maxsize)

        def put(event: StatusEvent) -> None:
            if not queue.full():
                queue.put_nowait(event)

        return queue, self.subscribe(lambda event: loop.call_soon_threadsafe(put, event))

    def _emit(self, kind: str, data: dict[str, Any]) -> None:
        event = StatusEvent(seq=next(self._seq), kind=kind, data=data)
        with self._lock:
            subscribers = list(self._subscribers)
        for callback in subscribers:
            with contextlib.suppress(Exception):  # a broken face must never break training
                callback(event)
