"""The agent's JSON API, CSV export, Prometheus metrics and action tokens (FastAPI TestClient)."""

from __future__ import annotations

import csv
import io
from datetime import timedelta

import pytest
from faces_fakes import FakeActions
from fastapi.testclient import TestClient

from agent.errors import PortInUseError, UserFacingError
from agent.faces.demo import DEMO_START, demo_board
from agent.faces.web import create_app, serve_in_thread
from agent.protocol.messages import AveragingRoundReport, TrainingMetrics
from agent.status import AgentSnapshot, Alert, PeerView, StatusBoard

TOKEN = "s3cret-token-for-tests"


def _client(
    board: StatusBoard, *, token: str | None = None, actions: FakeActions | None = None
) -> TestClient:
    return TestClient(create_app(board, action_token=token, actions=actions))


def test_status_peers_alerts_and_history_validate_as_protocol_models() -> None:
    board = demo_board(points=40)
    client = _client(board)
    status = AgentSnapshot.model_validate(client.get("/api/status").json())
    assert status.model_dump(mode="json") == board.snapshot().model_dump(mode="json")
    assert status.rtt_matrix.peers and len(status.rtt_matrix.rtt_ms) == len(status.rtt_matrix.peers)
    peers = [PeerView.model_validate(p) for p in client.get("/api/peers").json()]
    assert [p.peer_id for p in peers] == [p.peer_id for p in board.snapshot().peers]
    alerts = [Alert.model_validate(a) for a in client.get("/api/alerts").json()]
    assert [a.kind for a in alerts] == ["peer_degraded", "round_failed", "peer_lost", "readmitted"]
    history = [TrainingMetrics.model_validate(m) for m in client.get("/api/metrics/history").json()]
    assert len(history) == 40 and history == board.metrics_history()
    rounds = [AveragingRoundReport.model_validate(r) for r in client.get("/api/rounds?limit=3").json()]
    assert [r.round for r in rounds] == [11, 12, 13]


def test_history_filters_by_time_and_count_and_takes_naive_times_as_utc() -> None:
    client = _client(demo_board(points=40))
    since = (DEMO_START + timedelta(seconds=5 * 30)).replace(tzinfo=None).isoformat()
    after = client.get("/api/metrics/history", params={"since": since}).json()
    assert [m["step"] for m in after] == [16 * k for k in range(31, 40)]
    assert len(client.get("/api/metrics/history?limit=5").json()) == 5
    assert client.get("/api/metrics/history?limit=0").status_code == 422
    assert client.get("/api/metrics/history?since=yesterday").status_code == 422


def test_chain_and_network_panels_say_not_configured_until_filled() -> None:
    client = _client(StatusBoard())
    status = client.get("/api/status").json()
    assert status["rewards"] == {
        "configured": False,
        "pending_wei": 0,
        "claimed_wei": 0,
        "note": "chain not configured",
    }
    assert status["rtt_matrix"] == {"peers": [], "rtt_ms": []}
    assert client.get("/api/peers").json() == []


def test_csv_export_has_one_row_per_point_and_empty_accuracy_when_not_evaluated() -> None:
    board = demo_board(points=9)
    response = _client(board).get("/api/metrics/history.csv")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert "attachment" in response.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 9
    assert rows[0]["timestamp"] == "2026-11-28T06:00:00.000Z"
    assert rows[1]["accuracy"] == "" and rows[4]["accuracy"] != ""
    assert [float(r["loss"]) for r in rows] == pytest.approx([m.loss for m in board.metrics_history()])


def test_prometheus_metrics_cover_training_network_and_chain() -> None:
    board = demo_board(points=30)
    client = _client(board)
    board.record_round(
        AveragingRoundReport(
            run_id="mnist-demo", round=99, group_id="", members=(), samples=0, compute_seconds=0,
            wait_seconds=1.5, bytes_sent=0, bytes_received=0, success=False,
        )
    )  # fmt: skip
    text = client.get("/metrics").text
    lines = {
        line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line[:1] != "#"
    }
    assert lines["hypergpu_training_loss"] == pytest.approx(board.snapshot().loss)
    assert lines["hypergpu_training_samples_total"] == board.snapshot().samples_total
    failed = sum(1 for r in board.rounds() if not r.success)
    assert lines['hypergpu_averaging_rounds_total{outcome="failed"}'] == failed
    assert lines['hypergpu_averaging_rounds_total{outcome="success"}'] == len(board.rounds()) - failed
    peer = board.snapshot().peers[0]
    assert lines[f'hypergpu_peer_rtt_seconds{{peer_id="{peer.peer_id}"}}'] == pytest.approx(
        peer.rtt_ms / 1000
    )
    assert lines['hypergpu_alerts_total{kind="peer_lost",level="error"}'] == 1
    assert lines["hypergpu_rewards_pending_wei"] == pytest.approx(1.25e18)
    assert lines['hypergpu_agent_state{hypergpu_agent_state="training"}'] == 1
    assert "process_cpu_seconds_total" in lines


