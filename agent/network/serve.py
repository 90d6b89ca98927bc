"""The shaper as a process: ``python -m agent.network.shaper`` / ``hypergpu netem serve``.

Usage::

    python -m agent.network.shaper --scenario regions3 --agents 8 --ports-file run/netem.json \
        [--base-port 40000] [--control -|FILE|none] [--stats-file run/netem-stats.json]

Once every proxy listens it writes the addressing table to ``--ports-file`` (atomically: written to a
temporary name, then renamed) and prints one JSON line ``{"ready": true, "ports_file": ...}`` on stdout.

Control commands are JSON objects, one per line, on stdin (``--control -``, the default) or appended
to a file (``--control FILE``, read as it grows):

* an event, e.g. ``{"kind": "degrade", "agents": [3], "profile": "poor"}`` (see
  :mod:`agent.network.events`); ``at_s`` schedules it relative to the shaper's start, ``at_round`` and
  no time apply it now (the launcher sends round events when the round comes);
* ``{"kind": "stats"}`` prints ``{"stats": [...]}`` on stdout (bytes per pair);
* ``{"kind": "stop"}``, end of stdin, SIGTERM or SIGINT stop the shaper (so it never outlives a
  launcher that held its stdin).

Every reply is one JSON line on stdout; logs go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pydantic import TypeAdapter, ValidationError

from agent.errors import ConfigError, UserFacingError
from agent.network.events import NetworkEvent
from agent.network.scenario import load_scenario
from agent.network.shaper import ShapingLayer

log = logging.getLogger("hypergpu.netem")
T = TypeVar("T")

_EVENT = TypeAdapter(NetworkEvent)
CONTROL_FILE_POLL_S = 0.1


def _reply(message: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()


def write_addressing(shaper: ShapingLayer, path: Path) -> None:
    """Write the addressing table as JSON to ``path`` atomically (readers never see half a file)."""
    table = {
        "scenario": shaper.scenario.name,
        "agents": [
            {**entry.model_dump(), "host_maddr": entry.host_maddr, "announce_maddr": entry.announce_maddr}
            for entry in shaper.addressing_table()
        ],
        "pid": os.getpid(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps(table, indent=2))
    partial.replace(path)


def write_stats(shaper: ShapingLayer, path: Path) -> None:
    """Write :meth:`ShapingLayer.stats` as a JSON list to ``path`` atomically."""
    partial = path.with_name(path.name + ".partial")
    partial.write_text(json.dumps([row.model_dump() for row in shaper.stats()], indent=2))
    partial.replace(path)


def handle_command(shaper: ShapingLayer, line: str) -> bool:
    """Apply one control line; returns ``False`` when it asks the shaper to stop."""
    line = line.strip()
    if not line:
        return True
    try:
        command = json.loads(line)
    except json.JSONDecodeError as exc:
        _reply({"error": f"control line is not JSON: {exc}"})
        return True
    kind = command.get("kind") if isinstance(command, dict) else None
    if kind == "stop":
        return False
    if kind == "stats":
        rows = [row.model_dump() for row in shaper.stats()]
        _reply({"stats": rows, "timer_lateness_ms": round(shaper.timer_lateness_ms, 3)})
        return True
    try:
        event = _EVENT.validate_python(command)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in item['loc']) or 'kind'}: {item['msg']}" for item in exc.errors()
        )
        _reply({"error": f"invalid control command {line[:200]!r}: {problems}"})
        return True
    shaper.apply_event(event)
    _reply({"applied": event.model_dump(mode="json", exclude_none=True)})
    return True


async def _read_stdin(shaper: ShapingLayer, stop: asyncio.Event) -> None:
    # A daemon thread reads stdin: a blocking read in the loop's default executor would keep the
    # process alive after SIGTERM (asyncio.run waits for executor threads), and connect_read_pipe
    # refuses regular files.
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str] = asyncio.Queue()

    def pump() -> None:
        for line in sys.stdin:
            loop.call_soon_threadsafe(lines.put_nowait, line)
        loop.call_soon_threadsafe(lines.put_nowait, "")

    threading.Thread(target=pump, name="netem-control", daemon=True).start()
    while not stop.is_set():
        line = await lines.get()
        if not line or not handle_command(shaper, line):  # "" = end of stdin: the launcher is gone
            stop.set()


async def _follow_file(shaper: ShapingLayer, path: Path, stop: asyncio.Event) -> None:
    offset = 0
    pending = ""
    while not stop.is_set():
        with contextlib.suppress(FileNotFoundError), path.open() as handle:
            handle.seek(offset)
            pending += handle.read()
            offset = handle.tell()
        *lines, pending = pending.split("\n")
        for line in lines:
            if not handle_command(shaper, line):
                stop.set()
        await asyncio.sleep(CONTROL_FILE_POLL_S)


async def serve(
    scenario_source: str,
    agents: int | None,
    ports_file: Path,
    base_port: int | None = None,
    control: str = "-",
    stats_file: Path | None = None,
    stats_interval_s: float = 5.0,
) -> None:
    """Run the shaper until stopped (see the module docstring for the control protocol)."""
    scenario = load_scenario(scenario_source)
    shaper = ShapingLayer(scenario, agents, base_port=base_port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await shaper.start()
    helpers: list[asyncio.Task[None]] = []
    try:
        write_addressing(shaper, ports_file)
        _reply({"ready": True, "ports_file": str(ports_file), "agents": shaper.agent_count})
        if control == "-":
            helpers.append(asyncio.create_task(_read_stdin(shaper, stop)))
        elif control != "none":
            helpers.append(asyncio.create_task(_follow_file(shaper, Path(control), stop)))
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=stats_interval_s)
            if stats_file is not None:
                write_stats(shaper, stats_file)
    finally:
        for helper in helpers:
            helper.cancel()
        await shaper.stop()
        if stats_file is not None:
            write_stats(shaper, stats_file)


def build_parser() -> argparse.ArgumentParser:
    """The command-line options of the shaper process."""
    parser = argparse.ArgumentParser(
        prog="python -m agent.network.shaper", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--scenario", default="perfect", help="built-in name or .toml/.json file")
    parser.add_argument("--agents", type=int, default=None, help="number of agents (default: the scenario's)")
    parser.add_argument("--ports-file", type=Path, required=True, help="where to write the addressing JSON")
    parser.add_argument(
        "--base-port", type=int, default=None, help="agent i uses base_port + i; default free"
    )
    parser.add_argument("--control", default="-", help="'-' = stdin (default), a file to follow, or 'none'")
    parser.add_argument("--stats-file", type=Path, default=None, help="rewrite pair stats JSON here")
    parser.add_argument("--stats-interval", type=float, default=5.0, help="seconds between stats writes")
    parser.add_argument(
        "--priority", choices=PRIORITIES, default="realtime", help="scheduling to ask for (best effort)"
    )
    return parser


PRIORITIES = ("realtime", "nice", "normal")


def raise_priority(mode: str) -> str:
    """Best effort: schedule this process ahead of compute-bound ones; returns what it got.

    The shaper needs little CPU but needs it at once: every late wake-up adds to every emulated delay.
    Measured here beside an 8-agent swarm on 2 cores (CPU pressure ~97%): at normal priority 10 ms
    links measured 20-30 ms; at ``nice -10`` sleeps still ended a median 2.3 ms late; with ``realtime``
    (SCHED_RR at the lowest real-time priority, 1) 0.06 ms. The kernel's real-time throttling
    (``sched_rt_runtime_us``, 95% by default) still leaves every core to others if the shaper ever
    spun. Without the privilege (root or CAP_SYS_NICE) it falls back to ``nice``, then ``normal``.

    Args:
        mode: ``realtime``, ``nice`` (niceness -10) or ``normal`` (leave as is).
    """
    if mode not in PRIORITIES:
        raise ConfigError(f"--priority {mode!r} is not one of {', '.join(PRIORITIES)}")
    if mode == "realtime":
        try:
            os.sched_setscheduler(0, os.SCHED_RR, os.sched_param(1))
            return "realtime"
        except (OSError, AttributeError):
            log.info("real-time scheduling not permitted; trying nice -10")
    if mode in ("realtime", "nice"):
        try:
            os.setpriority(os.PRIO_PROCESS, 0, -10)
            return "nice"
        except OSError:
            log.info("could not raise priority (needs root or CAP_SYS_NICE); delays may run late under load")
    return "normal"


def fast_loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop factory when installed (hivemind depends on it; several times less CPU per chunk)."""
    try:
        import uvloop
    except ImportError:
        return None
    return uvloop.new_event_loop


def run_fast(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop when available, without changing the process-wide loop policy."""
    with asyncio.Runner(loop_factory=fast_loop_factory()) as runner:
        return runner.run(main)


@contextlib.contextmanager
def elevated_priority(mode: str) -> Iterator[str]:
    """:func:`raise_priority` for the calling thread for the ``with`` block, then the old scheduling."""
    policy, param = os.sched_getscheduler(0), os.sched_getparam(0)
    niceness = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        yield raise_priority(mode)
    finally:
        with contextlib.suppress(OSError):
            os.sched_setscheduler(0, policy, param)
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, niceness)


def main(argv: list[str] | None = None) -> None:
    """Entry point of ``python -m agent.network.shaper``: errors print one line and exit with their code."""
    options = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s netem %(message)s")
    try:
        raise_priority(options.priority)
        run_fast(
            serve(
                options.scenario,
                options.agents,
                options.ports_file,
                base_port=options.base_port,
                control=options.control,
                stats_file=options.stats_file,
                stats_interval_s=options.stats_interval,
            )
        )
    except UserFacingError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
