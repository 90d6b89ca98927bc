"""Choosing who averages: rank peers by useful work per unit of time, quarantine those who break rounds.

A peer's score is an EWMA over its rounds of ``compute / (compute + wait)`` (the share of its time that
went into training rather than waiting), times penalties: a round it broke (timed out, dropped out)
scores 0, each retry multiplies by ``retry_penalty``, and an update far from the group's (relative
distance above ``divergence_tolerance``) is scaled down in proportion.

A peer that breaks ``quarantine_breaks`` of its last ``quarantine_window`` rounds is quarantined for a
cool-down that doubles with each strike, capped at ``max_cooldown_s``; then it is on probation (in
rounds, but with a small averaging weight) for ``probation_rounds``; a clean probation re-admits it, a
broken one sends it back with the next strike. Strikes fade after ``forgive_after_s`` of good conduct,
and the cap means nobody is shut out for good. Every exclusion is kept in :attr:`PeerSelector.history`.

Time comes from an injected ``clock`` (seconds, e.g. ``time.monotonic``); state changes that depend
only on time (end of a cool-down) happen on the next call that looks at the peer.
"""

from __future__ import annotations

import math
import statistics
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import StrEnum


class RoundOutcome(StrEnum):
    """How a peer's part in a round ended. TIMEOUT and DISCONNECTED broke the round."""

    OK = "ok"
    TIMEOUT = "timeout"
    DISCONNECTED = "disconnected"

    @property
    def broke_round(self) -> bool:
        return self is not RoundOutcome.OK


@dataclass(frozen=True)
class PeerRoundRecord:
    """One peer's part in one round, as this agent saw it (e.g. from the group's gathered reports).

    - ``compute_seconds``: time the peer spent computing since its previous round.
    - ``wait_seconds``: time it spent not computing (matchmaking, waiting, averaging).
    - ``retries``: attempts it needed beyond the first (re-sent parts, re-joined matchmaking).
    - ``update_distance``: ``|update - group mean| / |group mean|`` of its update, if measured.
    """

    peer_id: str
    compute_seconds: float
    wait_seconds: float
    outcome: RoundOutcome = RoundOutcome.OK
    retries: int = 0
    update_distance: float | None = None

    def __post_init__(self) -> None:
        if min(self.compute_seconds, self.wait_seconds) < 0 or self.retries < 0:
            raise ValueError(f"seconds and retries must be >= 0, got {self}")
        if self.update_distance is not None and not (self.update_distance >= 0):
            raise ValueError(f"update_distance must be >= 0, got {self.update_distance}")


class PeerState(StrEnum):
    ACTIVE = "active"
    QUARANTINED = "quarantined"
    PROBATION = "probation"


class SelectionStrategy(StrEnum):
    """Who is asked to average.

    - ALL_AVAILABLE: every available peer that is not quarantined.
    - QUALITY_THRESHOLD: peers scoring at least ``threshold``.
    - TOP_N: the ``top_n`` best.
    - ADAPTIVE_THRESHOLD: peers scoring at least ``adaptive_fraction`` of the median available score
      (relative to the swarm at hand, so a uniformly slow swarm keeps everyone).
    """

    ALL_AVAILABLE = "all_available"
    QUALITY_THRESHOLD = "quality_threshold"
    TOP_N = "top_n"
    ADAPTIVE_THRESHOLD = "adaptive_threshold"


@dataclass(frozen=True)
class SelectionConfig:
    """Knobs of scoring, quarantine and probation. Seconds for times, fractions for scores."""

    score_alpha: float = 0.3
    prior_score: float = 0.5
    retry_penalty: float = 0.8
    divergence_tolerance: float = 1.0
    quarantine_breaks: int = 3
    quarantine_window: int = 10
    cooldown_s: float = 60.0
    cooldown_growth: float = 2.0
    max_cooldown_s: float = 3600.0
    probation_rounds: int = 5
    probation_weight: float = 0.1
    forgive_after_s: float = 3600.0
    adaptive_fraction: float = 0.5

    def __post_init__(self) -> None:
        if not 0 < self.score_alpha <= 1 or not 0 <= self.prior_score <= 1:
            raise ValueError("score_alpha must be in (0, 1] and prior_score in [0, 1]")
        if not 1 <= self.quarantine_breaks <= self.quarantine_window:
            raise ValueError("need 1 <= quarantine_breaks <= quarantine_window")
        if not 0 < self.cooldown_s <= self.max_cooldown_s or not math.isfinite(self.max_cooldown_s):
            raise ValueError("need 0 < cooldown_s <= max_cooldown_s < inf: nobody may be shut out for good")
        if self.cooldown_growth < 1 or self.probation_rounds < 1 or not 0 < self.probation_weight <= 1:
            raise ValueError("need cooldown_growth >= 1, probation_rounds >= 1, probation_weight in (0, 1]")


