"""Which reported rounds count: signatures, wallet <-> peer bindings, group confirmation and outliers.

A pure function of its inputs (receipts, bindings, what was counted before, the time), so it is tested
without a DHT or a chain. The rules:

- every report must carry a valid EIP-712 signature (:mod:`agent.protocol.reports`) under the run's
  domain, be for this run, come from a peer whose wallet binding is valid, and be signed by that wallet;
- a report that was counted before (same digest) is *replayed* and adds nothing; a second, different
  report of a peer for a group it was already counted in, or two different reports of one peer for one
  group, are *duplicates* and none of them counts;
- a member's round counts only when the group confirms it: reports signed over the same group id and the
  same member list by at least ``max(2, min_group_size)`` distinct wallets (the peer's own included), so
  a lone agent cannot invent rounds. Unconfirmed reports wait (``pending``) for the rest of the group's
  reports until ``pending_ttl_s`` passes;
- outliers are flagged and their claims clipped to what is plausible: samples/s far above the declared
  benchmark or the median of peers on the same hardware, far below it (inflated compute time), compute
  time longer than the wall time since the peer's previous round; groups whose bytes sent and received
  do not add up are flagged.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Protocol

from agent.protocol.bindings import SignedNodeBinding, verify_node_binding
from agent.protocol.reports import (
    GroupReceipt,
    ReportDomain,
    ReportError,
    SignedRoundReport,
    recover_report_signer,
    report_digest,
)


class RejectReason(StrEnum):
    """Why a report does not count."""

    OUT_OF_RUN = "out_of_run"
    FORGED = "forged"
    UNBOUND = "unbound"
    REPLAYED = "replayed"
    DUPLICATE = "duplicate"
    FROM_THE_FUTURE = "from_the_future"
    UNCONFIRMED = "unconfirmed"


class OutlierKind(StrEnum):
    TOO_FAST = "too_fast"
    TOO_SLOW = "too_slow"
    COMPUTE_EXCEEDS_WALL_TIME = "compute_exceeds_wall_time"
    SAMPLES_WITHOUT_COMPUTE = "samples_without_compute"
    BYTES_DO_NOT_ADD_UP = "bytes_do_not_add_up"


@dataclass(frozen=True)
class Rejection:
    """One report that does not count, with a one-line ``detail``."""

    peer_id: str
    round: int
    group_id: str
    reason: RejectReason
    detail: str


@dataclass(frozen=True)
class OutlierFlag:
    peer_id: str
    group_id: str
    kind: OutlierKind
    detail: str


@dataclass(frozen=True)
class BoundPeer:
    """A peer's verified wallet and declared hardware (from its :class:`SignedNodeBinding`)."""

    peer_id: str
    wallet: str
    device: str
    hardware_name: str
    benchmark_samples_per_s: int


@dataclass(frozen=True)
class CountedMark:
    """What the coordinator remembers of a report it counted: its digest and member-list hash."""

    peer_id: str
    digest: bytes
    members_hash: bytes
    wallet: str


class CountedEvidence(Protocol):
    """Read access to the reports counted in earlier epochs (coordinator_lite.state implements it)."""

    def counted(self, peer_id: str, group_id: str) -> CountedMark | None: ...

    def counted_in_group(self, group_id: str) -> list[CountedMark]: ...

    def last_timestamp(self, peer_id: str) -> int | None: ...


class NothingCounted:
    """A :class:`CountedEvidence` for the first epoch and for tests."""

    def counted(self, peer_id: str, group_id: str) -> CountedMark | None:
        return None

    def counted_in_group(self, group_id: str) -> list[CountedMark]:
        return []

    def last_timestamp(self, peer_id: str) -> int | None:
        return None


