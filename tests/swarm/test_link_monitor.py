"""LinkMonitor on real hivemind DHTs behind the shaper: pings over libp2p, signed summaries, traffic."""

from __future__ import annotations

import time
from pathlib import Path

import hivemind
import pytest
from hivemind.utils import get_dht_time
from hivemind.utils.crypto import RSAPrivateKey

from agent.status import StatusBoard
from agent.swarm.emulated import EmulatedNetwork
from agent.swarm.link_monitor import (
    DHT_REQUEST_OVERHEAD_BYTES,
    PING_WIRE_BYTES,
    LinkMonitor,
    MonitorConfig,
    PeerVotes,
    links_key,
)

pytestmark = [pytest.mark.swarm, pytest.mark.timeout(180)]

RTT_MS = 40.0


def _pair_bytes(network: EmulatedNetwork) -> int:
    return sum(
        row["bytes_to_listener"] + row["bytes_to_dialer"]
        for row in network.stats()
        if row["dialer"] is not None
    )


@pytest.fixture()
def two_dhts(tmp_path: Path):
    scenario = tmp_path / "link.toml"
    scenario.write_text(f'name = "link"\ndefault = {{ rtt_ms = {RTT_MS} }}\n')
    network = EmulatedNetwork(scenario, 2, tmp_path, priority="nice")
    network.start()
    dhts: list[hivemind.DHT] = []
    try:
        for index in range(2):
            address = network.address(index)
            dhts.append(
                hivemind.DHT(
                    host_maddrs=[f"/ip4/{address.listen_host}/tcp/{address.listen_port}"],
                    announce_maddrs=[f"/ip4/{address.announce_host}/tcp/{address.announce_port}"],
                    initial_peers=[str(m) for m in dhts[0].get_visible_maddrs()] if dhts else [],
                    start=True,
                )
            )
        yield network, dhts
    finally:
        for dht in dhts:
            dht.shutdown()
        network.stop()


def test_pings_measure_the_emulated_rtt_and_signed_summaries_build_the_matrix(two_dhts) -> None:
    network, dhts = two_dhts
    ids = [dht.peer_id.to_base58() for dht in dhts]
    config = MonitorConfig(ping_interval_s=3600, publish_interval_s=3600)  # driven by hand below
    boards = [StatusBoard(), StatusBoard()]
    monitors = [
        LinkMonitor(
            dht,
            peer,
            "it-links",
            config=config,
            votes=lambda: PeerVotes(quarantined=(ids[1],)),
            signing_key=RSAPrivateKey(),  # one process here: give each "agent" its own key
            board=board,
        )
        for dht, peer, board in zip(dhts, ids, boards, strict=True)
    ]
    for monitor in monitors:
        monitor.dht.add_validators([monitor._validator])
    for monitor in [*monitors, monitors[0]]:
        monitor.publish_and_read()
    assert monitors[0].peers_to_ping() == [ids[1]]

    before = _pair_bytes(network)
    sweeps = 30
    rtts = [monitors[0].ping_sweep(every_peer=True)[ids[1]] for _ in range(sweeps)]
    ping_bytes = (_pair_bytes(network) - before) / sweeps
    answered = [rtt for rtt in rtts if rtt is not None]
    assert len(answered) >= sweeps - 2, rtts
    median = sorted(answered)[len(answered) // 2]
    assert RTT_MS * 0.9 <= median <= RTT_MS + 40, answered  # one RTT per ping (warm connection)
    assert PING_WIRE_BYTES / 3 <= ping_bytes <= PING_WIRE_BYTES, f"a ping took {ping_bytes:.0f} bytes"

    before = _pair_bytes(network)
    estimate_before = monitors[0].bytes_estimate
    links = monitors[0].publish_and_read()
    measured = _pair_bytes(network) - before
    estimate = monitors[0].bytes_estimate - estimate_before
    assert measured <= estimate <= 3 * measured, (measured, estimate, DHT_REQUEST_OVERHEAD_BYTES)

    # Both summaries are in the DHT, signed; agent 0's row holds its measured RTT to agent 1.
    monitors[1].publish_and_read()
    links = monitors[0].publish_and_read()
    assert set(links.publishers) == set(ids)
    assert links.votes[ids[0]].quarantined == (ids[1],)
    # The board shows the peer's row and the swarm's matrix.
    snapshot = boards[0].snapshot()
    assert [row.peer_id for row in snapshot.peers] == [ids[1]]
    assert snapshot.peers[0].rtt_ms == pytest.approx(median, rel=0.5)
    assert snapshot.peers[0].quality != "unknown"  # 30 pings: enough for a class
    assert set(snapshot.rtt_matrix.peers) == set(ids)
    matrix = monitors[1].latest().matrix()
    row = matrix.rtt_ms[matrix.peers.index(ids[0])]
    assert row[matrix.peers.index(ids[1])] == pytest.approx(median, rel=0.5)

    # Agent 1 cannot overwrite agent 0's record: its DHT does not hold agent 0's private key, so the
    # store under agent 0's public-key subkey goes out unsigned and every validating node rejects it.
    forged = {"peer": ids[0], "t": get_dht_time() + 1, "links": b"", "q": [], "p": []}
    stored = dhts[1].store(
        links_key("it-links"),
        forged,
        expiration_time=get_dht_time() + 30,
        subkey=monitors[0]._validator.local_public_key,
    )
    assert not stored
    time.sleep(0.2)
    after = monitors[1].publish_and_read()
    assert after.links[ids[0]] == links.links[ids[0]]
