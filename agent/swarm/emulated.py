"""A local swarm behind the emulated WAN: the shaping process, the agents' addresses, round events, stats.

``hypergpu swarm --network regions3`` and ``hypergpu bench --network ...`` build an
:class:`EmulatedNetwork` and hand it to :class:`agent.swarm.launcher.LocalSwarm` (``SwarmPlan.network``).
The launcher then:

1. starts the shaper (``python -m agent.network.shaper``) before anything else and waits for its
   ports file (see ``agent/network/README.md``);
2. starts agent ``i`` with ``--host/--port`` = its real loopback address and ``--announce-host/
   --announce-port`` = its proxy, so every libp2p byte between agents passes through the shaper;
3. sends the scenario's ``at_round`` events when the swarm reaches their round (the shaper fires its
   ``at_s`` events itself);
4. stops the shaper after the agents, leaving ``netem-stats.json`` (bytes per agent pair) and
   ``netem-summary.json`` in the run folder.
"""

from __future__ import annotations

import json
import logging
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from agent.errors import ConfigError, UserFacingError
from agent.network.scenario import Scenario, load_scenario

log = logging.getLogger("hypergpu.emulated")

READY_TIMEOUT_S = 60.0
REPLY_TIMEOUT_S = 10.0


class ShaperError(UserFacingError):
    """The shaping process did not start or stopped answering."""

    exit_code = 6


@dataclass(frozen=True)
class AgentAddress:
    """Where agent ``index`` listens (its real address) and what it announces (its proxy)."""

    index: int
    listen_host: str
    listen_port: int
    announce_host: str
    announce_port: int

    def join_args(self) -> list[str]:
        """``hypergpu join`` flags that wire the agent behind its proxy."""
        return [
            "--host",
            self.listen_host,
            "--port",
            str(self.listen_port),
            "--announce-host",
            self.announce_host,
            "--announce-port",
            str(self.announce_port),
        ]


