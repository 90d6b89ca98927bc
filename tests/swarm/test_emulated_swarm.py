"""A live 6-agent adaptive swarm behind the shaper: two sites, one agent degraded to ``poor`` mid-run.

One swarm run (module fixture) serves two tests: the launcher + shaper wiring (every agent's libp2p
traffic goes through the proxies) and the adaptation (the swarm finds its two sites, reacts to the
degraded agent, and still reaches the target).
"""

from __future__ import annotations

import itertools
import json
import os
from pathlib import Path
from typing import Any

import pytest

from agent.protocol.config import load_run_config
from agent.swarm.emulated import EmulatedNetwork
from agent.swarm.launcher import LocalSwarm, SwarmPlan

MNIST = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "mnist"
AGENTS = 6
DEGRADED = 5
DEGRADE_ROUND = 1
TARGET = 0.975

pytestmark = [
    pytest.mark.swarm,
    pytest.mark.timeout(420),
    pytest.mark.skipif(not MNIST.is_dir(), reason="the shared MNIST folder is missing"),
]

SCENARIO = f"""
name = "two-sites-degrade"
agents = {AGENTS}

[[regions]]
name = "site-a"
agents = "0-2"
internal = {{ rtt_ms = 10 }}

[[regions]]
name = "site-b"
agents = "3-5"
internal = {{ rtt_ms = 10 }}

[[region_links]]
between = ["site-a", "site-b"]
profile = {{ rtt_ms = 80, bandwidth_mbps = 50 }}

[[events]]
kind = "degrade"
agents = {DEGRADED}
profile = "poor"
at_round = {DEGRADE_ROUND}
"""


@pytest.fixture(scope="module")
def degraded_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    run_dir = tmp_path_factory.mktemp("emulated")
    scenario = run_dir / "two-sites-degrade.toml"
    scenario.write_text(SCENARIO)
    config = load_run_config(
        None,
        {
            "training": {
                "data_dir": str(MNIST.resolve()),
                "model": "cnn-small",
                "target_accuracy": TARGET,
                "local_steps": 8,
            },
            "swarm": {
                "run_id": "it-emulated",
                "expected_agents": AGENTS,
                "adaptive": True,
                "target_group_size": AGENTS,
            },
        },
        use_env=False,
    )
    network = EmulatedNetwork(scenario, AGENTS, run_dir)
    plan = SwarmPlan(
        agents=AGENTS, config=config, run_dir=run_dir, max_seconds=150, network=network, stop_at_target=True
    )
    with LocalSwarm(plan) as swarm:
        swarm.wait(timeout_s=300)
        swarm.stop_all()
    statuses = {agent.index: agent.last_status for agent in swarm.agents}
    return {
        "swarm": swarm,
        "statuses": statuses,
        "network": swarm.network_summary(),
        "stats": json.loads(network.stats_file.read_text()),
        "peer_ids": {index: status["peer_id"] for index, status in statuses.items()},
        "run_dir": run_dir,
    }


def test_every_agents_libp2p_traffic_passes_through_the_shaper(degraded_run: dict[str, Any]) -> None:
    network, statuses = degraded_run["network"], degraded_run["statuses"]
    # Each proxy identifies a dialing agent by its source address (go-libp2p dials from its listen
    # address). Unknown dialers are the bootstrap peer (127.0.0.1, not an agent) and, now and then, a
    # connection an agent opened from another source address (seen: 7% of the bytes in one run); they
    # still pass through the proxy, with the scenario's default link.
    assert network["bytes_unknown_source"] <= 0.15 * network["bytes_total"], network
    # Every pair of agents exchanged bytes through the proxies (pings, DHT, averaging).
    pairs = network["pairs"]
    for low, high in itertools.combinations(range(AGENTS), 2):
        assert pairs.get(f"{low}-{high}", 0) > 0, (low, high, pairs)
    # The all-reduce traffic the agents account for went through the shaper, not around it.
    averaged = sum(
        status["round_stats"]["bytes"]["count"] * status["round_stats"]["bytes"]["mean"]
        for status in statuses.values()
        if status["round_stats"]["bytes"]["count"]
    )
    assert averaged > 0
    assert network["bytes_total"] >= 0.8 * averaged, (network["bytes_total"], averaged)
    # The launcher sent the scenario's round event, and the run folder holds the traffic files.
    assert [event["event"]["kind"] for event in network["round_events"]] == ["degrade"]
    assert network["round_events"][0]["round"] >= DEGRADE_ROUND
    assert (degraded_run["run_dir"] / "netem-summary.json").exists()


