"""Two real hivemind DHT nodes (separate processes) talk through the shaper at the configured RTT.

This is how a launcher wires agents (see agent/network/README.md): each node listens on its own
loopback address (``host_maddrs``) and announces its proxy (``announce_maddrs``); the proxy recognises
the dialer by its source address because go-libp2p dials from its listen address.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys

import pytest

from agent.network.scenario import Scenario
from agent.network.shaper import ShapingLayer

pytestmark = [pytest.mark.swarm, pytest.mark.timeout(120)]

RTT_MS = 200.0

# One DHT node. argv: listen host, port, announce host, port; the first stdin line is the initial peer
# ("-" for none), so both nodes import hivemind (the slow part) at the same time. It prints its visible
# maddrs, then as the second node pings and stores to the first and prints timings.
NODE = r"""
import functools, json, sys, time
import hivemind
from hivemind.p2p import PeerID
from hivemind.utils import get_dht_time


async def ping(target, _dht, node):  # defined before the DHT forks its process, so it can be unpickled there
    started = time.perf_counter()
    answer = await node.protocol.call_ping(target)
    return time.perf_counter() - started, answer is not None


host, port, announce_host, announce_port = sys.argv[1:5]
initial = sys.stdin.readline().strip()
dht = hivemind.DHT(
    host_maddrs=[f"/ip4/{host}/tcp/{port}"],
    announce_maddrs=[f"/ip4/{announce_host}/tcp/{announce_port}"],
    initial_peers=[] if initial == "-" else [initial],
    start=True,
)
print(json.dumps({"maddrs": [str(m) for m in dht.get_visible_maddrs()]}), flush=True)
if initial != "-":
    target = PeerID.from_base58(initial.rsplit("/p2p/", 1)[1])

    pings, stores = [], []
    for _ in range(5):
        elapsed, answered = dht.run_coroutine(functools.partial(ping, target))
        pings.append((elapsed * 1000, answered))
    for index in range(3):
        started = time.perf_counter()
        ok = dht.store(f"key{index}", index, expiration_time=get_dht_time() + 60)
        stores.append(((time.perf_counter() - started) * 1000, ok))
    print(json.dumps({"pings": pings, "stores": stores}), flush=True)
sys.stdin.read()  # serve until the test closes stdin
dht.shutdown()
"""


async def _start_node(entry) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        NODE,
        entry.listen_host,
        str(entry.listen_port),
        entry.announce_host,
        str(entry.announce_port),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )


async def _read_json(process: asyncio.subprocess.Process, timeout_s: float) -> dict:
    assert process.stdout is not None
    while True:
        line = await asyncio.wait_for(process.stdout.readline(), timeout_s)
        assert line, "node exited early"
        if line.startswith(b"{"):
            return json.loads(line)


def _send_initial_peer(process: asyncio.subprocess.Process, initial: str) -> None:
    assert process.stdin is not None
    process.stdin.write(initial.encode() + b"\n")


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.stdin is not None:
        process.stdin.close()
    try:
        await asyncio.wait_for(process.wait(), 10)
    except TimeoutError:
        process.kill()
        await process.wait()


async def _demo() -> tuple[dict, list, list[str]]:
    scenario = Scenario.model_validate({"agents": 2, "default": {"rtt_ms": RTT_MS}})
    async with ShapingLayer(scenario) as shaper:
        first, second = shaper.addressing(0), shaper.addressing(1)
        node_a, node_b = await _start_node(first), await _start_node(second)
        try:
            _send_initial_peer(node_a, "-")
            maddrs = (await _read_json(node_a, 90))["maddrs"]
            _send_initial_peer(node_b, maddrs[0])
            await _read_json(node_b, 90)
            timings = await _read_json(node_b, 60)
            return timings, shaper.stats(), maddrs
        finally:
            await asyncio.gather(_stop(node_a), _stop(node_b))


def test_dht_ping_and_store_take_the_configured_rtt() -> None:
    timings, stats, maddrs = asyncio.run(_demo())
    # the first node announces only its proxy, never its real listen address
    assert all("/ip4/127.0.1.10/" in maddr for maddr in maddrs), maddrs
    pings = [elapsed for elapsed, answered in timings["pings"] if answered]
    assert len(pings) == 5
    ping_ms = statistics.median(pings)
    # one RPC over an open libp2p connection = one round trip through the shaper
    assert RTT_MS * 0.9 <= ping_ms <= RTT_MS * 1.5, timings
    stores = [elapsed for elapsed, ok in timings["stores"] if ok]
    assert stores and min(stores) >= RTT_MS * 0.9, timings
    # every byte between the nodes went through the proxies, and each dialer was recognised by its
    # source address: no connection from an unknown source
    pairs = {(row.dialer, row.listener): row for row in stats}
    assert (None, 0) not in pairs and (None, 1) not in pairs, stats
    assert pairs[(1, 0)].bytes_to_listener > 0 and pairs[(1, 0)].bytes_to_dialer > 0
    print(f"DHT ping median {ping_ms:.0f} ms, stores {[round(s) for s in stores]} ms at RTT {RTT_MS:.0f} ms")
