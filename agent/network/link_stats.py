"""Link statistics per peer: RTT, jitter, loss, reliability, bandwidth, trend and a quality class.

Pure decision logic: nothing here sends a packet. The agent's monitor feeds measurements in
(``PeerMonitor.observe_ping`` after each libp2p ping, ``observe_transfer`` after each averaging round or
state download) and reads decisions out (``summary()``, the alerts each ``observe_*`` returns, and
``encode_link_summary`` for the DHT).

Units: milliseconds for RTT and jitter, seconds for durations, bytes for sizes, megabit/s for bandwidth,
fractions in [0, 1] for loss and reliability, points in [0, 100] for the quality score.
"""

from __future__ import annotations

import hashlib
import math
import statistics
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

import msgpack
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from agent.protocol.messages import NetworkMetrics
from agent.protocol.timeutil import UtcDatetime, utc_now


class QualityClass(StrEnum):
    """Quality of one link, best first. Values match ``agent.status.PeerView.quality``."""

    EXCELLENT = "excellent"
    GOOD = "good"
    FAIR = "fair"
    POOR = "poor"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """0 for EXCELLENT up to 4 for CRITICAL: a larger rank is a worse link."""
        return _CLASS_ORDER.index(self)


_CLASS_ORDER: tuple[QualityClass, ...] = tuple(QualityClass)

# Lower score bound of each class, calibrated on the reference profiles of issue 3 as the network
# emulator (agent/network/profiles.py) applies them: a fixed round-trip time drawn from the profile's
# range, small jitter, and the profile's loss. The bounds sit where neighbouring profiles meet:
# EXCELLENT is a LAN (RTT under ~8 ms, no loss); GOOD/FAIR meet at 50 ms RTT with ~0.3% loss; FAIR/POOR
# at 150 ms with ~2% loss; POOR/CRITICAL between "poor" at its worst (300 ms, 5%) and "unstable"
# (50-500 ms varying, 10%). Loss here is the emulator's per-direction segment loss, so a ping (one
# segment each way) is lost about twice as often: 0.2%, 2%, 10% and 19% for good..unstable.
# Nominal scores: perfect 100, good ~85, average ~70, poor ~48, unstable ~25.
CLASS_LOWER_BOUNDS: Mapping[QualityClass, float] = {
    QualityClass.EXCELLENT: 95.0,
    QualityClass.GOOD: 76.0,
    QualityClass.FAIR: 58.0,
    QualityClass.POOR: 35.0,
    QualityClass.CRITICAL: 0.0,
}


def class_of_score(score: float) -> QualityClass:
    """The quality class whose band contains ``score`` (points, 0-100), with no hysteresis."""
    for quality in _CLASS_ORDER:
        if score >= CLASS_LOWER_BOUNDS[quality]:
            return quality
    return QualityClass.CRITICAL


def _class_band(quality: QualityClass) -> tuple[float, float]:
    """[lower, upper) score band of ``quality``; the upper bound of EXCELLENT is +inf."""
    lower = CLASS_LOWER_BOUNDS[quality]
    if quality.rank == 0:
        return lower, math.inf
    return lower, CLASS_LOWER_BOUNDS[_CLASS_ORDER[quality.rank - 1]]


class Trend(StrEnum):
    """Direction of a link's RTT over the last few samples."""

    IMPROVING = "improving"
    STABLE = "stable"
    DEGRADING = "degrading"


@dataclass(frozen=True)
class ScoreWeights:
    """How much latency, loss and reliability count in the quality score (normalised to sum 1).

    ``latency_floor_ms`` scores 100 and ``latency_ceiling_ms`` scores 0, log-linear in between (RTT
    matters by ratios: 10 -> 20 ms hurts as much as 100 -> 200 ms). ``loss_at_zero`` is the loss
    fraction (and the unreliability fraction) that scores 0, linear from 100 at no loss.
    """

    latency: float = 0.5
    loss: float = 0.3
    reliability: float = 0.2
    latency_floor_ms: float = 5.0
    latency_ceiling_ms: float = 1000.0
    loss_at_zero: float = 0.3