@dataclass(frozen=True)
class AcceptedRound:
    """One counted round of one peer. ``compute_ms`` and ``samples`` are clipped when flagged."""

    peer_id: str
    wallet: str
    round: int
    group_id: str
    group_size: int
    samples: int
    compute_ms: int
    claimed_samples: int
    claimed_compute_ms: int
    bytes_sent: int
    bytes_received: int
    update_norm_micro: int
    group_median_norm_micro: int
    flagged_by: int
    """How many other confirming members flagged this peer's update as far outside the group's."""
    timestamp: int
    digest: bytes
    members_hash: bytes
    flags: tuple[OutlierKind, ...] = ()


@dataclass(frozen=True)
class MissedRound:
    """``peer_id`` was a member of a confirmed group but its own report is missing or rejected."""

    peer_id: str
    group_id: str


@dataclass(frozen=True)
class VerificationPolicy:
    """Thresholds. Times in seconds, ratios dimensionless.

    Args:
        min_group_size: signatures (distinct wallets) a group needs before its rounds count; never below 2.
        max_future_s: how far a report's timestamp may lie ahead of the coordinator's clock.
        run_start: Unix seconds; reports older than this (minus ``max_future_s``) are out of the run.
        pending_ttl_s: how long an unconfirmed report waits for the rest of its group.
        rate_factor: a peer faster than ``rate_factor`` times its benchmark or its hardware class's median,
            or slower than the benchmark divided by it, is an outlier.
        wall_time_slack_s: tolerance when comparing compute time with the wall time between rounds.
        bytes_tolerance: relative mismatch of a group's bytes sent vs received that is flagged.
    """

    min_group_size: int = 2
    max_future_s: float = 300.0
    run_start: float | None = None
    pending_ttl_s: float = 3600.0
    rate_factor: float = 3.0
    wall_time_slack_s: float = 5.0
    bytes_tolerance: float = 0.5

    @property
    def confirmations_needed(self) -> int:
        return max(2, self.min_group_size)


@dataclass
class VerificationResult:
    accepted: list[AcceptedRound] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    pending: list[SignedRoundReport] = field(default_factory=list)
    missed: list[MissedRound] = field(default_factory=list)
    outliers: list[OutlierFlag] = field(default_factory=list)


@dataclass
class BindingBook:
    """Verified wallet <-> peer bindings of one run. The first valid binding wins.

    As on chain (``TrainingRegistry``), within a run a peer id has one wallet and a wallet one peer id: a
    later binding that would change either is refused (it could only steal or duplicate rounds). A
    re-published binding of the same pair may update the declared hardware.
    """

    run_id: str
    domain: ReportDomain
    peers: dict[str, BoundPeer] = field(default_factory=dict)
    records: dict[str, SignedNodeBinding] = field(default_factory=dict)

    def add(self, signed: SignedNodeBinding) -> BoundPeer:
        """Verify and record ``signed``; raises :class:`ReportError` with the reason when refused."""
        wallet = verify_node_binding(signed, self.domain, expected_run_id=self.run_id)
        binding = signed.binding
        known = self.peers.get(binding.peer_id)
        if known is not None and known.wallet != wallet:
            raise ReportError(
                f"peer {binding.peer_id} is already bound to {known.wallet}; binding to {wallet} refused"
            )
        if known is None:
            other = next((peer for peer in self.peers.values() if peer.wallet == wallet), None)
            if other is not None:
                raise ReportError(
                    f"wallet {wallet} is already bound to peer {other.peer_id}; binding to "
                    f"{binding.peer_id} refused (use one wallet per agent)"
                )
        bound = BoundPeer(
            binding.peer_id, wallet, binding.device, binding.hardware_name, binding.benchmark_samples_per_s
        )
        self.peers[binding.peer_id] = bound
        self.records[binding.peer_id] = signed
        return bound

    def add_all(self, bindings: Iterable[SignedNodeBinding]) -> list[str]:
        """Add each binding; return one line per refused binding."""
        refused = []
        for signed in bindings:
            try:
                self.add(signed)
            except ReportError as exc:
                refused.append(exc.reason)
        return refused


