"""A status board filled with plausible, fully deterministic sample data.

For screenshots (``scripts/screenshot-web``), snapshot tests and trying the faces without a swarm
(``python -m agent.faces.demo`` serves the page at http://127.0.0.1:8470/). A running agent never
uses it: its board is filled by the training loop.
"""

from __future__ import annotations

import math
import threading
from datetime import UTC, datetime, timedelta

from agent.protocol.messages import AveragingRoundReport, NodeStatus, TrainingMetrics
from agent.status import AlertLevel, PeerView, RewardsView, RttMatrix, StatusBoard

DEMO_START = datetime(2026, 11, 28, 6, 0, 0, tzinfo=UTC)
"""Every timestamp of the demo is an offset from this moment."""

DEMO_PEERS = (
    "12D3KooWAgentSelf7dQ1x9V3mR8nYpL2sTuC4kBhE6fJwZa",
    "12D3KooWBravo2Lq8Xc5Hn1VtR6yPe3MdK9sGuA7jFwNbQ",
    "12D3KooWCharlie4Np6Wz2Fs8KcY1rTb5LhQ3mVd9xGeJu",
    "12D3KooWDelta9Hs3Jr7Bv1PnX5kLc8QwE2tYz6mAfUgRd",
    "12D3KooWEcho5Tm1Kq9Gx4ZwN7bVc2HsR8yLp3jDfAeUoW",
    "12D3KooWFoxtrot8Rb6Yd2Mn5QsW1kJx9Hc4Lv7tGpEzAi",
)
DEMO_WALLET = "0x5A0b54D5dc17e0AadC383d2db43B0a0D3E029c4c"


def _rtt(i: int, j: int) -> float:
    """A made-up but consistent RTT between demo peers i and j: two regions, one slow peer."""
    base = 8.0 if (i < 3) == (j < 3) else 85.0
    slow = 140.0 if 5 in (i, j) else 0.0
    return round(base + slow + 3.0 * abs(i - j), 1)


def demo_board(*, points: int = 120, chain_configured: bool = True, paused: bool = False) -> StatusBoard:
    """A board as an agent 10 minutes into an MNIST run would have it.

    Args:
        points: how many metrics points (one every 5 s).
        chain_configured: False shows the rewards panel's "not configured" state.
        paused: whether local training shows as paused.
    """
    board = StatusBoard()
    me = DEMO_PEERS[0]
    for k in range(points):
        t = k / max(points - 1, 1)
        board.record_metrics(
            TrainingMetrics(
                loss=round(2.3 * math.exp(-4.0 * t) + 0.05 + 0.03 * math.sin(k), 4),
                accuracy=round(0.1 + 0.87 * (1 - math.exp(-5.0 * t)), 4) if k % 4 == 0 else None,
                epoch=round(3.0 * t, 3),
                step=16 * k,
                samples_per_s=round(4800 + 400 * math.sin(k / 7), 1),
                timestamp=DEMO_START + timedelta(seconds=5 * k),
            )
        )
    rounds = points // 3
    for r in range(1, rounds + 1):
        success = r % 13 != 0
        members = DEMO_PEERS[: 3 + r % 3] if success else ()
        board.record_round(
            AveragingRoundReport(
                run_id="mnist-demo",
                round=r,
                group_id=f"{r:08x}" if success else "",
                members=members,
                samples=1024,
                compute_seconds=0.21,
                wait_seconds=round(0.05 + 0.01 * (r % 5), 3),
                bytes_sent=75_000,
                bytes_received=75_000,
                success=success,
                timestamp=DEMO_START + timedelta(seconds=15 * r),
            )
        )
    alert_times = [DEMO_START + timedelta(seconds=s) for s in (95, 196, 410, 470)]
    board.alert(
        "peer_degraded",
        "peer 12D3Ko…7tGpEz RTT 230 ms, jitter 41 ms: moved to its own group",
        peer_id=DEMO_PEERS[5],
        timestamp=alert_times[0],
    )
    board.alert("round_failed", "round 13 failed: no group formed in 1.0 s", timestamp=alert_times[1])
    board.alert(
        "peer_lost",
        "peer 12D3Ko…mAfUgR not seen for 30 s",
        level=AlertLevel.ERROR,
        peer_id=DEMO_PEERS[3],
        timestamp=alert_times[2],
    )
    board.alert(
        "readmitted",
        "peer 12D3Ko…mAfUgR is back",
        level=AlertLevel.INFO,
        peer_id=DEMO_PEERS[3],
        timestamp=alert_times[3],
    )
    qualities = ("excellent", "good", "excellent", "fair", "poor")
    peers = [
        PeerView(
            peer_id=peer,
            rtt_ms=_rtt(0, i),
            jitter_ms=round(0.8 + 0.15 * _rtt(0, i) / 10, 1),
            loss=0.0 if i < 4 else 0.04,
            quality=qualities[i - 1],
            in_group=i < 3,
            last_seen=DEMO_START + timedelta(seconds=600 - 2 * i),
        )
        for i, peer in enumerate(DEMO_PEERS[1:], start=1)
    ]
    peers.append(PeerView(peer_id="12D3KooWGolf3Newcomer1xYz8VbN4kQpR6tLs2HdJ9wMe"))
    last = board.metrics_history()[-1] if points else None
    board.update(
        run_id="mnist-demo",
        peer_id=me,
        wallet=DEMO_WALLET,
        device="cpu",
        device_name="2 CPU threads",
        status=NodeStatus.PAUSED if paused else NodeStatus.TRAINING,
        paused=paused,
        round=rounds,
        epoch=last.epoch if last else 0.0,
        step=last.step if last else 0,
        loss=last.loss if last else None,
        accuracy=0.9521,
        samples_per_s=last.samples_per_s if last else 0.0,
        samples_total=1024 * rounds,
        local_batch_size=64,
        local_steps=16,
        target_accuracy=0.98,
        eta_to_target_s=312.0,
        group=DEMO_PEERS[:3],
        peers=tuple(peers),
        rtt_matrix=RttMatrix(
            peers=DEMO_PEERS,
            rtt_ms=tuple(
                tuple(None if i == j or {i, j} == {2, 4} else _rtt(i, j) for j in range(len(DEMO_PEERS)))
                for i in range(len(DEMO_PEERS))
            ),
        ),
        rewards=RewardsView(
            configured=True,
            pending_wei=1_250_000_000_000_000_000,
            claimed_wei=3_000_000_000_000_000_000,
            note="",
        )
        if chain_configured
        else RewardsView(),
        web_url="http://127.0.0.1:8470/",
        started_at=DEMO_START,
    )
    return board


if __name__ == "__main__":
    from agent.faces.web import create_app, serve_in_thread

    handle = serve_in_thread(create_app(demo_board(), action_token=None, actions=None), port=8470)
    print(f"demo page at {handle.url} (Ctrl+C stops)")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        handle.stop()