@dataclass(frozen=True)
class PeerRank:
    """A peer's standing: score in [0, 1], state, rounds recorded, broken rounds in the recent window."""

    peer_id: str
    score: float
    state: PeerState
    rounds: int
    recent_breaks: int


@dataclass(frozen=True)
class SelectedPeer:
    """A peer asked to average, with the weight of its contribution (small on probation)."""

    peer_id: str
    weight: float
    on_probation: bool = False


@dataclass(frozen=True)
class Selection:
    """The result of :meth:`PeerSelector.select`: who averages, who does not and why."""

    strategy: SelectionStrategy
    peers: tuple[SelectedPeer, ...]
    excluded: tuple[tuple[str, str], ...]
    threshold: float | None = None

    @property
    def peer_ids(self) -> tuple[str, ...]:
        return tuple(peer.peer_id for peer in self.peers)


class SelectionEventKind(StrEnum):
    """Values match ``agent.status.Alert.kind``."""

    QUARANTINED = "quarantined"
    PROBATION = "probation"
    READMITTED = "readmitted"


@dataclass(frozen=True)
class SelectionEvent:
    """A change of a peer's state, for the log, the TUI and the web page. ``at`` is clock seconds."""

    kind: SelectionEventKind
    peer_id: str
    at: float
    message: str


@dataclass(frozen=True)
class ExclusionRecord:
    """One quarantine: when it began, when its cool-down ends, which strike it was, and why."""

    peer_id: str
    start_s: float
    until_s: float
    strike: int
    reason: str


class _Standing:
    """Mutable per-peer bookkeeping (private: read it through PeerRank)."""

    def __init__(self, window: int, now: float) -> None:
        self.score: float | None = None
        self.rounds = 0
        self.recent: deque[bool] = deque(maxlen=window)  # True = broke the round
        self.state = PeerState.ACTIVE
        self.strikes = 0
        self.quarantined_until = 0.0
        self.probation_left = 0
        self.good_since = now


