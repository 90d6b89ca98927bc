"""The network-aware swarm policy: latency groups, adaptive local work and timeouts, quarantine.

``make_policy`` in :mod:`agent.swarm.node` returns an :class:`AdaptivePolicy` when ``swarm.adaptive`` is
on. It owns the agent's :class:`agent.swarm.link_monitor.LinkMonitor` and combines the pure decision
modules of :mod:`agent.adaptation`:

* **groups** (:func:`agent.adaptation.grouping.plan_groups`): every ``replan_period_s`` of DHT time
  the agent clusters the swarm's RTT matrix, as read from the signed link summaries in the DHT, and
  averages with its cluster (its hivemind group key bits). Agents reading the same summaries compute
  the same plan (its fingerprint is logged). Once per ``cross_cluster_period_s`` of DHT time its first
  round uses the global key instead, so the clusters mix and converge to one model.
* **local work** (:class:`agent.adaptation.local_work.LocalWorkController`): local steps between
  rounds from the agent's round duration, the RTT and loss towards its group, its compute speed and
  the group's cadence, one level at a time, with rollback of a change that lowered throughput (the
  batch size is held by default, see ``__init__``; ``AdaptiveSettings.local_work`` can free it).
* **timeouts** (:class:`agent.adaptation.timeouts.AdaptiveTimeout`): the round timeout follows a high
  percentile of recent round durations.
* **who averages** (:class:`agent.adaptation.peer_selection.PeerSelector`): each member reports its
  previous round (success, seconds) in the round's gather payload; a member whose rounds keep failing
  or straggling is quarantined by this agent, and the agent publishes its verdicts with its link
  summary. A peer that a majority of the other publishers quarantine is given a key of its own (it
  trains alone for the cool-down); one that a majority hold on probation averages at low weight.

Every decision is logged with its reason (``hypergpu.adaptive`` logger, the board's alerts with kind
``adaptation``, and :meth:`AdaptivePolicy.report` in ``status.json``). :meth:`decision_seconds` is the
CPU-side time spent deciding and monitoring in the agent's process (not time waiting for the network).
"""

from __future__ import annotations

import logging
import math
import statistics
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from hivemind.utils import get_dht_time

from agent.adaptation.grouping import GLOBAL_GROUP_BITS, GroupPlan, plan_groups
from agent.adaptation.local_work import (
    LocalWorkBounds,
    LocalWorkConfig,
    LocalWorkController,
    LocalWorkPlan,
    RoundObservation,
)
from agent.adaptation.peer_selection import (
    PeerRoundRecord,
    PeerSelector,
    PeerState,
    RoundOutcome,
    SelectionConfig,
    SelectionEvent,
)
from agent.adaptation.timeouts import AdaptiveTimeout, TimeoutPolicy
from agent.protocol.config import RunConfig
from agent.status import AlertLevel
from agent.swarm.link_monitor import LinkMonitor, MonitorConfig, PeerVotes, SwarmLinks, median_link
from agent.swarm.policy import RoundPlan, RoundResult

log = logging.getLogger("hypergpu.adaptive")


@dataclass(frozen=True)
class AdaptiveSettings:
    """Knobs of the policy. Seconds of DHT time for periods.

    - ``replan_period_s``: how often the group plan is recomputed from the DHT summaries.
    - ``cross_cluster_period_s``: one global (cross-cluster) round per this period.
    - ``straggler_factor`` / ``straggler_min_s``: a member whose previous round took this many times the
      group's median (and at least this long) counts as having broken it.
    - ``probation_weight`` comes from ``selection``; ``min_votes``: fewest votes that quarantine a peer.
    """

    replan_period_s: float = 8.0
    cross_cluster_period_s: float = 10.0
    straggler_factor: float = 3.0
    straggler_min_s: float = 5.0
    min_votes: int = 2
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    selection: SelectionConfig = field(default_factory=SelectionConfig)
    local_work: LocalWorkConfig | None = None


@dataclass(frozen=True)
class Decision:
    """One adaptation decision: which knob, from what to what, and why (DHT time ``at``)."""

    kind: str
    round: int
    before: str
    after: str
    reason: str
    at: float


def is_power_of_two(value: int) -> bool:
    return value > 0 and value & (value - 1) == 0