@dataclass(frozen=True)
class LinkConfig:
    """Knobs of the link estimators. Defaults suit one ping per peer per second.

    - ``ewma_alpha``: weight of a new RTT sample in the EWMA (TCP's SRTT uses 1/8).
    - ``jitter_window``: RTT samples whose standard deviation is the jitter.
    - ``loss_window``: most recent pings over which loss is counted (200 pings resolve 1% loss).
    - ``transfer_window``: most recent transfers for reliability and bandwidth.
    - ``trend_window`` / ``trend_threshold``: EWMA values fitted by a line; a relative change over the
      window beyond +-threshold is DEGRADING / IMPROVING.
    - ``min_samples_for_class``: RTT samples before a class is given (until then the class is None).
    - ``hysteresis_margin`` (points) and ``hysteresis_count`` (consecutive samples): a class changes only
      after the score has been outside its band by more than the margin that many times in a row.
    - ``unreachable_after``: consecutive failed exchanges after which a peer "stopped answering".
    - ``min_transfer_bytes``: smaller transfers are latency-bound and do not update the bandwidth.
    """

    ewma_alpha: float = 0.125
    jitter_window: int = 20
    loss_window: int = 200
    transfer_window: int = 50
    trend_window: int = 10
    trend_threshold: float = 0.15
    min_samples_for_class: int = 10
    hysteresis_margin: float = 3.0
    hysteresis_count: int = 3
    unreachable_after: int = 5
    min_transfer_bytes: int = 64 * 1024
    weights: ScoreWeights = field(default_factory=ScoreWeights)

    def __post_init__(self) -> None:
        if not 0 < self.ewma_alpha <= 1:
            raise ValueError(f"ewma_alpha must be in (0, 1], got {self.ewma_alpha}")
        for name in (
            "jitter_window",
            "loss_window",
            "transfer_window",
            "hysteresis_count",
            "unreachable_after",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.trend_window < 2:
            raise ValueError(f"trend_window must be at least 2, got {self.trend_window}")


def quality_score(
    rtt_ms: float, jitter_ms: float, loss: float, reliability: float, weights: ScoreWeights
) -> float:
    """Weighted quality score in points (0 worst, 100 best).

    Latency is judged on ``rtt_ms + jitter_ms``, a rough upper percentile of the RTT: a jittery link
    makes a group wait for its slow exchanges. ``loss`` and ``reliability`` are fractions.
    """
    effective_ms = max(rtt_ms + jitter_ms, weights.latency_floor_ms)
    span = math.log(weights.latency_ceiling_ms / weights.latency_floor_ms)
    latency_points = 100.0 * min(
        1.0, max(0.0, 1.0 - math.log(effective_ms / weights.latency_floor_ms) / span)
    )
    loss_points = 100.0 * max(0.0, 1.0 - loss / weights.loss_at_zero)
    reliability_points = 100.0 * max(0.0, 1.0 - (1.0 - reliability) / weights.loss_at_zero)
    total = weights.latency + weights.loss + weights.reliability
    return (
        weights.latency * latency_points
        + weights.loss * loss_points
        + weights.reliability * reliability_points
    ) / total


class HysteresisClassifier:
    """Turns a stream of scores into a quality class that does not flap.

    The first score sets the class directly. Later, the class moves (to the class of the latest score,
    possibly several classes at once) only after ``count`` consecutive scores lie more than ``margin``
    points outside the current class's band; one score back inside resets the count.
    """

    def __init__(self, margin: float, count: int) -> None:
        self.margin = margin
        self.count = count
        self.quality: QualityClass | None = None
        self._outside = 0

    def update(self, score: float) -> QualityClass:
        """Feed one score (points) and return the class after it."""
        if self.quality is None:
            self.quality = class_of_score(score)
            return self.quality
        lower, upper = _class_band(self.quality)
        if score < lower - self.margin or score >= upper + self.margin:
            self._outside += 1
            if self._outside >= self.count:
                self.quality = class_of_score(score)
                self._outside = 0
        else:
            self._outside = 0
        return self.quality

    def force(self, quality: QualityClass) -> None:
        """Set the class now, bypassing hysteresis (used when a peer stops answering)."""
        self.quality = quality
        self._outside = 0


class LinkEstimator:
    """Statistics of the link from this agent to one peer. Feed it with ``add_ping`` and ``add_transfer``."""

    def __init__(self, config: LinkConfig | None = None) -> None:
        self.config = config or LinkConfig()
        self.rtt_ewma_ms: float | None = None
        self.rtt_samples = 0
        self._recent_rtts: deque[float] = deque(maxlen=self.config.jitter_window)
        self._ping_outcomes: deque[bool] = deque(maxlen=self.config.loss_window)
        self._transfer_outcomes: deque[bool] = deque(maxlen=self.config.transfer_window)
        # (bytes, seconds) of successful transfers large enough to be bandwidth-bound.
        self._throughput: deque[tuple[int, float]] = deque(maxlen=self.config.transfer_window)
        self._ewma_history: deque[float] = deque(maxlen=self.config.trend_window)
        self._classifier = HysteresisClassifier(self.config.hysteresis_margin, self.config.hysteresis_count)
        self.consecutive_failures = 0

    def add_ping(self, rtt_ms: float | None) -> None:
        """One ping: its round-trip time in milliseconds, or None when it got no answer."""
        if rtt_ms is None:
            self._ping_outcomes.append(False)
            self._failed()
            return
        if not math.isfinite(rtt_ms) or rtt_ms < 0:
            raise ValueError(f"rtt_ms must be a finite number >= 0 or None for a lost ping, got {rtt_ms}")
        self._ping_outcomes.append(True)
        self.consecutive_failures = 0
        alpha = self.config.ewma_alpha
        self.rtt_ewma_ms = (
            rtt_ms if self.rtt_ewma_ms is None else (1 - alpha) * self.rtt_ewma_ms + alpha * rtt_ms
        )
        self.rtt_samples += 1
        self._recent_rtts.append(rtt_ms)
        self._ewma_history.append(self.rtt_ewma_ms)
        if self.rtt_samples >= self.config.min_samples_for_class:
            self._classifier.update(self.score)

    def add_transfer(self, num_bytes: int, seconds: float, ok: bool) -> None:
        """One real exchange (averaging round, state download): bytes moved, seconds taken, success."""
        if num_bytes < 0 or seconds < 0 or not math.isfinite(seconds):
            raise ValueError(
                f"a transfer needs bytes >= 0 and finite seconds >= 0, got {num_bytes}, {seconds}"
            )
        self._transfer_outcomes.append(ok)
        if not ok:
            self._failed()
            return
        self.consecutive_failures = 0
        if num_bytes >= self.config.min_transfer_bytes and seconds > 0:
            self._throughput.append((num_bytes, seconds))

    def _failed(self) -> None:
        self.consecutive_failures += 1
        if self.unreachable:
            self._classifier.force(QualityClass.CRITICAL)

    @property
    def unreachable(self) -> bool:
        """True after ``unreachable_after`` failed exchanges in a row."""
        return self.consecutive_failures >= self.config.unreachable_after

    @property
    def jitter_ms(self) -> float:
        """Standard deviation of the last ``jitter_window`` RTT samples (0 with fewer than 2)."""
        if len(self._recent_rtts) < 2:
            return 0.0
        return statistics.pstdev(self._recent_rtts)

    @property
    def loss(self) -> float:
        """Fraction of the last ``loss_window`` pings that got no answer (0 before any ping)."""
        if not self._ping_outcomes:
            return 0.0
        return self._ping_outcomes.count(False) / len(self._ping_outcomes)

    @property
    def reliability(self) -> float:
        """Successful / attempted transfers in the last ``transfer_window``; 1 - loss before any."""
        if not self._transfer_outcomes:
            return 1.0 - self.loss
        return self._transfer_outcomes.count(True) / len(self._transfer_outcomes)

    @property
    def bandwidth_mbps(self) -> float | None:
        """Total bytes / total seconds of recent large successful transfers, in megabit/s; None if none."""
        if not self._throughput:
            return None
        total_bytes = sum(size for size, _ in self._throughput)
        total_seconds = sum(seconds for _, seconds in self._throughput)
        return total_bytes * 8 / total_seconds / 1e6

    @property
    def trend(self) -> Trend:
        """Slope of the recent RTT EWMA, as a relative change over the window."""
        history = self._ewma_history
        if len(history) < history.maxlen or self.rtt_ewma_ms is None:
            return Trend.STABLE
        slope = float(np.polyfit(np.arange(len(history)), np.asarray(history), 1)[0])
        mean = statistics.fmean(history)
        if mean <= 0:
            return Trend.STABLE
        relative_change = slope * (len(history) - 1) / mean
        if relative_change > self.config.trend_threshold:
            return Trend.DEGRADING
        if relative_change < -self.config.trend_threshold:
            return Trend.IMPROVING
        return Trend.STABLE

    @property
    def score(self) -> float:
        """Quality score in points right now (no hysteresis); 0 while unreachable or never answered."""
        if self.rtt_ewma_ms is None or self.unreachable:
            return 0.0
        return quality_score(
            self.rtt_ewma_ms, self.jitter_ms, self.loss, self.reliability, self.config.weights
        )

    @property
    def quality(self) -> QualityClass | None:
        """Class with hysteresis; None before ``min_samples_for_class`` RTTs; CRITICAL if unreachable."""
        return self._classifier.quality


class AlertKind(StrEnum):
    """What happened to a peer's link. Values match ``agent.status.Alert.kind``."""

    DEGRADED = "peer_degraded"
    UNREACHABLE = "peer_lost"
    RECOVERED = "peer_recovered"


class LinkAlert(BaseModel):
    """An event for the log, the TUI and the web page about one peer's link."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    kind: AlertKind
    peer_id: str
    previous: QualityClass | None = Field(description="class before the event")
    current: QualityClass | None = Field(description="class after the event")
    message: str
    timestamp: UtcDatetime = Field(default_factory=utc_now)


class PeerLinkReport(NetworkMetrics):
    """A :class:`NetworkMetrics` row plus the verdicts drawn from it."""

    quality: QualityClass | None = Field(description="class with hysteresis; None until enough samples")
    score: float = Field(ge=0, le=100, description="quality score in points, without hysteresis")
    reliability: float = Field(ge=0, le=1, description="successful / attempted transfers")
    trend: Trend
    samples: int = Field(ge=0, description="RTT samples so far")
    reachable: bool


class PeerMonitor:
    """All of this agent's link estimators, keyed by peer id, and the alerts they raise.

    ``now`` gives alert timestamps (inject a fixed clock in tests).
    """

    def __init__(self, config: LinkConfig | None = None, now: Callable[[], datetime] = utc_now) -> None:
        self.config = config or LinkConfig()
        self._now = now
        self._links: dict[str, LinkEstimator] = {}

    def estimator(self, peer_id: str) -> LinkEstimator:
        """The estimator of ``peer_id``, created on first use."""
        if peer_id not in self._links:
            self._links[peer_id] = LinkEstimator(self.config)
        return self._links[peer_id]

    def peers(self) -> list[str]:
        """Peer ids with any observation, sorted."""
        return sorted(self._links)

    def forget(self, peer_id: str) -> None:
        """Drop a peer that left the swarm."""
        self._links.pop(peer_id, None)

    def observe_ping(self, peer_id: str, rtt_ms: float | None) -> list[LinkAlert]:
        """Record one ping to ``peer_id`` (milliseconds, or None if lost); returns the alerts it raised."""
        link = self.estimator(peer_id)
        before = (link.quality, link.unreachable)
        link.add_ping(rtt_ms)
        return self._alerts(peer_id, link, *before)

    def observe_transfer(self, peer_id: str, num_bytes: int, seconds: float, ok: bool) -> list[LinkAlert]:
        """Record one real exchange with ``peer_id``; returns the alerts it raised."""
        link = self.estimator(peer_id)
        before = (link.quality, link.unreachable)
        link.add_transfer(num_bytes, seconds, ok)
        return self._alerts(peer_id, link, *before)

    def _alerts(
        self, peer_id: str, link: LinkEstimator, was: QualityClass | None, was_unreachable: bool
    ) -> list[LinkAlert]:
        now_quality = link.quality
        if link.unreachable and not was_unreachable:
            kind = AlertKind.UNREACHABLE
            message = (
                f"peer {peer_id} stopped answering ({link.consecutive_failures} failed exchanges in a row)"
            )
        elif was_unreachable and not link.unreachable:
            kind = AlertKind.RECOVERED
            message = f"peer {peer_id} answers again"
        elif was is not None and now_quality is not None and now_quality.rank > was.rank:
            kind = AlertKind.DEGRADED
            message = (
                f"link to {peer_id} degraded from {was} to {now_quality} (RTT {link.rtt_ewma_ms:.0f} ms, "
                f"jitter {link.jitter_ms:.0f} ms, loss {link.loss:.1%}, score {link.score:.0f})"
            )
        else:
            return []
        alert = LinkAlert(
            kind=kind,
            peer_id=peer_id,
            previous=was,
            current=now_quality,
            message=message,
            timestamp=self._now(),
        )
        return [alert]

    def report(self, peer_id: str) -> PeerLinkReport | None:
        """The current report for one peer, or None before its first answered ping."""
        link = self._links.get(peer_id)
        if link is None or link.rtt_ewma_ms is None:
            return None
        return PeerLinkReport(
            peer_id=peer_id,
            rtt_ms=link.rtt_ewma_ms,
            jitter_ms=link.jitter_ms,
            loss=link.loss,
            bandwidth_mbps=link.bandwidth_mbps,
            timestamp=self._now(),
            quality=link.quality,
            score=link.score,
            reliability=link.reliability,
            trend=link.trend,
            samples=link.rtt_samples,
            reachable=not link.unreachable,
        )

    def summary(self) -> list[PeerLinkReport]:
        """One report per peer that has answered at least one ping, sorted by peer id."""
        reports = (self.report(peer_id) for peer_id in self.peers())
        return [report for report in reports if report is not None]


# --- compact DHT encoding -------------------------------------------------------------------------

SUMMARY_FORMAT_VERSION = 1
PEER_KEY_BYTES = 6
"""Peers are named by 6 bytes of BLAKE2b of their id: 48 bits make a collision unlikely below ~10^6 peers."""
MAX_SUMMARY_BYTES = 64 * 1024
_RTT_UNIT_MS = 0.1
_MAX_RTT_UNITS = 2**32 - 1


@dataclass(frozen=True)
class CompactLink:
    """One link as published in the DHT: RTT (milliseconds, 0.1 ms steps), loss (0.1% steps), class."""

    rtt_ms: float
    loss: float
    quality: QualityClass | None


def peer_key(peer_id: str) -> bytes:
    """Short stable key of a peer id for the compact summary."""
    return hashlib.blake2b(peer_id.encode(), digest_size=PEER_KEY_BYTES).digest()


def encode_link_summary(reports: Iterable[NetworkMetrics]) -> bytes:
    """Pack link rows into a few bytes per peer (about 14 bytes each: 16 peers take ~230 bytes).

    Layout (msgpack): ``[version, [[peer_key, rtt_0.1ms, loss_permille, class_rank or -1], ...]]``.
    Rows that are :class:`PeerLinkReport` carry their class; plain :class:`NetworkMetrics` rows carry -1.
    """
    rows = []
    for report in sorted(reports, key=lambda row: row.peer_id):
        quality = getattr(report, "quality", None)
        rows.append(
            [
                peer_key(report.peer_id),
                min(round(report.rtt_ms / _RTT_UNIT_MS), _MAX_RTT_UNITS),
                round(report.loss * 1000),
                quality.rank if quality is not None else -1,
            ]
        )
    return msgpack.packb([SUMMARY_FORMAT_VERSION, rows], use_bin_type=True)


def decode_link_summary(blob: bytes, known_peers: Iterable[str]) -> dict[str, CompactLink]:
    """Unpack a summary published by another agent into ``{peer_id: CompactLink}``.

    The blob comes from the network, so it is checked field by field; rows whose key matches none of
    ``known_peers`` are dropped (the publisher knows peers this agent has not met yet). Raises
    ``ValueError`` naming the problem when the blob is malformed.
    """
    if len(blob) > MAX_SUMMARY_BYTES:
        raise ValueError(f"link summary is {len(blob)} bytes, more than the {MAX_SUMMARY_BYTES} allowed")
    try:
        payload = msgpack.unpackb(blob, raw=False, strict_map_key=True)
    except (msgpack.UnpackException, ValueError, TypeError) as error:
        raise ValueError(f"link summary is not valid msgpack: {error}") from error
    if not (isinstance(payload, list) and len(payload) == 2 and isinstance(payload[1], list)):
        raise ValueError("link summary must be [version, rows]")
    if payload[0] != SUMMARY_FORMAT_VERSION:
        raise ValueError(
            f"link summary version {payload[0]!r} is not supported (expected {SUMMARY_FORMAT_VERSION})"
        )
    by_key = {peer_key(peer_id): peer_id for peer_id in known_peers}
    links: dict[str, CompactLink] = {}
    for row in payload[1]:
        if not (isinstance(row, list) and len(row) == 4 and isinstance(row[0], bytes)):
            raise ValueError(f"link summary row {row!r} must be [peer_key, rtt, loss, class]")
        key, rtt_units, loss_permille, rank = row
        if not all(isinstance(value, int) and not isinstance(value, bool) for value in row[1:]):
            raise ValueError(f"link summary row {row!r} must hold integers after the key")
        if rtt_units < 0 or not 0 <= loss_permille <= 1000 or not -1 <= rank < len(_CLASS_ORDER):
            raise ValueError(f"link summary row {row!r} is out of range")
        peer_id = by_key.get(key)
        if peer_id is None:
            continue
        quality = _CLASS_ORDER[rank] if rank >= 0 else None
        links[peer_id] = CompactLink(
            rtt_ms=rtt_units * _RTT_UNIT_MS, loss=loss_permille / 1000, quality=quality
        )
    return links
