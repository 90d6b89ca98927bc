"""Per-agent link monitoring over libp2p: pings, passive round measurements, a signed summary in the DHT.

A :class:`LinkMonitor` runs one background thread in the agent:

* **active**: it pings every peer of the run (each second until a peer has ``warmup_pings`` answers,
  then every ``steady_ping_interval_s``) through the DHT's libp2p host
  (hivemind's ``DHTProtocol.rpc_ping``, as Petals' ``petals/utils/ping.py`` does; not ICMP), in parallel,
  inside the DHT process; a ping slower than the adaptive ping timeout counts as lost (on TCP a lost
  segment is a stall, not a missing answer);
* **passive**: the policy reports every averaging round (:meth:`LinkMonitor.observe_round`: members,
  seconds, bytes per peer, success);
* both feed :class:`agent.network.link_stats.PeerMonitor` (RTT EWMA, jitter, loss, reliability,
  bandwidth, trend, quality class with hysteresis, alerts);
* every ``publish_interval_s`` (the first ``warmup_publications`` times, then every
  ``steady_publish_interval_s``) it stores its compact
  summary (``encode_link_summary``, ~14 bytes per peer) plus its quarantine votes in the DHT under
  ``{run}_links`` and reads everyone else's, so every agent knows the swarm's RTT matrix
  (:class:`SwarmLinks`).

**Signing**: records are signed with hivemind's ``RSASignatureValidator``: this agent's DHT gets the
validator (``dht.add_validators``), the subkey carries the agent's RSA public key (``[owner:...]``), the
DHT signs each store with the matching private key, and every agent's DHT (which has the validator too)
rejects a record whose signature does not match its subkey, on store and on read. So nobody can
overwrite or forge another agent's summary. The RSA key is per agent process, not the libp2p identity:
the summary names its publisher's peer id (a ``members`` filter can restrict it to the run's members),
and a peer id that appears under several keys counts once (its newest record), so votes are counted
per peer id. Binding the record to the libp2p identity itself would need that key in the agent.

**Traffic**: :attr:`LinkMonitor.bytes_estimate` counts the monitoring bytes on the wire: pings at a
measured size per ping, DHT stores and reads at their value size plus a measured per-request overhead,
times the replicas. ``tests/swarm/test_link_monitor.py`` checks the estimate against the bytes the
shaper counts; the benchmark reports monitoring bytes / training bytes.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from hivemind.dht.crypto import RSASignatureValidator
from hivemind.utils import get_dht_time
from hivemind.utils.crypto import RSAPrivateKey

from agent.adaptation.timeouts import AdaptiveTimeout, TimeoutPolicy
from agent.network.link_stats import (
    CompactLink,
    LinkAlert,
    PeerLinkReport,
    PeerMonitor,
    decode_link_summary,
    encode_link_summary,
    peer_key,
)
from agent.status import AlertLevel, PeerView, RttMatrix

log = logging.getLogger("hypergpu.links")

# Bytes on the wire, both directions, all framing (noise, yamux, multistream) included. Measured through
# the shaper by tests/swarm/test_link_monitor.py (a warm ping: 489 bytes; a publish + read between two
# nodes: 5.9 kB), rounded up; the test fails if these under-count or over-count more than 3 times.
PING_WIRE_BYTES = 600
DHT_REQUEST_OVERHEAD_BYTES = 1_400
STORE_REPLICAS = 5  # hivemind DHTNode's default num_replicas


def links_key(run_id: str) -> str:
    """DHT key under which every agent of ``run_id`` publishes its link summary (subkey: its RSA key)."""
    return f"{run_id}_links"


@dataclass(frozen=True)
class MonitorConfig:
    """Cadence and limits of the monitor. Seconds throughout.

    - ``ping_interval_s``: the monitor's tick: a sweep pings the peers that are due.
    - ``warmup_pings`` / ``steady_ping_interval_s``: a peer is due every tick until it answered this
      many pings (RTT, jitter and a quality class in seconds), then every this many seconds.
    - ``publish_interval_s`` / ``warmup_publications`` / ``steady_publish_interval_s``: the first
      publications (and reads) of the summaries come this often, later ones every
      ``steady_publish_interval_s`` (the matrix settles quickly; the cadence keeps monitoring bytes
      under 1% of training bytes, see agent/network/README.md).
    - ``record_ttl_s``: a summary expires this long after it was stored (an agent that left drops out).
    - ``ping_timeout``: adaptive ping timeout; a slower answer counts as a lost ping.
    - ``max_peers``: ping at most this many peers per sweep (the ones pinged longest ago first).
    - ``min_rtt_window``: the published RTT is the minimum of this many recent pings (see
      :meth:`LinkMonitor._published_reports`).
    """

    ping_interval_s: float = 1.0
    warmup_pings: int = 10
    steady_ping_interval_s: float = 10.0
    publish_interval_s: float = 4.0
    warmup_publications: int = 3
    steady_publish_interval_s: float = 45.0
    record_ttl_s: float = 75.0
    ping_timeout: TimeoutPolicy = field(
        default_factory=lambda: TimeoutPolicy(initial_s=2.0, min_s=0.5, max_s=5.0)
    )
    max_peers: int = 32
    min_rtt_window: int = 10


@dataclass(frozen=True)
class PeerVotes:
    """One agent's verdicts on others, published with its links: quarantined and on-probation peer ids."""

    quarantined: tuple[str, ...] = ()
    probation: tuple[str, ...] = ()