def _reject(signed: SignedRoundReport, reason: RejectReason, detail: str) -> Rejection:
    report = signed.report
    return Rejection(report.peer_id, report.round, report.group_id, reason, detail)


@dataclass
class _Candidate:
    signed: SignedRoundReport
    digest: bytes
    wallet: str


def verify_evidence(
    run_id: str,
    domain: ReportDomain,
    receipts: Iterable[GroupReceipt],
    bindings: Mapping[str, BoundPeer],
    *,
    now: float,
    counted: CountedEvidence | None = None,
    pending: Iterable[SignedRoundReport] = (),
    policy: VerificationPolicy | None = None,
) -> VerificationResult:
    """Decide which reports in ``receipts`` (plus the still ``pending`` ones) count.

    Args:
        run_id: the run being scored; reports of other runs are rejected.
        domain: the EIP-712 domain reports must be signed under.
        receipts: receipts read from the DHT (duplicates across receipts are expected and merged).
        bindings: verified bindings by peer id (see :class:`BindingBook`).
        now: the coordinator's clock, Unix seconds.
        counted: what earlier epochs counted (``None``: nothing).
        pending: unconfirmed reports carried over from earlier calls.
    """
    policy = policy or VerificationPolicy()
    counted = counted or NothingCounted()
    result = VerificationResult()

    # 1. one entry per distinct report content; copies with other signatures are kept as alternatives
    variants: dict[bytes, list[SignedRoundReport]] = defaultdict(list)
    all_reports: list[SignedRoundReport] = list(pending)
    for receipt in receipts:
        all_reports.extend(receipt.reports)
    for signed in dict.fromkeys(all_reports):  # the same copy arrives in every member's receipt
        if signed.report.run_id != run_id:
            result.rejections.append(
                _reject(signed, RejectReason.OUT_OF_RUN, f"report is for run {signed.report.run_id!r}")
            )
            continue
        variants[report_digest(signed.report, domain)].append(signed)

    # 2. individual checks: signature, binding, time, earlier epochs. A copy with a bad signature must
    # not get the genuine report thrown out, so the first variant that passes is taken.
    candidates: dict[tuple[str, str], list[_Candidate]] = defaultdict(list)
    for digest, copies in variants.items():
        first_rejection: Rejection | None = None
        for signed in copies:
            rejection, wallet = _check_report(signed, digest, domain, bindings, counted, now, policy)
            if rejection is None:
                key = (signed.report.peer_id, signed.report.group_id)
                candidates[key].append(_Candidate(signed, digest, wallet))
                break
            first_rejection = first_rejection or rejection
        else:
            if first_rejection is not None:
                result.rejections.append(first_rejection)

    # 3. one report per peer per group; partition by (group id, member list)
    partitions: dict[tuple[str, bytes], list[_Candidate]] = defaultdict(list)
    for (peer_id, group_id), found in candidates.items():
        if len(found) > 1:
            for candidate in found:
                result.rejections.append(
                    _reject(
                        candidate.signed,
                        RejectReason.DUPLICATE,
                        f"{len(found)} different reports of {peer_id} for group {group_id}; none counts",
                    )
                )
            continue
        report = found[0].signed.report
        partitions[(group_id, report.members_hash)].append(found[0])

    # 4. group confirmation
    for (group_id, members_hash), members in partitions.items():
        earlier = [mark for mark in counted.counted_in_group(group_id) if mark.members_hash == members_hash]
        wallets = {candidate.wallet for candidate in members} | {mark.wallet for mark in earlier}
        if len(wallets) < policy.confirmations_needed:
            for candidate in members:
                report = candidate.signed.report
                if now - report.timestamp > policy.pending_ttl_s:
                    result.rejections.append(
                        _reject(
                            candidate.signed,
                            RejectReason.UNCONFIRMED,
                            f"only {len(wallets)} of the group's wallets signed within "
                            f"{policy.pending_ttl_s:.0f} s; {policy.confirmations_needed} needed",
                        )
                    )
                else:
                    result.pending.append(candidate.signed)
            continue
        result.accepted.extend(_accept_group(members))
        reported = {candidate.signed.report.peer_id for candidate in members}
        reported |= {mark.peer_id for mark in earlier}
        result.missed.extend(
            MissedRound(peer, group_id) for peer in members[0].signed.report.members if peer not in reported
        )
        result.outliers.extend(_group_bytes_flags(members, policy.bytes_tolerance))

    _flag_rate_outliers(result, bindings, counted, policy)
    return result