class EmulatedNetwork:
    """The shaper process of one local swarm. Not started by the constructor: the launcher starts it.

    Args:
        source: a built-in scenario name (``regions3``, ``perfect``, ...) or a TOML/JSON file.
        agents: the swarm's size; checked against the scenario (a clear error if it does not fit).
        run_dir: the run folder: ``netem.json`` (addresses), ``netem-stats.json``, ``netem.log``.
        priority: scheduling the shaper asks for (``realtime``, ``nice``, ``normal``).
    """

    def __init__(self, source: str | Path, agents: int, run_dir: Path, priority: str = "realtime") -> None:
        self.scenario: Scenario = load_scenario(source)
        self.agent_count = self.scenario.agent_count(agents)
        path = Path(source)
        # The shaper is its own process: hand it an absolute path so its working folder does not matter.
        self.source = str(path.resolve()) if path.is_file() else str(source)
        self.run_dir = run_dir
        self.priority = priority
        self.addresses: list[AgentAddress] = []
        self.fired: list[dict[str, Any]] = []
        self._pending = list(self.scenario.round_events())
        self._process: subprocess.Popen[bytes] | None = None
        self._replies: queue.Queue[dict[str, Any]] = queue.Queue()
        self._lock = threading.Lock()
        self._log_file: BinaryIO | None = None

    @property
    def ports_file(self) -> Path:
        return self.run_dir / "netem.json"

    @property
    def stats_file(self) -> Path:
        return self.run_dir / "netem-stats.json"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start the shaper and wait until every proxy listens (raises :class:`ShaperError` otherwise)."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.ports_file.unlink(missing_ok=True)
        self._log_file = open(self.run_dir / "netem.log", "wb")  # noqa: SIM115 - owned by the child
        self._process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "agent.network.shaper",
                "--scenario",
                self.source,
                "--agents",
                str(self.agent_count),
                "--ports-file",
                str(self.ports_file),
                "--stats-file",
                str(self.stats_file),
                "--priority",
                self.priority,
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log_file,
            start_new_session=True,
        )
        threading.Thread(target=self._read_replies, name="netem-replies", daemon=True).start()
        try:
            ready = self._replies.get(timeout=READY_TIMEOUT_S)
        except queue.Empty:
            ready = {}
        if not ready.get("ready"):
            self.stop()
            raise ShaperError(
                f"the network shaper did not start within {READY_TIMEOUT_S:g} s "
                f"(scenario {self.scenario.name!r}); see {self.run_dir / 'netem.log'}"
            )
        table = json.loads(self.ports_file.read_text())
        self.addresses = [
            AgentAddress(
                index=int(entry["index"]),
                listen_host=str(entry["listen_host"]),
                listen_port=int(entry["listen_port"]),
                announce_host=str(entry["announce_host"]),
                announce_port=int(entry["announce_port"]),
            )
            for entry in table["agents"]
        ]
        log.info(
            "network %r: shaper pid %d, %d agents behind proxies",
            self.scenario.name,
            self._process.pid,
            len(self.addresses),
        )

    def _read_replies(self) -> None:
        process = self._process
        assert process is not None and process.stdout is not None
        for raw in process.stdout:
            try:
                self._replies.put(json.loads(raw))
            except ValueError:
                log.debug("shaper printed a non-JSON line: %r", raw[:200])

    def address(self, index: int) -> AgentAddress:
        """Agent ``index``'s addresses; a clear error for an index the scenario has no proxy for."""
        if not 0 <= index < len(self.addresses):
            raise ConfigError(
                f"agent {index} has no emulated link: the shaper serves agents 0-{len(self.addresses) - 1} "
                f"(scenario {self.scenario.name!r}); start the swarm with more agents"
            )
        return self.addresses[index]

    def join_args(self, index: int) -> list[str]:
        return self.address(index).join_args()

    def command(self, command: dict[str, Any]) -> dict[str, Any]:
        """Send one control line and return the shaper's reply (see ``agent/network/serve.py``)."""
        with self._lock:
            if not self.running or self._process is None or self._process.stdin is None:
                raise ShaperError("the network shaper is not running")
            self._process.stdin.write((json.dumps(command) + "\n").encode())
            self._process.stdin.flush()
            try:
                return self._replies.get(timeout=REPLY_TIMEOUT_S)
            except queue.Empty as exc:
                raise ShaperError(f"the network shaper did not answer {command.get('kind')!r}") from exc

    def on_round(self, round_number: int) -> list[dict[str, Any]]:
        """Fire every ``at_round`` event whose round the swarm has reached; returns those fired now."""
        fired: list[dict[str, Any]] = []
        while self._pending and (self._pending[0].at_round or 0) <= round_number and self.running:
            event = self._pending.pop(0)
            reply = self.command(event.model_dump(mode="json", exclude_none=True))
            record = {"round": round_number, "at": time.time(), "event": reply.get("applied", reply)}
            if "error" in reply:
                log.warning("shaper refused round event %s: %s", event.kind, reply["error"])
            else:
                log.info("round %d: sent %s to the shaper", round_number, reply.get("applied"))
            fired.append(record)
        self.fired += fired
        return fired

    def stats(self) -> list[dict[str, Any]]:
        """Bytes, connections and stalls per (dialer, listener) pair so far."""
        return list(self.command({"kind": "stats"}).get("stats", []))

    def stop(self) -> None:
        """Stop the shaper (it writes its final stats file) and the summary; safe to call twice."""
        process, self._process = self._process, None
        if process is not None:
            try:
                if process.poll() is None and process.stdin is not None:
                    process.stdin.write(b'{"kind": "stop"}\n')
                    process.stdin.close()
                process.wait(timeout=10)
            except (OSError, subprocess.TimeoutExpired):
                process.kill()
                process.wait(timeout=5)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if process is not None and self.stats_file.exists():
            summary = self.summary()
            (self.run_dir / "netem-summary.json").write_text(json.dumps(summary, indent=2))

    def summary(self) -> dict[str, Any]:
        """Traffic per agent pair (both directions, all connections) from the last stats file."""
        try:
            rows = json.loads(self.stats_file.read_text())
        except (OSError, ValueError):
            rows = []
        return {
            "scenario": self.scenario.name,
            "agents": self.agent_count,
            "pairs": pair_bytes(rows),
            "bytes_total": sum(int(r["bytes_to_listener"]) + int(r["bytes_to_dialer"]) for r in rows),
            "bytes_unknown_source": sum(
                int(r["bytes_to_listener"]) + int(r["bytes_to_dialer"]) for r in rows if r["dialer"] is None
            ),
            "resets": sum(int(r.get("resets", 0)) for r in rows),
            "stalls": sum(int(r.get("stalls", 0)) for r in rows),
            "round_events": self.fired,
        }


def pair_bytes(rows: Iterable[dict[str, Any]]) -> dict[str, int]:
    """``{"i-j": bytes}`` for each unordered agent pair (i < j), both directions and dialers together."""
    totals: dict[str, int] = {}
    for row in rows:
        dialer, listener = row["dialer"], row["listener"]
        if dialer is None:
            continue
        low, high = sorted((int(dialer), int(listener)))
        key = f"{low}-{high}"
        totals[key] = totals.get(key, 0) + int(row["bytes_to_listener"]) + int(row["bytes_to_dialer"])
    return dict(sorted(totals.items(), key=lambda item: tuple(int(x) for x in item[0].split("-"))))


def emulated_plan_extras(network: str | Path, agents: int, run_dir: Path) -> dict[str, Any]:
    """``SwarmPlan`` fields that put a local swarm behind the scenario ``network`` (checked here, so a
    wrong name fails before any process starts)."""
    return {"network": EmulatedNetwork(network, agents, run_dir)}