@dataclass(frozen=True)
class SwarmLinks:
    """Every agent's published links and votes, as read from the DHT at DHT time ``read_at``.

    ``links[a][b]`` is what agent ``a`` measured towards ``b``. Only members' records are kept.
    """

    links: Mapping[str, Mapping[str, CompactLink]] = field(default_factory=dict)
    votes: Mapping[str, PeerVotes] = field(default_factory=dict)
    read_at: float = 0.0

    @property
    def publishers(self) -> tuple[str, ...]:
        return tuple(sorted(self.links))

    def rtt_ms(self) -> dict[str, dict[str, float]]:
        """``{from: {to: ms}}`` for :func:`agent.adaptation.grouping.plan_groups`."""
        return {src: {dst: link.rtt_ms for dst, link in row.items()} for src, row in self.links.items()}

    def matrix(self) -> RttMatrix:
        """The RTT matrix for the status board, over every peer seen as publisher or measured peer."""
        peers = sorted(set(self.links) | {dst for row in self.links.values() for dst in row})
        rows = tuple(
            tuple(
                (self.links.get(src, {}).get(dst).rtt_ms if dst in self.links.get(src, {}) else None)  # type: ignore[union-attr]
                for dst in peers
            )
            for src in peers
        )
        return RttMatrix(peers=tuple(peers), rtt_ms=rows)


async def ping_peers(peer_ids: list[str], timeout_s: float, _dht: Any, node: Any) -> dict[str, float | None]:
    """Runs inside the DHT process: ping each peer once, in parallel; seconds, or None if no answer.

    Same call as Petals' ``petals/utils/ping.py``: the DHT protocol's ``rpc_ping`` over libp2p.
    """
    from hivemind.p2p import PeerID
    from hivemind.proto import dht_pb2

    async def one(peer: str) -> float | None:
        try:
            request = dht_pb2.PingRequest(peer=node.protocol.node_info)
            started = time.perf_counter()
            await node.protocol.get_stub(PeerID.from_base58(peer)).rpc_ping(request, timeout=timeout_s)
            return time.perf_counter() - started
        except Exception:  # an unreachable, slow or vanished peer: a lost ping
            return None

    answers = await asyncio.gather(*(one(peer) for peer in peer_ids))
    return dict(zip(peer_ids, answers, strict=True))