def _check_report(
    signed: SignedRoundReport,
    digest: bytes,
    domain: ReportDomain,
    bindings: Mapping[str, BoundPeer],
    counted: CountedEvidence,
    now: float,
    policy: VerificationPolicy,
) -> tuple[Rejection | None, str]:
    report = signed.report
    try:
        signer = recover_report_signer(signed, domain, digest)
    except ReportError as exc:
        return _reject(signed, RejectReason.FORGED, exc.reason), ""
    if signer != signed.signer_address:
        return _reject(
            signed,
            RejectReason.FORGED,
            f"signature does not match signer {signed.signer_address} (forged, altered, or another chain)",
        ), ""
    bound = bindings.get(report.peer_id)
    if bound is None:
        return _reject(signed, RejectReason.UNBOUND, f"peer {report.peer_id} has no valid wallet binding"), ""
    if bound.wallet != signer:
        return _reject(
            signed,
            RejectReason.FORGED,
            f"signed by {signer}, but {report.peer_id} is bound to {bound.wallet}",
        ), ""
    if report.timestamp > now + policy.max_future_s:
        return _reject(
            signed, RejectReason.FROM_THE_FUTURE, f"timestamp {report.timestamp} is ahead of the clock"
        ), ""
    if policy.run_start is not None and report.timestamp < policy.run_start - policy.max_future_s:
        return _reject(
            signed, RejectReason.OUT_OF_RUN, f"timestamp {report.timestamp} is before the run started"
        ), ""
    earlier = counted.counted(report.peer_id, report.group_id)
    if earlier is not None:
        if earlier.digest == digest:
            return _reject(signed, RejectReason.REPLAYED, "this report was already counted"), ""
        return _reject(
            signed,
            RejectReason.DUPLICATE,
            f"{report.peer_id} was already counted for group {report.group_id} with another report",
        ), ""
    return None, signer


def _accept_group(members: list[_Candidate]) -> list[AcceptedRound]:
    norms = [c.signed.report.update_norm_micro for c in members if c.signed.report.update_norm_micro > 0]
    median_norm = int(statistics.median(norms)) if norms else 0
    flagged_by: dict[str, int] = defaultdict(int)
    for candidate in members:
        for peer in candidate.signed.report.flagged:
            if peer != candidate.signed.report.peer_id:
                flagged_by[peer] += 1
    accepted = []
    for candidate in members:
        report = candidate.signed.report
        accepted.append(
            AcceptedRound(
                peer_id=report.peer_id,
                wallet=candidate.wallet,
                round=report.round,
                group_id=report.group_id,
                group_size=len(report.members),
                samples=report.samples,
                compute_ms=report.compute_ms,
                claimed_samples=report.samples,
                claimed_compute_ms=report.compute_ms,
                bytes_sent=report.bytes_sent,
                bytes_received=report.bytes_received,
                update_norm_micro=report.update_norm_micro,
                group_median_norm_micro=median_norm,
                flagged_by=flagged_by[report.peer_id],
                timestamp=report.timestamp,
                digest=candidate.digest,
                members_hash=report.members_hash,
            )
        )
    return accepted


