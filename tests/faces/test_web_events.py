"""The live event stream (/api/events) over a real uvicorn server: delivery, latency, shutdown."""

from __future__ import annotations

import json
import statistics
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from agent.faces.web import WebServerHandle, create_app, serve_in_thread
from agent.protocol.messages import AveragingRoundReport
from agent.status import StatusBoard

LATENCY_EVENTS = 100
LATENCY_GOAL_MS = 50.0


def _report(round_number: int) -> AveragingRoundReport:
    return AveragingRoundReport(
        run_id="latency", round=round_number, group_id="ab", members=("a", "b"), samples=64,
        compute_seconds=0.1, wait_seconds=0.01, bytes_sent=10, bytes_received=10, success=True,
    )  # fmt: skip


@pytest.fixture
def served() -> Iterator[tuple[StatusBoard, WebServerHandle]]:
    board = StatusBoard()
    handle = serve_in_thread(create_app(board, action_token=None, actions=None))
    yield board, handle
    handle.stop()


def _events(response: httpx.Response) -> Iterator[tuple[str, dict]]:
    """(event name, JSON data) pairs from an SSE response, skipping keep-alive comments."""
    name, data = "message", ""
    for line in response.iter_lines():
        if line.startswith("event: "):
            name = line.removeprefix("event: ")
        elif line.startswith("data: "):
            data = line.removeprefix("data: ")
        elif line == "" and data:
            yield name, json.loads(data)
            name, data = "message", ""


def test_stream_starts_with_a_snapshot_then_delivers_board_events(served) -> None:
    board, handle = served
    board.update(run_id="r1")
    with httpx.stream("GET", f"{handle.url}api/events", timeout=5) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        events = _events(response)
        name, data = next(events)
        assert name == "snapshot" and data["run_id"] == "r1"
        board.record_round(_report(7))
        board.alert("peer_lost", "peer x not seen for 30 s", peer_id="x")
        board.update(round=7)
        received = [next(events) for _ in range(3)]
    assert [n for n, _ in received] == ["round", "alert", "status"]
    assert received[0][1]["round"] == 7
    assert received[1][1]["message"] == "peer x not seen for 30 s"
    assert received[2][1]["round"] == 7


def test_round_to_stream_latency_median_is_under_goal(served) -> None:
    """Time from board.record_round() to the event's arrival on an SSE client (same process)."""
    board, handle = served
    sent: dict[int, float] = {}
    arrived: dict[int, float] = {}
    ready = threading.Event()

    def reader() -> None:
        with httpx.stream("GET", f"{handle.url}api/events", timeout=10) as response:
            for name, data in _events(response):
                if name == "snapshot":
                    ready.set()
                elif name == "round":
                    arrived[data["round"]] = time.perf_counter()
                    if len(arrived) == LATENCY_EVENTS:
                        return

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    assert ready.wait(5), "the stream did not open"
    for number in range(1, LATENCY_EVENTS + 1):
        sent[number] = time.perf_counter()
        board.record_round(_report(number))
        time.sleep(0.01)
    thread.join(10)
    assert len(arrived) == LATENCY_EVENTS, f"only {len(arrived)} of {LATENCY_EVENTS} events arrived"
    latencies_ms = sorted((arrived[n] - sent[n]) * 1000 for n in sent)
    median = statistics.median(latencies_ms)
    p95 = latencies_ms[int(0.95 * len(latencies_ms)) - 1]
    print(f"\nSSE latency over {LATENCY_EVENTS} rounds: median {median:.2f} ms, p95 {p95:.2f} ms")
    assert median < LATENCY_GOAL_MS


def test_stop_ends_open_streams_promptly(served) -> None:
    _, handle = served
    with httpx.stream("GET", f"{handle.url}api/events", timeout=5) as response:
        next(_events(response))
        started = time.monotonic()
        handle.stop()
        assert time.monotonic() - started < 3
        assert not handle._thread.is_alive()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{handle.url}healthz", timeout=1)
