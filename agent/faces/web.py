"""The agent's web page and JSON API (FastAPI), served from a background thread.

``hypergpu join --web-port 8470`` serves it; in code::

    app = create_app(board, action_token=None, actions=None)
    handle = serve_in_thread(app, host="127.0.0.1", port=8470)
    ...
    handle.stop()

Read-only by default: the action endpoints answer 403 unless an ``action_token`` is set, and then
need ``Authorization: Bearer <token>``. Routes: ``/`` (the page from ``web/``), ``/api/status``,
``/api/peers``, ``/api/metrics/history`` (+ ``.csv``), ``/api/rounds``, ``/api/alerts``,
``/api/events`` (server-sent events), ``/api/actions/{pause,resume,claim}``, ``/metrics``
(Prometheus) and ``/healthz``. The coordinator's swarm page belongs in ``coordinator_lite`` as an app
of its own (static files under ``web/swarm/``); it can reuse :func:`serve_in_thread` and
:func:`add_security_headers`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import secrets
import socket
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC
from pathlib import Path
from typing import Annotated

import uvicorn
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse, PlainTextResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.sse import EventSourceResponse, ServerSentEvent
from fastapi.staticfiles import StaticFiles
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from agent.errors import PortInUseError, UserFacingError
from agent.faces.actions import AgentActions
from agent.faces.export import metrics_csv
from agent.faces.prometheus import board_registry
from agent.protocol.messages import AveragingRoundReport, NodeStatus, TrainingMetrics
from agent.protocol.timeutil import UtcDatetime
from agent.status import AgentSnapshot, Alert, PeerView, StatusBoard

log = logging.getLogger(__name__)

WEB_DIR = Path(__file__).resolve().parents[2] / "web"
"""The page's static files (index.html, app.js, style.css), kept at the repository root."""

SSE_RETRY_MS = 2000
"""How long a browser waits before reconnecting a dropped event stream."""

# The page loads nothing from elsewhere and runs no inline script.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)


class Health(BaseModel):
    model_config = ConfigDict(frozen=True)

    status: str = Field(description="always 'ok' while the server answers")
    state: NodeStatus = Field(description="the agent's lifecycle state")


class ActionResult(BaseModel):
    """What an action did, in one line for the operator."""

    model_config = ConfigDict(frozen=True)

    action: str = Field(description="pause | resume | claim")
    message: str


class ActionsInfo(BaseModel):
    model_config = ConfigDict(frozen=True)

    enabled: bool = Field(description="False when the page is read-only (no token configured)")


class ErrorDetail(BaseModel):
    detail: str


_bearer = HTTPBearer(
    auto_error=False, description="the token given to the agent with --web-token (or web.token in the config)"
)