def _group_bytes_flags(members: list[_Candidate], tolerance: float) -> list[OutlierFlag]:
    """In an all-reduce every byte one member sends another receives: the two sums should match."""
    reports = [candidate.signed.report for candidate in members]
    if len(reports) != len(reports[0].members):
        return []  # cannot judge a group with missing reports
    sent = sum(report.bytes_sent for report in reports)
    received = sum(report.bytes_received for report in reports)
    larger = max(sent, received)
    if larger < 65_536 or abs(sent - received) <= larger * tolerance:
        return []
    detail = f"group {reports[0].group_id} sent {sent} bytes in all but received {received}"
    return [
        OutlierFlag(report.peer_id, report.group_id, OutlierKind.BYTES_DO_NOT_ADD_UP, detail)
        for report in reports
    ]


def _flag_rate_outliers(
    result: VerificationResult,
    bindings: Mapping[str, BoundPeer],
    counted: CountedEvidence,
    policy: VerificationPolicy,
) -> None:
    """Flag and clip implausible rates and compute times in ``result.accepted`` (in place)."""
    factor = policy.rate_factor
    rates_by_class: dict[tuple[str, str], list[float]] = defaultdict(list)
    for accepted in result.accepted:
        bound = bindings[accepted.peer_id]
        if accepted.compute_ms > 0:
            rates_by_class[(bound.device, bound.hardware_name)].append(
                accepted.samples / accepted.compute_ms * 1000
            )
    # median of per-peer rates, so that one peer with many rounds does not set its own yardstick
    class_median = {
        hardware: statistics.median(rates) for hardware, rates in rates_by_class.items() if len(rates) >= 3
    }

    previous_timestamp: dict[str, int | None] = {}
    clipped: list[AcceptedRound] = []
    for accepted in sorted(result.accepted, key=lambda a: (a.peer_id, a.timestamp)):
        bound = bindings[accepted.peer_id]
        found: list[tuple[OutlierKind, str]] = []
        samples, compute_ms = accepted.samples, accepted.compute_ms

        if accepted.peer_id not in previous_timestamp:
            previous_timestamp[accepted.peer_id] = counted.last_timestamp(accepted.peer_id)
        before = previous_timestamp[accepted.peer_id]
        if before is not None and accepted.timestamp >= before:
            wall_ms = (accepted.timestamp - before + policy.wall_time_slack_s) * 1000
            if compute_ms > wall_ms:
                wall_s = accepted.timestamp - before
                detail = f"{compute_ms / 1000:.1f} s of compute in {wall_s} s of wall time"
                found.append((OutlierKind.COMPUTE_EXCEEDS_WALL_TIME, detail))
                compute_ms = int(wall_ms)
        previous_timestamp[accepted.peer_id] = accepted.timestamp

        if samples > 0 and compute_ms == 0:
            found.append((OutlierKind.SAMPLES_WITHOUT_COMPUTE, f"{samples} samples in 0 ms of compute"))
            samples = 0
        elif compute_ms > 0:
            rate = samples / compute_ms * 1000
            yardsticks = [
                bound.benchmark_samples_per_s,
                class_median.get((bound.device, bound.hardware_name)),
            ]
            known = [yardstick * factor for yardstick in yardsticks if yardstick]
            ceiling = min(known) if known else None
            if ceiling is not None and rate > ceiling:
                detail = f"{rate:.0f} samples/s, more than {ceiling:.0f} is plausible"
                found.append((OutlierKind.TOO_FAST, detail))
                samples = int(ceiling * compute_ms / 1000)
            floor = bound.benchmark_samples_per_s / factor
            if floor > 0 and rate < floor:
                detail = f"{rate:.0f} samples/s, below {floor:.0f} (inflated compute time?)"
                found.append((OutlierKind.TOO_SLOW, detail))
                compute_ms = int(samples / floor * 1000)
        result.outliers.extend(OutlierFlag(accepted.peer_id, accepted.group_id, k, d) for k, d in found)
        flags = tuple(kind for kind, _ in found)
        clipped.append(replace(accepted, samples=samples, compute_ms=compute_ms, flags=flags))
    result.accepted = clipped
