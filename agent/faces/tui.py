"""The agent's terminal UI (Textual). ``hypergpu join`` opens it when stdout is a terminal.

Try it on sample data with ``python -m agent.faces.tui``. In the agent::

    AgentTui(board, actions, on_quit=agent.request_stop).run()

The TUI only reads the :class:`~agent.status.StatusBoard` and calls :class:`AgentActions`. Board events
arrive from the agent's threads through ``post_message`` (thread-safe) and are coalesced into at most
one repaint per :data:`REFRESH_INTERVAL_S`; slow work (claim, pause, opening a browser) runs in thread
workers that post their results back, so the UI never blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

from rich.text import Text
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import Button, DataTable, Footer, Label, RichLog, Static
from textual_plotext import PlotextPlot

from agent.errors import UserFacingError
from agent.faces.actions import AgentActions
from agent.faces.format import clock_utc, format_duration, format_mon, short_id
from agent.protocol.messages import NodeStatus
from agent.status import AgentSnapshot, Alert, AlertLevel, PeerView, StatusBoard, StatusEvent

REFRESH_INTERVAL_S = 0.25
"""Longest delay between a board change and the repaint that shows it."""

QUALITY_STYLES = {
    "excellent": "bold green",
    "good": "green",
    "fair": "yellow",
    "poor": "dark_orange",
    "critical": "bold red",
    "unknown": "dim",
}
QUALITY_ORDER = {name: rank for rank, name in enumerate(QUALITY_STYLES)}
LEVEL_STYLES = {AlertLevel.INFO: "cyan", AlertLevel.WARNING: "yellow", AlertLevel.ERROR: "bold red"}
STATE_STYLES = {
    NodeStatus.TRAINING: "bold green",
    NodeStatus.AVERAGING: "bold green",
    NodeStatus.JOINING: "bold yellow",
    NodeStatus.LOADING_STATE: "bold yellow",
    NodeStatus.PAUSED: "bold yellow",
    NodeStatus.QUARANTINED: "bold red",
    NodeStatus.STOPPED: "bold red",
}


class PanelLayout(StrEnum):
    """What ``t`` cycles through."""

    ALL = "all"
    TRAINING = "training"
    SWARM = "swarm"


@dataclass(frozen=True)
class PeerColumn:
    key: str
    label: str


PEER_COLUMNS = (
    PeerColumn("peer_id", "Peer"),
    PeerColumn("rtt_ms", "RTT ms"),
    PeerColumn("jitter_ms", "Jitter ms"),
    PeerColumn("loss", "Loss"),
    PeerColumn("quality", "Quality"),
    PeerColumn("in_group", "Group"),
    PeerColumn("last_seen", "Last seen"),
)


def _peer_sort_value(peer: PeerView, key: str) -> Any:
    if key == "quality":
        return QUALITY_ORDER.get(peer.quality, len(QUALITY_ORDER))
    if key == "in_group":
        return 0 if peer.in_group else 1
    if key == "last_seen":
        return None if peer.last_seen is None else -peer.last_seen.timestamp()
    return getattr(peer, key)


def sort_peers(peers: tuple[PeerView, ...], key: str, reverse: bool) -> list[PeerView]:
    """Peers ordered by column ``key``; unknown values always last, ties broken by peer id."""
    known = [p for p in peers if _peer_sort_value(p, key) is not None]
    unknown = sorted((p for p in peers if _peer_sort_value(p, key) is None), key=lambda p: p.peer_id)
    known.sort(key=lambda p: p.peer_id)
    known.sort(key=lambda p: _peer_sort_value(p, key), reverse=reverse)
    return known + unknown


class BoardEvent(Message):
    """A board event, posted from whichever thread the agent emitted it on."""

    def __init__(self, event: StatusEvent) -> None:
        super().__init__()
        self.event = event


class ActionFinished(Message):
    """A worker's outcome: ``ok`` False means ``text`` explains the failure."""

    def __init__(self, action: str, ok: bool, text: str) -> None:
        super().__init__()
        self.action = action
        self.ok = ok
        self.text = text


