"""A local swarm behind the emulated WAN: the shaping process, the agents' addresses, round events, stats.

``hypergpu swarm --network regions3`` and ``hypergpu bench --network ...`` build an
:class:`EmulatedNetwork` and hand it to :class:`agent.swarm.launcher.LocalSwarm` (``SwarmPlan.network``).
The launcher then:

1. starts the shaper (``python -m agent.network.shaper``, through
   :class:`agent.network.process.ShaperProcess`) before anything else and waits until it listens;
2. starts agent ``i`` with ``--host/--port`` = its real loopback address and ``--announce-host/
   --announce-port`` = its proxy, so every libp2p byte between agents passes through the shaper;
3. sends the scenario's ``at_round`` events when the swarm reaches their round (the shaper fires its
   ``at_s`` events itself);
4. stops the shaper after the agents, leaving ``netem-stats.json`` (bytes per dialer/listener) and
   ``netem-summary.json`` (bytes per agent pair, round events sent) in the run folder.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.errors import ConfigError, UserFacingError
from agent.network.process import ShaperProcess
from agent.network.scenario import Scenario, load_scenario

log = logging.getLogger("hypergpu.emulated")


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
    """The shaper process of one local swarm (an :class:`agent.network.process.ShaperProcess`) and what
    the launcher does with it. Not started by the constructor: the launcher starts it.

    Args:
        source: a built-in scenario name (``regions3``, ``perfect``, ...) or a TOML/JSON file.
        agents: the swarm's size; checked against the scenario (a clear error if it does not fit).
        run_dir: the run folder: the shaper's ports file and log, ``netem-stats.json``,
            ``netem-summary.json``.
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
        self._shaper: ShaperProcess | None = None

    @property
    def stats_file(self) -> Path:
        return self.run_dir / "netem-stats.json"

    @property
    def running(self) -> bool:
        return self._shaper is not None

    def start(self) -> None:
        """Start the shaper and wait until every proxy listens (raises ``ShaperStartError`` otherwise)."""
        shaper = ShaperProcess(self.source, self.agent_count, self.run_dir, priority=self.priority)
        table = shaper.start()
        self._shaper = shaper
        self.addresses = [
            AgentAddress(index, row.listen_host, row.listen_port, row.announce_host, row.announce_port)
            for index, row in enumerate(table)
        ]
        log.info(
            "network %r: shaper pid %s, %d agents behind proxies", self.scenario.name, shaper.pid, len(table)
        )

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

    def on_round(self, round_number: int) -> list[dict[str, Any]]:
        """Fire every ``at_round`` event whose round the swarm has reached; returns those fired now."""
        fired: list[dict[str, Any]] = []
        while self._pending and (self._pending[0].at_round or 0) <= round_number and self._shaper:
            event = self._pending.pop(0)
            try:
                reply = self._shaper.apply_event(event)
            except ValueError as exc:  # the shaper refused it: say so, keep the run going
                log.warning("shaper refused round event %s: %s", event.kind, exc)
                reply = {"error": str(exc)}
            log.info("round %d: sent %s to the shaper", round_number, reply)
            fired.append({"round": round_number, "at": time.time(), "event": reply.get("applied", reply)})
        self.fired += fired
        return fired

    def stats(self) -> list[dict[str, Any]]:
        """Bytes, connections and stalls per (dialer, listener) pair so far."""
        if self._shaper is None:
            return []
        return [row.model_dump() for row in self._shaper.stats()]

    def stop(self) -> None:
        """Write the final traffic stats and summary, stop the shaper; safe to call twice."""
        shaper, self._shaper = self._shaper, None
        if shaper is None:
            return
        try:
            rows = [row.model_dump() for row in shaper.stats()]
            self.stats_file.write_text(json.dumps(rows, indent=2))
        except (RuntimeError, UserFacingError) as exc:  # a dead shaper: the run's figures lack traffic
            log.warning("could not read the shaper's final stats: %s", exc)
        finally:
            shaper.stop()
        (self.run_dir / "netem-summary.json").write_text(json.dumps(self.summary(), indent=2))

    def summary(self) -> dict[str, Any]:
        """Traffic per agent pair (both directions, all connections) from the final stats."""
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