def require_action_token(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> AgentActions:
    """Let a request through to the agent's actions only with the right bearer token."""
    action_token: str | None = request.app.state.action_token
    actions: AgentActions | None = request.app.state.actions
    if action_token is None or actions is None:
        raise HTTPException(
            status_code=403,
            detail="this agent's web page is read-only; start the agent with --web-token to allow actions",
        )
    if credentials is None:
        raise HTTPException(
            status_code=401,
            detail="missing token: send the header 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )
    # compare_digest: the time taken must not reveal how much of the token matched
    if not secrets.compare_digest(credentials.credentials.encode(), action_token.encode()):
        raise HTTPException(status_code=403, detail="wrong token")
    return actions


GuardedActions = Annotated[AgentActions, Depends(require_action_token)]


def _api_router(board: StatusBoard, sse_stop: threading.Event) -> APIRouter:
    router = APIRouter(prefix="/api", tags=["status"])

    @router.get("/status", summary="Everything the page and the TUI show at this moment")
    def status() -> AgentSnapshot:
        return board.snapshot()

    @router.get("/peers", summary="The peers table: RTT, jitter, loss, quality, group membership")
    def peers() -> list[PeerView]:
        return list(board.snapshot().peers)

    @router.get("/metrics/history", summary="Training metrics over time, oldest first")
    def metrics_history(
        since: Annotated[UtcDatetime | None, Query(description="only points after this UTC time")] = None,
        limit: Annotated[int | None, Query(ge=1, le=100_000, description="only the last N points")] = None,
    ) -> list[TrainingMetrics]:
        items = board.metrics_history(since.astimezone(UTC) if since else None)
        return items[-limit:] if limit else items

    @router.get(
        "/metrics/history.csv",
        summary="The metrics history as CSV (timestamp, step, epoch, loss, accuracy, samples_per_s)",
        response_class=PlainTextResponse,
        responses={200: {"content": {"text/csv": {}}}},
    )
    def metrics_history_csv() -> Response:
        return Response(
            content=metrics_csv(board.metrics_history()),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": 'attachment; filename="hypergpu-metrics.csv"'},
        )

    @router.get("/rounds", summary="Averaging rounds this agent took part in, oldest first")
    def rounds(
        limit: Annotated[int | None, Query(ge=1, le=100_000, description="only the last N rounds")] = None,
    ) -> list[AveragingRoundReport]:
        items = board.rounds()
        return items[-limit:] if limit else items

    @router.get("/alerts", summary="Alerts, oldest first")
    def alerts(
        limit: Annotated[int | None, Query(ge=1, le=100_000, description="only the last N alerts")] = None,
    ) -> list[Alert]:
        items = board.alerts()
        return items[-limit:] if limit else items

    @router.get(
        "/events",
        response_class=EventSourceResponse,
        summary="Live updates as server-sent events",
        description=(
            "First a `snapshot` event with the whole status, then one event per change: `status` (changed "
            "snapshot fields), `metrics`, `round`, `alert`. Each event's id is the board's sequence number."
        ),
    )
    async def events(request: Request) -> AsyncIterator[ServerSentEvent]:
        queue, unsubscribe = board.subscribe_asyncio(asyncio.get_running_loop())
        try:
            yield ServerSentEvent(
                event="snapshot", data=board.snapshot().model_dump(mode="json"), retry=SSE_RETRY_MS
            )
            while not sse_stop.is_set():
                try:
                    # the timeout only bounds how long a server shutdown waits for this stream
                    event = await asyncio.wait_for(queue.get(), timeout=0.5)
                except TimeoutError:
                    continue
                yield ServerSentEvent(event=event.kind, id=str(event.seq), data=event.data)
        finally:
            unsubscribe()

    return router


def _actions_router() -> APIRouter:
    router = APIRouter(prefix="/api/actions", tags=["actions"])
    refusals = {
        401: {"model": ErrorDetail, "description": "no bearer token"},
        403: {"model": ErrorDetail, "description": "read-only page, or wrong token"},
    }

    @router.get("", summary="Whether actions are enabled on this page")
    def actions_info(request: Request) -> ActionsInfo:
        state = request.app.state
        return ActionsInfo(enabled=state.action_token is not None and state.actions is not None)

    @router.post("/pause", responses=refusals, summary="Pause local training (needs the token)")
    def pause(agent: GuardedActions) -> ActionResult:
        agent.pause()
        return ActionResult(action="pause", message="local training paused")

    @router.post("/resume", responses=refusals, summary="Resume local training (needs the token)")
    def resume(agent: GuardedActions) -> ActionResult:
        agent.resume()
        return ActionResult(action="resume", message="local training resumed")

    @router.post(
        "/claim",
        responses={
            **refusals,
            409: {"model": ErrorDetail, "description": "nothing to claim, or no chain"},
            502: {"model": ErrorDetail, "description": "the claim transaction failed"},
        },
        summary="Claim pending rewards (needs the token)",
    )
    def claim(agent: GuardedActions) -> ActionResult:
        try:
            return ActionResult(action="claim", message=agent.claim())
        except UserFacingError as error:
            raise HTTPException(status_code=409, detail=str(error)) from error
        except Exception as error:  # the chain or the agent failed, not the request: say so, keep serving
            log.exception("claim failed")
            raise HTTPException(status_code=502, detail=f"claim failed: {error}") from error

    return router


def add_security_headers(app: FastAPI) -> None:
    """A strict Content-Security-Policy and friends on every response (the swarm page reuses this)."""

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        response.headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        return response


def create_app(
    board: StatusBoard,
    *,
    action_token: str | None,
    actions: AgentActions | None,
    static_dir: Path = WEB_DIR,
) -> FastAPI:
    """The agent's web app.

    Args:
        board: the status board to read.
        action_token: bearer token that unlocks the action endpoints; None keeps the page read-only.
        actions: what the action endpoints call; None keeps the page read-only.
        static_dir: folder with index.html, app.js and style.css.
    """
    if action_token is not None and len(action_token) < 8:
        raise UserFacingError(
            "the web token is too short; give at least 8 characters (e.g. `openssl rand -hex 16`)"
        )
    registry, collector = board_registry(board)
    collector.start()
    sse_stop = threading.Event()

    @contextlib.asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        sse_stop.set()
        collector.stop()

    app = FastAPI(
        title="HyperGPU agent",
        summary="Live status of one HyperGPU training agent",
        version="1",
        lifespan=lifespan,
    )
    app.state.sse_stop = sse_stop
    app.state.action_token = action_token
    app.state.actions = actions
    app.include_router(_api_router(board, sse_stop))
    app.include_router(_actions_router())

    @app.get("/metrics", tags=["ops"], response_class=PlainTextResponse, summary="Prometheus metrics")
    def metrics() -> Response:
        return Response(content=generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/healthz", tags=["ops"], summary="Liveness")
    def healthz() -> Health:
        return Health(status="ok", state=board.snapshot().status)

    index = static_dir / "index.html"

    @app.get("/", include_in_schema=False)
    def page() -> Response:
        if not index.is_file():
            return PlainTextResponse(
                f"the web page's files are missing ({index}); reinstall HyperGPU or use the /api routes",
                status_code=404,
            )
        return FileResponse(index, headers={"Cache-Control": "no-cache"})

    if static_dir.is_dir():
        app.mount("/static", StaticFiles(directory=static_dir), name="static")
    else:
        log.warning("web page files not found in %s; serving the API only", static_dir)

    add_security_headers(app)
    return app


@dataclass
class WebServerHandle:
    """A running server: its ``url`` and ``port`` (the real one when port 0 was asked), and ``stop()``."""

    host: str
    port: int
    _server: uvicorn.Server
    _thread: threading.Thread
    _app: FastAPI
    _stopped: bool = field(default=False)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def stop(self, timeout: float = 5.0) -> None:
        """End open event streams, stop the server and wait up to ``timeout`` seconds for its thread."""
        if self._stopped:
            return
        self._stopped = True
        sse_stop = getattr(self._app.state, "sse_stop", None)
        if isinstance(sse_stop, threading.Event):
            sse_stop.set()
        self._server.should_exit = True
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._server.force_exit = True
            self._thread.join(timeout)


def serve_in_thread(
    app: FastAPI, host: str = "127.0.0.1", port: int = 0, *, startup_timeout: float = 10.0
) -> WebServerHandle:
    """Serve ``app`` with uvicorn in a daemon thread so the training loop keeps the main thread.

    Args:
        app: the ASGI app, e.g. from :func:`create_app`.
        host: IP address to listen on; keep 127.0.0.1 unless the page must be reachable from elsewhere.
        port: TCP port; 0 picks a free one (read it from the handle).
        startup_timeout: seconds to wait for the server to accept connections.

    Raises:
        PortInUseError: the port is taken.
        UserFacingError: the address cannot be bound or the server did not start.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise PortInUseError(
                f"web port {port} on {host} is taken; pass --web-port with a free port (or 0 for any)"
            ) from error
        raise UserFacingError(
            f"cannot listen on {host}:{port} for the web page ({error.strerror})"
        ) from error
    sock.listen(128)
    sock.set_inheritable(True)
    bound_port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, log_level="warning", access_log=False, timeout_graceful_shutdown=2, lifespan="on", ws="none"
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="hypergpu-web", daemon=True)
    thread.start()
    handle = WebServerHandle(host=host, port=bound_port, _server=server, _thread=thread, _app=app)
    waited = 0.0
    while not server.started:
        if not thread.is_alive() or waited >= startup_timeout:
            handle.stop()
            sock.close()
            raise UserFacingError(f"the web page server on {host}:{bound_port} did not start; see the log")
        threading.Event().wait(0.02)
        waited += 0.02
    return handle