class ConfirmClaim(ModalScreen[bool]):
    """Asks before sending a claim transaction. Dismisses with True to go ahead."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "confirm", "Claim"),
        Binding("n,escape", "cancel", "Cancel"),
    ]

    def __init__(self, amount: str) -> None:
        super().__init__()
        self._amount = amount

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(f"Claim {self._amount}?", id="question")
            yield Label("This sends a transaction from this agent's wallet.", classes="muted")
            with Horizontal(id="dialog-buttons"):
                yield Button("Claim (y)", variant="primary", id="confirm")
                yield Button("Cancel (n)", id="cancel")

    def on_mount(self) -> None:
        self.query_one("#cancel", Button).focus()

    @on(Button.Pressed, "#confirm")
    def action_confirm(self) -> None:
        self.dismiss(True)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(False)


class AgentTui(App[None]):
    """The agent's dashboard.

    Args:
        board: the status board to show.
        actions: what pause/resume and claim call; None makes the TUI read-only.
        on_quit: called once when the operator quits; it must return quickly (ask the agent to stop,
            do not wait for it).
    """

    TITLE = "HyperGPU agent"
    CSS = """
    Screen { layout: vertical; }
    #header { height: 2; padding: 0 1; background: $boost; }
    #body { height: 1fr; }
    #training { width: 2fr; height: 1fr; }
    #swarm { width: 3fr; height: 1fr; }
    #training-stats { height: 3; padding: 0 1; }
    PlotextPlot { height: 1fr; min-height: 8; }
    #peers { height: 1fr; min-height: 5; border: round $primary-darken-2; }
    #lower { height: 12; }
    #alerts { width: 2fr; border: round $primary-darken-2; scrollbar-gutter: stable; overflow-x: hidden; }
    #rewards { width: 1fr; border: round $primary-darken-2; padding: 0 1; }
    #rewards-text { height: 1fr; }
    #claim { width: 100%; }
    .hidden { display: none; }
    ConfirmClaim { align: center middle; }
    #dialog { width: 60; height: auto; padding: 1 2; border: thick $warning; background: $surface; }
    #dialog-buttons { height: auto; margin-top: 1; }
    #dialog-buttons Button { margin-right: 2; }
    .muted { color: $text-muted; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("p", "toggle_pause", "Pause/Resume"),
        Binding("t", "toggle_panels", "Panels"),
        Binding("s", "cycle_sort", "Sort peers"),
        Binding("c", "claim", "Claim"),
        Binding("w", "open_web", "Web page"),
        Binding("q", "quit_agent", "Quit"),
    ]

    def __init__(
        self,
        board: StatusBoard,
        actions: AgentActions | None = None,
        *,
        on_quit: Callable[[], None] | None = None,
    ) -> None:
        super().__init__()
        self.board = board
        self.actions = actions
        self._on_quit = on_quit
        self._unsubscribe: Callable[[], None] | None = None
        self._dirty = False
        self.layout_mode = PanelLayout.ALL
        self.sort_key = "rtt_ms"
        self.sort_reverse = False

    # ---- layout ----------------------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        yield Static(id="header")
        with Horizontal(id="body"):
            with Vertical(id="training"):
                yield Static(id="training-stats")
                yield PlotextPlot(id="loss-plot")
                yield PlotextPlot(id="accuracy-plot")
            with Vertical(id="swarm"):
                table: DataTable[Text | str] = DataTable(id="peers", cursor_type="row", zebra_stripes=True)
                table.border_title = "Peers"
                yield table
                with Horizontal(id="lower"):
                    alerts = RichLog(id="alerts", wrap=True, markup=False, max_lines=500, min_width=20)
                    alerts.border_title = "Alerts"
                    yield alerts
                    with Vertical(id="rewards"):
                        yield Static(id="rewards-text")
                        yield Button("Claim (c)", id="claim", variant="warning")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#rewards").border_title = "Rewards"
        table = self.query_one("#peers", DataTable)
        for column in PEER_COLUMNS:
            table.add_column(self._column_label(column), key=column.key)
        # after the first layout, so the log knows its width and wraps long alerts
        self.call_after_refresh(self._write_alerts, self.board.alerts())
        self._unsubscribe = self.board.subscribe(lambda event: self.post_message(BoardEvent(event)))
        self.set_interval(REFRESH_INTERVAL_S, self._refresh_if_dirty)
        self.refresh_views()

    def on_unmount(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    # ---- board events ----------------------------------------------------------------------------
    def on_board_event(self, message: BoardEvent) -> None:
        if message.event.kind == "alert":
            self._write_alert(Alert.model_validate(message.event.data))
        self._dirty = True

    def _refresh_if_dirty(self) -> None:
        if self._dirty:
            self.refresh_views()

    def refresh_views(self) -> None:
        """Repaint every panel from the board now."""
        self._dirty = False
        snap = self.board.snapshot()
        self._render_header(snap)
        self._render_training(snap)
        self._render_peers(snap)
        self._render_rewards(snap)

    def _render_header(self, snap: AgentSnapshot) -> None:
        state = snap.status.value.replace("_", " ")
        if snap.paused and snap.status != NodeStatus.PAUSED:
            state += " (paused)"
        device = f"{snap.device} ({snap.device_name})" if snap.device_name else snap.device
        line = Text.assemble(
            ("HyperGPU ", "bold"),
            ("run ", "dim"),
            (snap.run_id or "–", "bold"),
            ("  peer ", "dim"),
            short_id(snap.peer_id),
            ("  wallet ", "dim"),
            short_id(snap.wallet, keep=4) if snap.wallet else "none",
            ("  device ", "dim"),
            device,
        )
        status = Text.assemble(
            ("state ", "dim"),
            (state.upper(), STATE_STYLES.get(snap.status, "bold")),
            ("  round ", "dim"),
            (str(snap.round), "bold"),
            ("  epoch ", "dim"),
            (f"{snap.epoch:.2f}", "bold"),
            ("  web ", "dim"),
            snap.web_url or "off",
        )
        self.query_one("#header", Static).update(Text("\n").join([line, status]))

    def _render_training(self, snap: AgentSnapshot) -> None:
        eta = format_duration(snap.eta_to_target_s)
        target = f" to {snap.target_accuracy:.2%}" if snap.target_accuracy is not None else ""
        stats = Text.assemble(
            ("loss ", "dim"),
            ("–" if snap.loss is None else f"{snap.loss:.4f}", "bold"),
            ("  accuracy ", "dim"),
            ("–" if snap.accuracy is None else f"{snap.accuracy:.2%}", "bold"),
            ("  samples/s ", "dim"),
            (f"{snap.samples_per_s:,.0f}", "bold"),
            ("\nlocal batch ", "dim"),
            (str(snap.local_batch_size), "bold"),
            ("  local steps ", "dim"),
            (str(snap.local_steps), "bold"),
            ("  samples ", "dim"),
            (f"{snap.samples_total:,}", "bold"),
            ("\nETA", "dim"),
            (target, "dim"),
            (": ", "dim"),
            (eta, "bold"),
        )
        self.query_one("#training-stats", Static).update(stats)
        history = self.board.metrics_history()
        start = history[0].timestamp if history else None
        minutes = [(m.timestamp - start).total_seconds() / 60 for m in history] if start else []
        loss_plot = self.query_one("#loss-plot", PlotextPlot)
        plt = loss_plot.plt
        plt.clear_data()
        plt.title("Loss" if history else "Loss (no data yet)")
        plt.xlabel("minutes")
        if history:
            plt.plot(minutes, [m.loss for m in history], marker="braille", color="red")
        loss_plot.refresh()
        accuracy_plot = self.query_one("#accuracy-plot", PlotextPlot)
        plt = accuracy_plot.plt
        plt.clear_data()
        plt.title("Accuracy" if any(m.accuracy is not None for m in history) else "Accuracy (no data yet)")
        plt.xlabel("minutes")
        points = [(x, m.accuracy) for x, m in zip(minutes, history, strict=True) if m.accuracy is not None]
        if points:
            plt.plot([x for x, _ in points], [a for _, a in points], marker="braille", color="green")
            plt.ylim(0, 1)
        accuracy_plot.refresh()

    def _column_label(self, column: PeerColumn) -> Text:
        if column.key != self.sort_key:
            return Text(f"{column.label}  ")  # room for the arrow, so the column does not jump
        return Text(f"{column.label} {'▼' if self.sort_reverse else '▲'}", style="bold")

    def _render_peers(self, snap: AgentSnapshot) -> None:
        table = self.query_one("#peers", DataTable)
        for column in PEER_COLUMNS:
            table.columns[column.key].label = self._column_label(column)  # type: ignore[index]
        selected = None
        if table.row_count and table.cursor_row >= 0:
            with_cursor = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
            selected = with_cursor.value
        table.clear()
        members = set(snap.group)
        for peer in sort_peers(snap.peers, self.sort_key, self.sort_reverse):
            in_group = peer.in_group or peer.peer_id in members
            emphasis = "bold" if in_group else ""
            quality_style = QUALITY_STYLES.get(peer.quality, "dim")
            table.add_row(
                Text(short_id(peer.peer_id), style=emphasis),
                Text("unknown" if peer.rtt_ms is None else f"{peer.rtt_ms:.1f}", justify="right"),
                Text("unknown" if peer.jitter_ms is None else f"{peer.jitter_ms:.1f}", justify="right"),
                Text("unknown" if peer.loss is None else f"{peer.loss:.1%}", justify="right"),
                Text(f"● {peer.quality}", style=quality_style),
                Text("★ in group", style="bold cyan") if in_group else Text("–", style="dim"),
                Text(clock_utc(peer.last_seen)),
                key=peer.peer_id,
            )
        if selected is not None and selected in table.rows:
            table.move_cursor(row=table.get_row_index(selected), animate=False)
        in_group = sum(1 for p in snap.peers if p.in_group or p.peer_id in members)
        table.border_subtitle = (
            f"{len(snap.peers)} peers, {in_group} in current group" if snap.peers else "no peers yet"
        )
        table.refresh()

    def _render_rewards(self, snap: AgentSnapshot) -> None:
        rewards = snap.rewards
        button = self.query_one("#claim", Button)
        if not rewards.configured:
            text = Text(rewards.note or "not configured", style="bold yellow")
        else:
            text = Text.assemble(
                ("pending ", "dim"),
                (format_mon(rewards.pending_wei), "bold"),
                ("\nclaimed ", "dim"),
                (format_mon(rewards.claimed_wei), "bold"),
            )
            if rewards.note:
                text.append(f"\n{rewards.note}", style="dim")
        self.query_one("#rewards-text", Static).update(text)
        button.disabled = self._claim_refusal(snap) is not None

    def _write_alerts(self, alerts: list[Alert]) -> None:
        for alert in alerts:
            self._write_alert(alert)

    def _write_alert(self, alert: Alert) -> None:
        log = self.query_one("#alerts", RichLog)
        line = Text.assemble(
            (clock_utc(alert.timestamp), "dim"),
            " ",
            (f"{alert.level.value.upper():7}", LEVEL_STYLES.get(alert.level, "")),
            " ",
            alert.message,
        )
        log.write(line)

    # ---- actions ---------------------------------------------------------------------------------
    def action_toggle_panels(self) -> None:
        order = list(PanelLayout)
        self.layout_mode = order[(order.index(self.layout_mode) + 1) % len(order)]
        self.query_one("#training").set_class(self.layout_mode == PanelLayout.SWARM, "hidden")
        self.query_one("#swarm").set_class(self.layout_mode == PanelLayout.TRAINING, "hidden")

    def action_cycle_sort(self) -> None:
        """Keyboard sorting: next column ascending; the same column again reverses it."""
        keys = [c.key for c in PEER_COLUMNS]
        if not self.sort_reverse:
            self.sort_reverse = True
        else:
            self.sort_key = keys[(keys.index(self.sort_key) + 1) % len(keys)]
            self.sort_reverse = False
        self._render_peers(self.board.snapshot())

    @on(DataTable.HeaderSelected, "#peers")
    def sort_by_header(self, event: DataTable.HeaderSelected) -> None:
        key = str(event.column_key.value)
        self.sort_reverse = not self.sort_reverse if key == self.sort_key else False
        self.sort_key = key
        self._render_peers(self.board.snapshot())

    def action_toggle_pause(self) -> None:
        if self.actions is None:
            self.notify("read-only: this TUI has no agent actions", severity="warning")
            return
        self._pause_or_resume(resume=self.board.snapshot().paused)

    @work(thread=True, exclusive=True, group="pause")
    def _pause_or_resume(self, *, resume: bool) -> None:
        assert self.actions is not None
        name = "resume" if resume else "pause"
        try:
            (self.actions.resume if resume else self.actions.pause)()
            self.post_message(ActionFinished(name, True, "training resumed" if resume else "training paused"))
        except UserFacingError as error:
            self.post_message(ActionFinished(name, False, str(error)))
        except Exception as error:  # a failing agent must be reported, not take the UI down
            self.post_message(ActionFinished(name, False, f"failed: {error}"))

    def _claim_refusal(self, snap: AgentSnapshot) -> str | None:
        """Why a claim cannot be made now, or None when it can."""
        if self.actions is None:
            return "read-only: this TUI has no agent actions"
        if not snap.rewards.configured:
            return "rewards are not configured: set up a chain first"
        if snap.rewards.pending_wei <= 0:
            return "nothing to claim yet"
        return None

    @on(Button.Pressed, "#claim")
    def action_claim(self) -> None:
        snap = self.board.snapshot()
        refusal = self._claim_refusal(snap)
        if refusal is not None:
            self.notify(refusal, severity="warning")
            return

        def confirmed(go: bool | None) -> None:
            if go:
                self.notify("claiming…")
                self._claim()
            else:
                self.notify("claim cancelled")

        self.push_screen(ConfirmClaim(format_mon(snap.rewards.pending_wei)), confirmed)

    @work(thread=True, exclusive=True, group="claim")
    def _claim(self) -> None:
        assert self.actions is not None
        try:
            self.post_message(ActionFinished("claim", True, self.actions.claim()))
        except UserFacingError as error:
            self.post_message(ActionFinished("claim", False, str(error)))
        except Exception as error:  # a chain failure must reach the operator, not kill the UI
            self.post_message(ActionFinished("claim", False, f"claim failed: {error}"))

    def on_action_finished(self, message: ActionFinished) -> None:
        self.notify(f"{message.action}: {message.text}", severity="information" if message.ok else "error")
        self._dirty = True

    def action_open_web(self) -> None:
        url = self.board.snapshot().web_url
        if not url:
            self.notify("the web page is off: start the agent with --web-port", severity="warning")
            return
        self.notify(f"web page: {url}")
        self._open_in_browser(url)

    @work(thread=True, exclusive=True, group="browser")
    def _open_in_browser(self, url: str) -> None:
        # webbrowser may launch a program and wait for it; keep that off the UI thread
        try:
            self.open_url(url)
        except Exception as error:  # no browser on this host is normal (a server over SSH)
            self.post_message(
                ActionFinished("web page", False, f"could not open a browser ({error}); open {url}")
            )

    def action_quit_agent(self) -> None:
        if self._on_quit is not None:
            self._on_quit()
            self._on_quit = None
        self.exit()


if __name__ == "__main__":
    from agent.faces.demo import demo_board

    AgentTui(demo_board()).run()