def consensus(votes: Mapping[str, PeerVotes], min_votes: int = 2) -> tuple[frozenset[str], frozenset[str]]:
    """Peers quarantined / on probation by a majority of the *other* publishers (at least ``min_votes``).

    Pure function of what was read from the DHT, so every agent reading the same records agrees.
    """
    publishers = set(votes)
    quarantined: set[str] = set()
    probation: set[str] = set()
    candidates = {peer for vote in votes.values() for peer in (*vote.quarantined, *vote.probation)}
    for peer in candidates:
        others = publishers - {peer}
        if not others:
            continue
        against = sum(1 for voter in others if peer in votes[voter].quarantined)
        watched = sum(1 for voter in others if peer in votes[voter].probation)
        if against >= min_votes and against * 2 > len(others):
            quarantined.add(peer)
        elif against + watched >= min_votes and (against + watched) * 2 > len(others):
            probation.add(peer)
    return frozenset(quarantined), frozenset(probation)


def quarantine_bits(plan: GroupPlan | None) -> str:
    """A key suffix no cluster uses: one bit longer than the clusters' bits, all ones."""
    width = max((len(cluster.group_bits) for cluster in plan.clusters), default=0) if plan else 0
    return "1" * (width + 1)


class AdaptivePolicy:
    """The :class:`agent.swarm.policy.SwarmPolicy` of an adaptive agent (see the module docstring).

    Args:
        config: the run configuration (initial batch, local steps, group sizes, timeouts).
        settings: the policy's own knobs.
        dht_time: DHT clock (seconds); ``clock``: monotonic clock for quarantine cool-downs.
    """

    def __init__(
        self,
        config: RunConfig,
        settings: AdaptiveSettings | None = None,
        dht_time: Callable[[], float] = get_dht_time,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.settings = settings or AdaptiveSettings()
        self._dht_time = dht_time
        training, swarm = config.training, config.swarm
        batch, steps = training.batch_size, training.local_steps
        bounds = LocalWorkBounds(
            min_batch=min(16, batch),
            max_batch=max(256, batch),
            power_of_two=is_power_of_two(batch) and is_power_of_two(min(16, batch)),
            min_steps=1,
            max_steps=max(64, steps),
        )
        # The loop averages in the background (OverlappedAveraging): a round costs no idle compute, only
        # staleness. So local work is sized to about one round's duration (overhead fraction 0.5): shorter
        # and rounds queue up, longer and the agents average less often than the links allow. The batch
        # is held (the learning rate was tuned for it; a larger batch at the same rate converges slower
        # per sample, measured in the A/B benchmark): only the local steps move.
        work_config = self.settings.local_work or LocalWorkConfig(
            bounds=bounds, target_overhead_fraction=0.5, hold_effective_batch=True
        )
        self.local_work = LocalWorkController(LocalWorkPlan.of(batch, steps), work_config)
        floor = swarm.matchmaking_time + 2.0  # hivemind needs the matchmaking time plus an all-reduce
        self.round_timeout = AdaptiveTimeout(
            TimeoutPolicy(
                initial_s=max(floor, swarm.averaging_timeout),
                min_s=floor,
                max_s=max(floor, swarm.averaging_timeout * 2),
            )
        )
        self.selector = PeerSelector(self.settings.selection, clock=clock)
        self.monitor: LinkMonitor | None = None
        self.board: Any = None
        self.peer_id = ""
        self.group_plan: GroupPlan | None = None
        self.quarantined: frozenset[str] = frozenset()
        self.probation: frozenset[str] = frozenset()
        self.decisions: list[Decision] = []
        self._plan_epoch = -1
        self._last_global_slot = -1
        self._last_plan: RoundPlan | None = None
        self._last_round = (True, 0.0)  # (success, seconds) of this agent's previous round
        self._last_start: float | None = None
        self._period_s: float | None = None
        self._round = 0
        self._spent = 0.0
        self.parameter_bytes = _parameter_bytes(config)  # float32 bytes of the model (0 = unknown)

    # ---- SwarmPolicy -------------------------------------------------------------------------------
    def start(self, *, dht: Any, peer_id: str, board: Any) -> None:
        self.peer_id = peer_id
        self.board = board
        self.monitor = LinkMonitor(
            dht,
            peer_id,
            self.config.swarm.run_id,
            board=board,
            config=self.settings.monitor,
            votes=self.votes,
        ).start()
        log.info("adaptive policy on: link monitor, latency groups, adaptive local work and timeouts")

    def stop(self) -> None:
        if self.monitor is not None:
            self.monitor.stop()

    def decision_seconds(self) -> float:
        """CPU-side seconds spent deciding and monitoring in this process (not waiting on the network)."""
        return self._spent + (self.monitor.busy_seconds if self.monitor is not None else 0.0)

    def gather_extras(self) -> dict[str, Any]:
        """What this agent tells its group: its previous round and how often it starts rounds."""
        ok, seconds = self._last_round
        extras: dict[str, Any] = {"prev": [int(ok), round(seconds, 3)]}
        if self._period_s is not None:
            extras["period_s"] = round(self._period_s, 3)
        return extras

    def plan_round(self, round_number: int) -> RoundPlan:
        started = time.perf_counter()
        self._round = round_number
        now = self._dht_time()
        if self._last_start is not None:
            period = time.monotonic() - self._last_start
            self._period_s = period if self._period_s is None else 0.7 * self._period_s + 0.3 * period
        self._last_start = time.monotonic()
        self._note_selection_events(self.selector.tick())
        links = self.monitor.snapshot() if self.monitor is not None else SwarmLinks()
        epoch = int(now // self.settings.replan_period_s)
        if epoch != self._plan_epoch:
            self._plan_epoch = epoch
            self._replan(links, round_number, now)
        bits, bits_reason = self._group_bits(now)
        work = self.local_work.plan
        weight = 1.0
        if self.peer_id in self.probation:
            weight = self.settings.selection.probation_weight
        plan = RoundPlan(
            local_steps=work.local_steps,
            batch_size=work.batch_size,
            group_bits=bits,
            matchmaking_timeout=self.round_timeout.seconds,
            weight_scale=weight,
            reason=bits_reason,
        )
        self._log_plan_change(plan, round_number, now)
        self._last_plan = plan
        self._spent += time.perf_counter() - started
        return plan

    def on_round_finished(self, result: RoundResult) -> None:
        started = time.perf_counter()
        self._last_round = (result.success, result.round_seconds)
        if result.success:
            self.round_timeout.observe(result.round_seconds)
        else:
            self.round_timeout.observe_timeout()
        members = [peer for peer in result.members if peer != self.peer_id]
        if self.monitor is not None:
            param_bytes = self._round_bytes(result)
            self.monitor.observe_round(result.members, result.round_seconds, param_bytes, result.success)
        if result.success and result.gathered:
            self._record_members(result.gathered)
        rtt, loss = self._group_link(members)
        ready = self._group_cadence(result.gathered or {})
        observation = RoundObservation(
            round=self._round,
            samples=max(0, result.samples),
            compute_seconds=max(0.0, result.compute_seconds),
            overhead_seconds=max(0.0, result.round_seconds),
            success=result.success,
            rtt_ms=rtt,
            link_loss=min(1.0, max(0.0, loss)) if loss is not None else None,
            group_ready_seconds=ready,
        )
        before = self.local_work.plan
        decision = self.local_work.observe(observation)
        if decision is not None:
            self._decide(
                "local_work",
                before.describe(),
                decision.after.describe(),
                f"{decision.change}: {decision.reason}",
            )
        self._spent += time.perf_counter() - started

    # ---- groups ------------------------------------------------------------------------------------
    def _replan(self, links: SwarmLinks, round_number: int, now: float) -> None:
        quarantined, probation = consensus(links.votes, self.settings.min_votes)
        for peer in sorted(quarantined - self.quarantined):
            self._decide(
                "quarantine", "member", "quarantined", f"{peer[:12]} excluded by a majority of peers"
            )
        for peer in sorted(self.quarantined - quarantined):
            self._decide("quarantine", "quarantined", "member", f"{peer[:12]} re-admitted")
        for peer in sorted(probation - self.probation):
            weight = self.settings.selection.probation_weight
            self._decide("probation", "member", "probation", f"{peer[:12]} averages at weight {weight:g}")
        self.quarantined, self.probation = quarantined, probation
        peers = sorted((set(links.publishers) | {self.peer_id}) - quarantined)
        swarm = self.config.swarm
        previous = self.group_plan
        rtt = {src: row for src, row in links.rtt_ms().items() if src not in quarantined}
        plan = plan_groups(peers, rtt, swarm.target_group_size, swarm.min_group_size)
        if not self._confirmed(previous, plan):
            return
        self.group_plan = plan
        mine = plan.assignments.get(self.peer_id)
        was = previous.assignments.get(self.peer_id) if previous is not None else None
        moved = (mine.fallback if mine else None) != (was.fallback if was else None)
        if previous is None or previous.fingerprint != plan.fingerprint or moved:
            clusters = ", ".join(
                f"{cluster.group_bits or 'all'}={len(cluster.members)}"
                + (f" ({cluster.median_rtt_ms:.0f} ms)" if cluster.median_rtt_ms is not None else "")
                for cluster in plan.clusters
            )
            why = (
                f"{len(plan.clusters)} latency cluster(s) from {len(links.publishers)} summaries: "
                f"{clusters}; cut at {plan.cut_rtt_ms:.0f} ms"
                if plan.cut_rtt_ms is not None
                else f"one cluster from {len(links.publishers)} summaries: {clusters}"
            )
            if mine is not None and mine.fallback:
                why += f"; this agent: {mine.fallback}"
            self._decide(
                "groups",
                previous.fingerprint if previous else "-",
                f"{plan.fingerprint} (mine: {mine.group_bits if mine else '?'!r})",
                why,
            )

    def _confirmed(self, previous: GroupPlan | None, plan: GroupPlan) -> bool:
        """Hysteresis: a different plan is adopted only when two replans in a row computed it.

        A peer whose RTT to two clusters is about equal would otherwise flip between them with every
        noisy summary. The first plan, the first one from measurements, and a plan that drops a
        quarantined or departed peer count at once (the old one would keep waiting for a peer that
        is not coming).
        """
        if previous is None or previous.fingerprint == plan.fingerprint or _unmeasured(previous):
            self._candidate = None
            return True
        if set(previous.assignments) - set(plan.assignments):
            self._candidate = None
            return True
        if self._candidate == plan.fingerprint:
            self._candidate = None
            return True
        self._candidate = plan.fingerprint
        return False

    _candidate: str | None = None

    def _group_bits(self, now: float) -> tuple[str, str]:
        """This round's key suffix and why."""
        plan = self.group_plan
        if self.peer_id in self.quarantined:
            return quarantine_bits(plan), "quarantined by a majority of peers: averaging alone"
        if plan is None or len(plan.clusters) < 2:
            return GLOBAL_GROUP_BITS, "one cluster: the global key"
        slot = int(now // self.settings.cross_cluster_period_s)
        if slot != self._last_global_slot:
            self._last_global_slot = slot
            return (
                GLOBAL_GROUP_BITS,
                f"cross-cluster round (one per {self.settings.cross_cluster_period_s:g} s)",
            )
        assignment = plan.assignments.get(self.peer_id)
        if assignment is None:
            return GLOBAL_GROUP_BITS, "not in the plan yet: the global key"
        return assignment.group_bits, f"own latency cluster {assignment.group_bits!r}"

    # ---- who averages ------------------------------------------------------------------------------
    def _record_members(self, gathered: Mapping[str, Any]) -> None:
        previous = {
            peer: payload.get("prev")
            for peer, payload in gathered.items()
            if isinstance(payload, dict) and isinstance(payload.get("prev"), list | tuple)
        }
        seconds = [float(prev[1]) for prev in previous.values() if len(prev) == 2]
        median = statistics.median(seconds) if seconds else 0.0
        for peer, prev in sorted(previous.items()):
            if peer == self.peer_id or len(prev) != 2:
                continue
            ok, took = bool(prev[0]), float(prev[1])
            straggled = (
                took >= self.settings.straggler_min_s and took > self.settings.straggler_factor * median
            )
            outcome = RoundOutcome.OK if ok and not straggled else RoundOutcome.TIMEOUT
            payload = gathered[peer]
            compute = payload.get("compute_s", 0.0) if isinstance(payload, dict) else 0.0
            compute = float(compute) if isinstance(compute, int | float) and math.isfinite(compute) else 0.0
            record = PeerRoundRecord(peer, max(0.0, compute), max(0.0, took), outcome)
            self._note_selection_events(self.selector.record(record))

    def _note_selection_events(self, events: Iterable[SelectionEvent]) -> None:
        for event in events:
            log.warning("peer selection: %s", event.message)
            if self.board is not None:
                self.board.alert(
                    event.kind.value, event.message, level=AlertLevel.WARNING, peer_id=event.peer_id
                )

    def votes(self) -> PeerVotes:
        """This agent's verdicts, published with its link summary."""
        ranks = self.selector.ranking()
        return PeerVotes(
            quarantined=tuple(rank.peer_id for rank in ranks if rank.state is PeerState.QUARANTINED),
            probation=tuple(rank.peer_id for rank in ranks if rank.state is PeerState.PROBATION),
        )

    # ---- measurements for local work ---------------------------------------------------------------
    def _group_link(self, members: list[str]) -> tuple[float | None, float | None]:
        """Median RTT and mean loss towards the round's members, else towards this agent's cluster."""
        if self.monitor is None:
            return None, None
        peers = members
        if not peers and self.group_plan is not None:
            mine = self.group_plan.assignments.get(self.peer_id)
            if mine is not None:
                cluster = self.group_plan.clusters[mine.cluster]
                peers = [peer for peer in cluster.members if peer != self.peer_id]
        return median_link(self.monitor.link_to(peer) for peer in peers)

    def _group_cadence(self, gathered: Mapping[str, Any]) -> float | None:
        """Median of the members' round periods (seconds between their round starts), if they sent it."""
        periods = [
            float(payload["period_s"])
            for peer, payload in gathered.items()
            if peer != self.peer_id
            and isinstance(payload, dict)
            and isinstance(payload.get("period_s"), int | float)
            and payload["period_s"] > 0
        ]
        return statistics.median(periods) if periods else None

    def _round_bytes(self, result: RoundResult) -> int:
        """Bytes exchanged with each member in a butterfly all-reduce: 2 / n of the parameters each way."""
        n = len(result.members)
        if n < 2 or not self.parameter_bytes:
            return 0
        return int(2 * self.parameter_bytes / n)

    # ---- decisions ---------------------------------------------------------------------------------
    def _decide(self, kind: str, before: str, after: str, reason: str) -> None:
        decision = Decision(kind, self._round, before, after, reason, self._dht_time())
        self.decisions.append(decision)
        log.info("adaptation [%s] round %d: %s -> %s (%s)", kind, self._round, before, after, reason)
        if self.board is not None:
            self.board.alert("adaptation", f"{kind}: {before} -> {after} ({reason})", level=AlertLevel.INFO)

    def _log_plan_change(self, plan: RoundPlan, round_number: int, now: float) -> None:
        last = self._last_plan
        if last is not None and last.matchmaking_timeout > 0:
            change = abs(plan.matchmaking_timeout - last.matchmaking_timeout) / last.matchmaking_timeout
            if change > 0.25:
                self._decide(
                    "timeout",
                    f"{last.matchmaking_timeout:.1f} s",
                    f"{plan.matchmaking_timeout:.1f} s",
                    self.round_timeout.describe(),
                )
        if last is not None and last.weight_scale != plan.weight_scale:
            self._decide("weight", f"{last.weight_scale:g}", f"{plan.weight_scale:g}", "probation by peers")
        log.debug("round %d plan: %s", round_number, plan)

    def report(self) -> dict[str, Any]:
        """For ``status.json``: recent decisions, the group plan, the monitor's figures."""
        plan = self.group_plan
        monitor = self.monitor
        return {
            "decisions": [asdict(decision) for decision in self.decisions[-50:]],
            "decisions_total": len(self.decisions),
            "group_decisions": [asdict(d) for d in self.decisions if d.kind == "groups"][-10:],
            "group_plan": None
            if plan is None
            else {
                "fingerprint": plan.fingerprint,
                "clusters": [list(cluster.members) for cluster in plan.clusters],
                "mine": plan.assignments[self.peer_id].group_bits
                if self.peer_id in plan.assignments
                else None,
            },
            "local_work": self.local_work.plan.describe(),
            "round_timeout_s": self.round_timeout.seconds,
            "quarantined": sorted(self.quarantined),
            "probation": sorted(self.probation),
            "exclusions": [asdict(record) for record in self.selector.history],
            "monitor": None
            if monitor is None
            else {
                "bytes_estimate": monitor.bytes_estimate,
                "pings": monitor.pings_sent,
                "publications": monitor.publications,
                "busy_seconds": monitor.busy_seconds,
                "alerts": len(monitor.alerts),
            },
        }


def _unmeasured(plan: GroupPlan) -> bool:
    """Whether ``plan`` was made before any RTT was measured (everyone in one fallback cluster)."""
    return all(
        assignment.fallback is not None and assignment.fallback.startswith("no RTT measurements in the swarm")
        for assignment in plan.assignments.values()
    )


def _parameter_bytes(config: RunConfig) -> int:
    """float32 bytes of the run's model. The policy is not handed the model, so it counts a fresh copy."""
    try:
        from agent.training.models import build_model

        channels = 3 if config.training.dataset == "cifar10" else 1
        model = build_model(config.training.model, in_channels=channels)
        return 4 * sum(p.numel() for p in model.parameters())
    except Exception:  # an unusual model or dataset: only the bandwidth estimate is lost
        log.debug("could not size the model", exc_info=True)
        return 0