def test_healthz_and_page() -> None:
    client = _client(StatusBoard())
    assert client.get("/healthz").json() == {"status": "ok", "state": "joining"}
    page = client.get("/")
    assert page.status_code == 200 and "<title>HyperGPU agent</title>" in page.text
    assert "script-src 'self'" in page.headers["content-security-policy"]
    for asset in ("static/app.js", "static/style.css"):
        assert client.get(f"/{asset}").status_code == 200


@pytest.mark.parametrize("action", ["pause", "resume", "claim"])
def test_actions_are_refused_when_the_page_is_read_only(action: str) -> None:
    board = demo_board(points=5)
    actions = FakeActions(board)
    client = _client(board, token=None, actions=actions)
    response = client.post(f"/api/actions/{action}", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 403 and "read-only" in response.json()["detail"]
    assert actions.calls == []
    assert client.get("/api/actions").json() == {"enabled": False}


@pytest.mark.parametrize(
    ("headers", "status"),
    [
        ({}, 401),
        ({"Authorization": "Bearer wrong-token-123"}, 403),
        ({"Authorization": f"Basic {TOKEN}"}, 401),
    ],
)
def test_actions_need_the_right_bearer_token(headers: dict[str, str], status: int) -> None:
    board = demo_board(points=5)
    actions = FakeActions(board)
    client = _client(board, token=TOKEN, actions=actions)
    response = client.post("/api/actions/pause", headers=headers)
    assert response.status_code == status
    assert actions.calls == [] and not board.snapshot().paused


def test_actions_with_the_token_pause_resume_and_claim() -> None:
    board = demo_board(points=5)
    actions = FakeActions(board)
    client = _client(board, token=TOKEN, actions=actions)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert client.get("/api/actions").json() == {"enabled": True}
    assert client.post("/api/actions/pause", headers=auth).json()["action"] == "pause"
    assert client.get("/api/status").json()["paused"] is True
    client.post("/api/actions/resume", headers=auth)
    claim = client.post("/api/actions/claim", headers=auth).json()
    assert claim == {"action": "claim", "message": "claimed in tx 0xfeed"}
    assert actions.calls == ["pause", "resume", "claim"]
    assert board.snapshot().rewards.pending_wei == 0


def test_a_refused_claim_is_a_409_with_the_agents_reason() -> None:
    board = demo_board(points=5)
    client = _client(board, token=TOKEN, actions=FakeActions(board, claim_error="nothing to claim yet"))
    response = client.post("/api/actions/claim", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 409 and response.json() == {"detail": "nothing to claim yet"}


class _BrokenAgent(FakeActions):
    def claim(self) -> str:
        raise ConnectionError("RPC https://testnet-rpc.monad.xyz timed out")


def test_a_failed_claim_is_a_502_that_says_why() -> None:
    board = demo_board(points=5)
    client = _client(board, token=TOKEN, actions=_BrokenAgent(board))
    response = client.post("/api/actions/claim", headers={"Authorization": f"Bearer {TOKEN}"})
    assert response.status_code == 502
    assert response.json() == {"detail": "claim failed: RPC https://testnet-rpc.monad.xyz timed out"}


def test_short_tokens_are_refused() -> None:
    with pytest.raises(UserFacingError, match="at least 8"):
        create_app(StatusBoard(), action_token="abc", actions=None)


def test_openapi_documents_the_models_and_the_bearer_scheme() -> None:
    schema = _client(StatusBoard()).get("/openapi.json").json()
    for path in (
        "/api/status",
        "/api/peers",
        "/api/metrics/history",
        "/api/alerts",
        "/api/events",
        "/metrics",
    ):
        assert path in schema["paths"], path
    assert {"AgentSnapshot", "PeerView", "TrainingMetrics", "Alert"} <= set(schema["components"]["schemas"])
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_serve_in_thread_reports_a_taken_port_clearly() -> None:
    board = StatusBoard()
    first = serve_in_thread(create_app(board, action_token=None, actions=None), port=0)
    try:
        with pytest.raises(PortInUseError, match=f"web port {first.port} .* is taken; pass --web-port"):
            serve_in_thread(create_app(board, action_token=None, actions=None), port=first.port)
    finally:
        first.stop()