@pytest.mark.skipif(
    os.environ.get("HYPERGPU_TIMING_TESTS") != "1",
    reason="timing-sensitive on a loaded 2-core host (2 of 9 runs failed on 2026-11-28: one agent's plan "
    "mixed the sites; the degraded agent measured no worse links before the run ended); "
    "run with HYPERGPU_TIMING_TESTS=1",
)
def test_the_adaptive_swarm_finds_the_sites_reacts_to_the_degraded_agent_and_converges(
    degraded_run: dict[str, Any],
) -> None:
    statuses, peer_ids = degraded_run["statuses"], degraded_run["peer_ids"]
    degraded_at = degraded_run["network"]["round_events"][0]["at"]
    reports = {index: status["policy_report"] for index, status in statuses.items()}
    assert all(status["policy"] == "AdaptivePolicy" for status in statuses.values())

    # Latency groups: (nearly) every agent moved from the unmeasured one-cluster plan to a plan of
    # several latency clusters, and no cluster joins the two sites (80 ms apart, 10 ms inside). The
    # degraded agent is far from everyone after the event, so it may sit in either site's cluster.
    # (A run that reaches the target within seconds may end before one slow agent replans.)
    # On this loaded 2-core host one agent may plan from RTTs it measured during a CPU stall (seen: 1 plan
    # of 6 in about 1 run of 6), so one mixed plan is tolerated; two are a grouping bug.
    site_of = {peer_ids[i]: ("a" if i < 3 else "b") for i in range(AGENTS) if i != DEGRADED}
    found, mixed = 0, []
    for report in reports.values():
        plan = report["group_plan"]
        if plan is None or len(plan["clusters"]) < 2:
            continue
        found += 1
        sites = [{site_of[peer] for peer in cluster if peer in site_of} for cluster in plan["clusters"]]
        if any(len(found_sites) > 1 for found_sites in sites):
            mixed.append(plan["clusters"])
    assert found >= AGENTS - 1, {i: r["group_decisions"] for i, r in reports.items()}
    assert len(mixed) <= 1, mixed

    # The degraded agent reacted after the event: its round timeout stretched to its slower rounds, a
    # local-work decision cites its worse links (loss, or RTT >= 100 ms), or the group plan had to
    # place it on its own measurements ("its cluster of 1 ..."); or another agent raised a link alert.
    after = [d for d in reports[DEGRADED]["decisions"] if d["at"] >= degraded_at]
    reacted = [
        d
        for d in after
        if (d["kind"] == "timeout" and _seconds(d["after"]) > _seconds(d["before"]))
        or (
            d["kind"] == "local_work"
            and (("loss " in d["reason"] and "loss 0.0%" not in d["reason"]) or _rtt_in(d["reason"]) >= 100)
        )
        or (d["kind"] == "groups" and "cluster of 1" in d["reason"])
    ]
    alerts = [
        line
        for index in range(AGENTS)
        if index != DEGRADED
        for line in (degraded_run["run_dir"] / "agents" / str(index) / "agent.log").read_text().splitlines()
        if "link alert" in line and peer_ids[DEGRADED] in line
    ]
    assert reacted or alerts, (after, alerts)

    # It still converges: the swarm reached the target, the degraded agent still in the run.
    assert degraded_run["swarm"].time_to_target_s() is not None
    assert statuses[DEGRADED]["rounds_ok"] >= 2
    # Deciding and monitoring cost each agent well under 5% of its wall time.
    for status in statuses.values():
        end = status["clock"]["train_end"] or status["written_at"]  # a killed agent wrote no train_end
        wall = end - status["clock"]["train_start"]
        assert status["decision_seconds"] < 0.05 * wall, status["decision_seconds"]


def _rtt_in(reason: str) -> float:
    """The ``RTT <n> ms`` figure of a decision's reason, or 0."""
    marker = "RTT "
    if marker not in reason:
        return 0.0
    number = reason.split(marker, 1)[1].split(" ", 1)[0]
    try:
        return float(number)
    except ValueError:
        return 0.0


def _seconds(text: str) -> float:
    """``"8.3 s"`` -> 8.3."""
    return float(text.split()[0])