class PeerSelector:
    """Scores, quarantine and selection over the peers this agent has seen (see the module docstring)."""

    def __init__(
        self, config: SelectionConfig | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config or SelectionConfig()
        self._clock = clock
        self._peers: dict[str, _Standing] = {}
        self.history: list[ExclusionRecord] = []

    def _standing(self, peer_id: str) -> _Standing:
        if peer_id not in self._peers:
            self._peers[peer_id] = _Standing(self.config.quarantine_window, self._clock())
        return self._peers[peer_id]

    def round_score(self, record: PeerRoundRecord) -> float:
        """Score of one round in [0, 1] (see the module docstring)."""
        if record.outcome.broke_round:
            return 0.0
        total = record.compute_seconds + record.wait_seconds
        score = record.compute_seconds / total if total > 0 else 0.0
        score *= self.config.retry_penalty**record.retries
        tolerance = self.config.divergence_tolerance
        if record.update_distance is not None and record.update_distance > tolerance:
            score *= tolerance / record.update_distance
        return score

    def record(self, record: PeerRoundRecord) -> list[SelectionEvent]:
        """Add one round of one peer; returns the state changes it caused."""
        events = self._advance(record.peer_id)
        standing = self._standing(record.peer_id)
        config = self.config
        round_score = self.round_score(record)
        standing.score = (
            round_score
            if standing.score is None
            else (1 - config.score_alpha) * standing.score + config.score_alpha * round_score
        )
        standing.rounds += 1
        standing.recent.append(record.outcome.broke_round)
        now = self._clock()
        if standing.state is PeerState.PROBATION:
            if record.outcome.broke_round:
                events.append(
                    self._quarantine(
                        record.peer_id, standing, f"broke a round on probation ({record.outcome})"
                    )
                )
            else:
                standing.probation_left -= 1
                if standing.probation_left <= 0:
                    standing.state = PeerState.ACTIVE
                    standing.good_since = now
                    message = (
                        f"{record.peer_id} passed {config.probation_rounds} probation rounds: full weight"
                    )
                    events.append(SelectionEvent(SelectionEventKind.READMITTED, record.peer_id, now, message))
        elif standing.state is PeerState.ACTIVE:
            breaks = sum(standing.recent)
            if breaks >= config.quarantine_breaks:
                reason = f"broke {breaks} of its last {len(standing.recent)} rounds (last: {record.outcome})"
                events.append(self._quarantine(record.peer_id, standing, reason))
        return events

    def _quarantine(self, peer_id: str, standing: _Standing, reason: str) -> SelectionEvent:
        config = self.config
        now = self._clock()
        if standing.state is PeerState.ACTIVE and config.forgive_after_s > 0:
            forgiven = int((now - standing.good_since) // config.forgive_after_s)
            standing.strikes = max(0, standing.strikes - forgiven)
        standing.strikes += 1
        cooldown = min(
            config.max_cooldown_s, config.cooldown_s * config.cooldown_growth ** (standing.strikes - 1)
        )
        standing.state = PeerState.QUARANTINED
        standing.quarantined_until = now + cooldown
        standing.recent.clear()
        self.history.append(ExclusionRecord(peer_id, now, now + cooldown, standing.strikes, reason))
        message = f"{peer_id} quarantined for {cooldown:.0f} s (strike {standing.strikes}): {reason}"
        return SelectionEvent(SelectionEventKind.QUARANTINED, peer_id, now, message)

    def _advance(self, peer_id: str) -> list[SelectionEvent]:
        """Move a quarantined peer whose cool-down is over to probation."""
        standing = self._peers.get(peer_id)
        now = self._clock()
        if (
            standing is None
            or standing.state is not PeerState.QUARANTINED
            or now < standing.quarantined_until
        ):
            return []
        standing.state = PeerState.PROBATION
        standing.probation_left = self.config.probation_rounds
        message = (
            f"{peer_id} back on probation: {self.config.probation_rounds} rounds at weight "
            f"{self.config.probation_weight:g}"
        )
        return [SelectionEvent(SelectionEventKind.PROBATION, peer_id, now, message)]

    def tick(self) -> list[SelectionEvent]:
        """Apply time-driven changes (cool-downs that ended) to every peer; returns the events."""
        events: list[SelectionEvent] = []
        for peer_id in sorted(self._peers):
            events += self._advance(peer_id)
        return events

    def rank(self, peer_id: str) -> PeerRank:
        """The standing of one peer (a peer never seen has the prior score)."""
        self._advance(peer_id)
        standing = self._peers.get(peer_id)
        if standing is None:
            return PeerRank(peer_id, self.config.prior_score, PeerState.ACTIVE, 0, 0)
        score = self.config.prior_score if standing.score is None else standing.score
        return PeerRank(peer_id, score, standing.state, standing.rounds, sum(standing.recent))

    def ranking(self, peers: Iterable[str] | None = None) -> list[PeerRank]:
        """Peers best first (ties by peer id); all peers seen when ``peers`` is None."""
        ids = sorted(self._peers) if peers is None else sorted(set(peers))
        return sorted((self.rank(peer_id) for peer_id in ids), key=lambda rank: (-rank.score, rank.peer_id))

    def select(
        self,
        available: Iterable[str],
        strategy: SelectionStrategy = SelectionStrategy.ALL_AVAILABLE,
        *,
        threshold: float | None = None,
        top_n: int | None = None,
        min_peers: int = 1,
    ) -> Selection:
        """Choose who averages among ``available`` peers.

        Quarantined peers never take part; peers on probation always do, at ``probation_weight``, and
        do not count towards ``top_n``. If the strategy leaves fewer than ``min_peers`` peers, the
        best excluded (not quarantined) peers are added back so that a group can still form.
        """
        config = self.config
        ranks = self.ranking(available)
        excluded: list[tuple[str, str]] = []
        candidates: list[PeerRank] = []
        selected: list[SelectedPeer] = []
        for rank in ranks:
            if rank.state is PeerState.QUARANTINED:
                until = self._peers[rank.peer_id].quarantined_until
                excluded.append((rank.peer_id, f"quarantined for {until - self._clock():.0f} s more"))
            elif rank.state is PeerState.PROBATION:
                selected.append(SelectedPeer(rank.peer_id, config.probation_weight, on_probation=True))
            else:
                candidates.append(rank)
        cut: float | None = None
        if strategy is SelectionStrategy.ALL_AVAILABLE:
            chosen = candidates
        elif strategy is SelectionStrategy.TOP_N:
            if top_n is None or top_n < 1:
                raise ValueError(f"strategy top_n needs top_n >= 1, got {top_n}")
            chosen = candidates[:top_n]
        else:
            if strategy is SelectionStrategy.QUALITY_THRESHOLD:
                if threshold is None or not 0 <= threshold <= 1:
                    raise ValueError(
                        f"strategy quality_threshold needs a threshold in [0, 1], got {threshold}"
                    )
                cut = threshold
            else:
                median = statistics.median(rank.score for rank in candidates) if candidates else 0.0
                cut = config.adaptive_fraction * median
            chosen = [rank for rank in candidates if rank.score >= cut]
        shortfall = max(0, min_peers - len(chosen) - len(selected))
        rest = [rank for rank in candidates if rank not in chosen]
        chosen = chosen + rest[:shortfall]
        for rank in rest[shortfall:]:
            why = f"score {rank.score:.2f}" + (
                f" below {cut:.2f}" if cut is not None else f" not in top {top_n}"
            )
            excluded.append((rank.peer_id, why))
        selected = [SelectedPeer(rank.peer_id, 1.0) for rank in chosen] + selected
        return Selection(strategy, tuple(selected), tuple(excluded), cut)