def parse_links(
    entries: Mapping[Any, Any], members: Iterable[str] | None, *, exclude: str | None = None
) -> tuple[dict[str, dict[str, CompactLink]], dict[str, PeerVotes]]:
    """Decode the DHT dictionary under :func:`links_key` (subkey -> value) into links and votes.

    Malformed records (they come from the network) are skipped with a debug log; a peer id that is not
    in ``members`` (when given) is ignored; a peer id that appears under several keys keeps its newest
    record (largest ``t``).
    """
    member_set = None if members is None else set(members)
    newest: dict[str, tuple[float, dict[str, Any]]] = {}
    for item in entries.values():
        value = getattr(item, "value", item)
        if not isinstance(value, dict):
            continue
        peer = value.get("peer")
        stamp = value.get("t")
        if not isinstance(peer, str) or not isinstance(stamp, int | float) or peer == exclude:
            continue
        if member_set is not None and peer not in member_set:
            continue
        if peer not in newest or stamp > newest[peer][0]:
            newest[peer] = (float(stamp), value)
    known = set(newest) | (member_set or set())
    if exclude:
        known.add(exclude)
    links: dict[str, dict[str, CompactLink]] = {}
    votes: dict[str, PeerVotes] = {}
    for peer, (_, value) in sorted(newest.items()):
        blob = value.get("links")
        try:
            if not isinstance(blob, bytes):
                raise ValueError("links is not bytes")
            links[peer] = decode_link_summary(blob, known)
        except ValueError as exc:
            log.debug("ignoring the link summary of %s: %s", peer, exc)
            continue
        votes[peer] = PeerVotes(
            quarantined=_peers_from_keys(value.get("q"), known),
            probation=_peers_from_keys(value.get("p"), known),
        )
    return links, votes


def _peers_from_keys(raw: Any, known: Iterable[str]) -> tuple[str, ...]:
    if not isinstance(raw, list):
        return ()
    by_key = {peer_key(peer): peer for peer in known}
    return tuple(sorted(by_key[key] for key in raw if isinstance(key, bytes) and key in by_key))


