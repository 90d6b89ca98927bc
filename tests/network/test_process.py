"""``ShaperProcess``: a launcher's handle on the shaper child process, used on real sockets."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest

from agent.network.events import DegradeEvent
from agent.network.process import ShaperProcess, ShaperStartError
from agent.network.scenario import Scenario

pytestmark = pytest.mark.timeout(60)


def test_launcher_handle_shapes_traffic_and_applies_events(tmp_path: Path) -> None:
    scenario = Scenario(agents=2, default={"rtt_ms": 20})
    with ShaperProcess(scenario, None, tmp_path, priority="normal") as shaper:
        target = shaper.addressing(1)
        assert target.host_maddr == f"/ip4/127.0.0.11/tcp/{target.listen_port}"
        with socket.create_server((target.listen_host, target.listen_port)) as server:
            client = socket.create_connection(
                (target.announce_host, target.announce_port), source_address=("127.0.0.10", 0)
            )
            agent_side, _ = server.accept()
            with client, agent_side:
                client.sendall(b"hello")
                assert agent_side.recv(16) == b"hello"
                agent_side.setblocking(False)

                def echo_once() -> float:
                    started = time.perf_counter()
                    client.sendall(b"y" * 32)
                    received = b""
                    while len(received) < 32:
                        try:
                            received += agent_side.recv(64)
                        except BlockingIOError:
                            time.sleep(0.0005)
                    agent_side.sendall(received)
                    got = b""
                    while len(got) < 32:
                        got += client.recv(64)
                    return (time.perf_counter() - started) * 1000

                before = min(echo_once() for _ in range(3))
                shaper.apply_event(DegradeEvent(agents=(1,), profile={"rtt_ms": 120}))
                after = min(echo_once() for _ in range(3))
        assert 15 <= before <= 40 and 100 <= after <= 160, (before, after)
        rows = {(row.dialer, row.listener): row for row in shaper.stats()}
        assert rows[(0, 1)].bytes_to_listener == 5 + 6 * 32
        with pytest.raises(ValueError, match="agents"):
            shaper.apply_event({"kind": "partition", "agents": "oops"})
    assert shaper.stop() == 0


def test_a_bad_scenario_is_a_clear_start_error(tmp_path: Path) -> None:
    with pytest.raises(ShaperStartError, match="not start"):
        ShaperProcess("no-such-scenario", 2, tmp_path, priority="normal").start()
