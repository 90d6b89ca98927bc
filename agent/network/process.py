"""Running the shaper as a child process from Python: what a launcher (or the check) holds.

Example::

    with ShaperProcess("regions3", 8, run_dir) as shaper:
        entry = shaper.addressing(3)  # AgentAddressing: host_maddr / announce_maddr for hivemind
        ...  # start the agents
        shaper.apply_event(DegradeEvent(agents=(3,), profile="poor", at_round=20))  # when round 20 comes
        rows = shaper.stats()

It runs ``python -m agent.network.shaper`` with its stdin held (closing it stops the shaper, so the
shaper never outlives this object) and talks the JSON-lines protocol of :mod:`agent.network.serve`.
"""

from __future__ import annotations

import contextlib
import json
import select
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from agent.errors import UserFacingError
from agent.network.events import NetworkEvent
from agent.network.scenario import Scenario
from agent.network.shaper import AgentAddressing, PairStats


class ShaperStartError(UserFacingError):
    """The shaper process did not come up (its log tail says why)."""

    exit_code = 3


class ShaperProcess:
    """A shaper child process for ``agents`` agents under ``scenario``.

    Args:
        scenario: a built-in name, a .toml/.json path, or a :class:`Scenario` (written to ``run_dir``).
        agents: number of agents; ``None`` takes the scenario's.
        run_dir: where the ports file, the scenario copy and the shaper's log go.
        base_port: agent ``i`` uses ``base_port + i``; ``None`` lets the shaper pick free ports.
        priority: ``realtime`` (default), ``nice`` or ``normal`` (see ``serve.raise_priority``).
        start_timeout_s: give up if the shaper is not listening after this long.
    """

    def __init__(
        self,
        scenario: str | Path | Scenario,
        agents: int | None,
        run_dir: Path,
        *,
        base_port: int | None = None,
        priority: str = "realtime",
        start_timeout_s: float = 30.0,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        stem = f"netem-{time.monotonic_ns()}"
        if isinstance(scenario, Scenario):
            source = self.run_dir / f"{stem}-scenario.json"
            source.write_text(scenario.model_dump_json())
            scenario = source
        self._scenario = str(scenario)
        self._agents = agents
        self.ports_file = self.run_dir / f"{stem}-ports.json"
        self.log_file = self.run_dir / f"{stem}.log"
        self._base_port = base_port
        self._priority = priority
        self._start_timeout = start_timeout_s
        self._process: subprocess.Popen[str] | None = None
        self._addressing: list[AgentAddressing] = []

    # ---- lifecycle ----------------------------------------------------------------------------------
    def start(self) -> list[AgentAddressing]:
        """Start the shaper and wait until every proxy listens; returns the addressing table."""
        command = [sys.executable, "-m", "agent.network.shaper", "--scenario", self._scenario]
        command += ["--ports-file", str(self.ports_file), "--priority", self._priority]
        if self._agents is not None:
            command += ["--agents", str(self._agents)]
        if self._base_port is not None:
            command += ["--base-port", str(self._base_port)]
        with self.log_file.open("wb") as log:  # a file, not a pipe: an unread full pipe would block it
            self._process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True
            )
        reply = self._read_reply(self._start_timeout)
        if not reply.get("ready"):
            self.stop()
            tail = self.log_file.read_text(errors="replace").strip()[-600:]
            raise ShaperStartError(f"the network shaper did not start: {tail or reply or 'no output'}")
        table = json.loads(self.ports_file.read_text())
        fields = AgentAddressing.model_fields
        self._addressing = [
            AgentAddressing.model_validate({key: entry[key] for key in fields}) for entry in table["agents"]
        ]
        return list(self._addressing)

    def stop(self, timeout_s: float = 10.0) -> int | None:
        """Close the shaper's stdin (it stops) and wait; kill it after ``timeout_s``. Its exit code."""
        process = self._process
        if process is None:
            return None
        if process.stdin is not None and not process.stdin.closed:
            with contextlib.suppress(BrokenPipeError):
                process.stdin.close()
        try:
            return process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            return process.wait()

    def __enter__(self) -> ShaperProcess:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ---- use ----------------------------------------------------------------------------------------
    @property
    def pid(self) -> int | None:
        """The shaper's process id, once started."""
        return None if self._process is None else self._process.pid

    def addressing(self, index: int) -> AgentAddressing:
        """Listen and announce address of agent ``index``."""
        return self._addressing[index]

    def addressing_table(self) -> list[AgentAddressing]:
        """Every agent's addressing, by index."""
        return list(self._addressing)

    def apply_event(self, event: NetworkEvent | dict[str, Any]) -> dict[str, Any]:
        """Send an event (applied now; ``at_s`` ones at that time after the shaper's start)."""
        payload = event if isinstance(event, dict) else event.model_dump(mode="json", exclude_none=True)
        reply = self._request(payload)
        if "error" in reply:
            raise ValueError(reply["error"])
        return reply

    def stats(self) -> list[PairStats]:
        """Bytes, connections, resets and stalls per (dialer, listener) pair so far."""
        return [PairStats.model_validate(row) for row in self._request({"kind": "stats"})["stats"]]

    def _request(self, payload: dict[str, Any]) -> dict[str, Any]:
        process = self._process
        if process is None or process.stdin is None or process.poll() is not None:
            raise RuntimeError("the shaper process is not running")
        process.stdin.write(json.dumps(payload) + "\n")
        process.stdin.flush()
        return self._read_reply(10.0)

    def _read_reply(self, timeout_s: float) -> dict[str, Any]:
        process = self._process
        assert process is not None and process.stdout is not None
        # one JSON line per command; wait for it with select so a stuck shaper cannot hang the caller
        ready, _, _ = select.select([process.stdout], [], [], timeout_s)
        if not ready:
            raise ShaperStartError(
                f"the network shaper did not answer within {timeout_s:g} s (log: {self.log_file})"
            )
        line = process.stdout.readline()
        return json.loads(line) if line.startswith("{") else {}