class LinkMonitor:
    """This agent's view of its links (see the module docstring).

    Args:
        dht: the agent's hivemind DHT (its libp2p host carries the pings).
        peer_id: this agent's peer id (base58).
        run_id: the run; the summaries live under ``{run_id}_links``.
        board: the agent's StatusBoard (peers table, RTT matrix, alerts); None in tests.
        config: cadence and limits.
        votes: called before each publication: this agent's quarantine / probation verdicts.
        members: called before each read: the run's member peer ids (None = accept every publisher).
        signing_key: RSA key of the summaries (default: hivemind's per-process key).
    """

    def __init__(
        self,
        dht: Any,
        peer_id: str,
        run_id: str,
        board: Any = None,
        config: MonitorConfig | None = None,
        votes: Callable[[], PeerVotes] | None = None,
        members: Callable[[], Iterable[str] | None] | None = None,
        signing_key: RSAPrivateKey | None = None,
    ) -> None:
        self.dht = dht
        self.peer_id = peer_id
        self.run_id = run_id
        self.board = board
        self.config = config or MonitorConfig()
        self._votes = votes or PeerVotes
        self._members = members or (lambda: None)
        self.monitor = PeerMonitor()
        self.ping_timeout = AdaptiveTimeout(self.config.ping_timeout)
        self._validator = RSASignatureValidator(signing_key)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._latest = SwarmLinks()
        self._group: tuple[str, ...] = ()
        self._last_ping: dict[str, float] = {}
        self._recent_rtts: dict[str, deque[float]] = {}
        self.bytes_estimate = 0
        self.pings_sent = 0
        self.publications = 0
        self.busy_seconds = 0.0  # CPU-side work in this process (decoding, estimators, board), not waiting
        self.alerts: list[LinkAlert] = []

    # ---- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> LinkMonitor:
        """Add the signature validator to the DHT, publish once (so others find us), start the thread."""
        self.dht.add_validators([self._validator])
        self.publish_and_read()
        self._thread = threading.Thread(target=self._run, name="link-monitor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.config.ping_timeout.max_s + 5)

    def _run(self) -> None:
        config = self.config
        next_publish = time.monotonic() + config.publish_interval_s
        while not self._stop.wait(config.ping_interval_s):
            try:
                self.ping_sweep()
                if time.monotonic() >= next_publish:
                    self.publish_and_read()
                    warm = self.publications <= config.warmup_publications
                    interval = config.publish_interval_s if warm else config.steady_publish_interval_s
                    next_publish = time.monotonic() + interval
            except Exception as exc:  # the monitor must never take the agent down; the next sweep retries
                log.warning("link monitor: %s: %s", type(exc).__name__, exc)

    # ---- measurements ------------------------------------------------------------------------------
    def peers_to_ping(self, due_only: bool = False) -> list[str]:
        """Other publishers of the run (only those due, if asked), pinged longest ago first, at most
        ``max_peers``."""
        now = time.monotonic()
        with self._lock:
            candidates = [
                peer
                for peer in self._latest.publishers
                if peer != self.peer_id and (not due_only or now >= self._next_ping_at(peer))
            ]
        candidates.sort(key=lambda peer: (self._last_ping.get(peer, 0.0), peer))
        return candidates[: self.config.max_peers]

    def _next_ping_at(self, peer: str) -> float:
        """Monotonic time when ``peer`` is due (caller locks): each tick while warming up, then less."""
        last = self._last_ping.get(peer)
        if last is None:
            return 0.0
        warm = self.monitor.estimator(peer).rtt_samples < self.config.warmup_pings
        return last + (self.config.ping_interval_s if warm else self.config.steady_ping_interval_s) - 0.05

    def ping_sweep(self, every_peer: bool = False) -> dict[str, float | None]:
        """Ping the peers that are due (all, with ``every_peer``); feed the estimators; returns
        milliseconds (None = lost) per peer pinged."""
        peers = self.peers_to_ping(due_only=not every_peer)
        if not peers:
            return {}
        timeout_s = self.ping_timeout.seconds
        # The DHT process waits up to the libp2p call's own timeout; a slower answer still counts as lost.
        answers = self.dht.run_coroutine(functools.partial(ping_peers, peers, timeout_s))
        started = time.perf_counter()
        results: dict[str, float | None] = {}
        now = time.monotonic()
        with self._lock:
            for peer in peers:
                seconds = answers.get(peer)
                self._last_ping[peer] = now
                if seconds is None or seconds >= timeout_s:
                    self.ping_timeout.observe_timeout()
                    results[peer] = None
                else:
                    self.ping_timeout.observe(seconds)
                    results[peer] = seconds * 1000.0
                    window = self._recent_rtts.setdefault(peer, deque(maxlen=self.config.min_rtt_window))
                    window.append(seconds * 1000.0)
                self._raise(self.monitor.observe_ping(peer, results[peer]))
            self.pings_sent += len(peers)
            self.bytes_estimate += len(peers) * PING_WIRE_BYTES
        self._refresh_board()
        self.busy_seconds += time.perf_counter() - started
        return results

    def observe_round(self, members: Iterable[str], seconds: float, bytes_per_peer: int, ok: bool) -> None:
        """Passive measurement: one averaging round with ``members`` (this agent excluded or not)."""
        started = time.perf_counter()
        others = [peer for peer in members if peer != self.peer_id]
        with self._lock:
            self._group = tuple(others) if ok else self._group
            for peer in others:
                self._raise(self.monitor.observe_transfer(peer, bytes_per_peer, max(0.0, seconds), ok))
        self.busy_seconds += time.perf_counter() - started

    def _raise(self, alerts: list[LinkAlert]) -> None:
        for alert in alerts:
            self.alerts.append(alert)
            log.warning("link alert: %s", alert.message)
            if self.board is not None:
                level = AlertLevel.INFO if alert.kind.value == "peer_recovered" else AlertLevel.WARNING
                self.board.alert(alert.kind.value, alert.message, level=level, peer_id=alert.peer_id)

    # ---- the DHT summary ---------------------------------------------------------------------------
    def publish_and_read(self) -> SwarmLinks:
        """Store this agent's signed summary, read everyone's; returns (and keeps) what was read."""
        started = time.perf_counter()
        with self._lock:
            reports = self._published_reports()
        votes = self._votes()
        now = get_dht_time()
        value = {
            "peer": self.peer_id,
            "t": now,
            "links": encode_link_summary(reports),
            "q": [peer_key(peer) for peer in votes.quarantined],
            "p": [peer_key(peer) for peer in votes.probation],
        }
        size = len(value["links"]) + 6 * (len(value["q"]) + len(value["p"])) + len(self.peer_id) + 32
        size += len(self._validator.local_public_key) + 256  # subkey (public key) and RSA signature
        busy = time.perf_counter() - started
        self.dht.store(
            links_key(self.run_id),
            value,
            expiration_time=now + self.config.record_ttl_s,
            subkey=self._validator.local_public_key,
        )
        # latest=True: every replica is asked. With latest=False hivemind answers from the first store
        # holding the key, often this agent's own local store with only its own record (seen in the A/B
        # benchmark: plans collapsed to "one cluster from 1 summaries").
        found = self.dht.get(links_key(self.run_id), latest=True)
        started = time.perf_counter()
        entries = found.value if found is not None and isinstance(found.value, dict) else {}
        links, peer_votes = parse_links(entries, self._members())
        latest = SwarmLinks(links=links, votes=peer_votes, read_at=get_dht_time())
        replicas = min(STORE_REPLICAS, max(1, len(links)))
        read_size = size * max(1, len(entries))  # records are alike; each node asked returns all of them
        with self._lock:
            self._latest = latest
            self.publications += 1
            self.bytes_estimate += replicas * (size + DHT_REQUEST_OVERHEAD_BYTES)
            self.bytes_estimate += replicas * (read_size + DHT_REQUEST_OVERHEAD_BYTES)
        self._refresh_board()
        self.busy_seconds += busy + time.perf_counter() - started
        return latest

    # ---- reading -----------------------------------------------------------------------------------
    def snapshot(self) -> SwarmLinks:
        """Exactly what was last read from the DHT (own record as published): the input every agent
        shares, so plans computed from it agree."""
        with self._lock:
            return self._latest

    def latest(self) -> SwarmLinks:
        """The swarm's links as last read from the DHT, with this agent's own row up to date."""
        with self._lock:
            latest = self._latest
            own = {
                report.peer_id: CompactLink(report.rtt_ms, report.loss, report.quality)
                for report in self._published_reports()
            }
        return SwarmLinks(
            links={**latest.links, self.peer_id: own}, votes=latest.votes, read_at=latest.read_at
        )

    def _published_reports(self) -> list[PeerLinkReport]:
        """The estimators' rows with the RTT replaced by the minimum of the recent pings (caller locks).

        Scheduling delays on a loaded host only ever add to a measured RTT, so the windowed minimum
        tracks the path itself (as TCP's and BBR's min-RTT filters do); groups are planned on it.
        Quality classes and alerts keep using the EWMA and jitter, which do see the delays peers suffer.
        """
        rows = []
        for report in self.monitor.summary():
            window = self._recent_rtts.get(report.peer_id)
            rows.append(report.model_copy(update={"rtt_ms": min(window)}) if window else report)
        return rows

    def reports(self) -> list[PeerLinkReport]:
        with self._lock:
            return self.monitor.summary()

    def link_to(self, peer: str) -> PeerLinkReport | None:
        with self._lock:
            return self.monitor.report(peer)

    def _refresh_board(self) -> None:
        if self.board is None:
            return
        with self._lock:
            group = set(self._group)
            rows = [
                PeerView(
                    peer_id=report.peer_id,
                    rtt_ms=report.rtt_ms,
                    jitter_ms=report.jitter_ms,
                    loss=report.loss,
                    quality=report.quality.value if report.quality is not None else "unknown",
                    in_group=report.peer_id in group,
                    last_seen=report.timestamp,
                )
                for report in self.monitor.summary()
            ]
        self.board.set_peers(rows)
        self.board.update(rtt_matrix=self.latest().matrix())


def median_link(reports: Iterable[PeerLinkReport | None]) -> tuple[float | None, float | None]:
    """Median RTT (ms) and mean loss over the links given (None entries skipped); (None, None) if none."""
    known = [report for report in reports if report is not None]
    if not known:
        return None, None
    rtts = sorted(report.rtt_ms for report in known)
    middle = len(rtts) // 2
    rtt = rtts[middle] if len(rtts) % 2 else (rtts[middle - 1] + rtts[middle]) / 2
    loss = sum(report.loss for report in known) / len(known)
    return rtt, (loss if math.isfinite(loss) else None)
