"""Scenarios: the regions3 matrix, TOML parsing, events, random events, and errors naming the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import ConfigError
from agent.network.events import DegradeEvent, LatencySpikeEvent, PartitionEvent, RandomEvents
from agent.network.scenario import BUILTIN_SCENARIOS, load_scenario


def test_regions3_matrix() -> None:
    scenario = load_scenario("regions3")
    assert scenario.agent_count() == 8
    assert [scenario.region_of(i) for i in range(8)] == ["region1"] * 3 + ["region2"] * 3 + ["region3"] * 2
    inside = scenario.link(0, 2)
    assert inside.rtt_ms == (10, 10) and inside.loss == 0 and inside.bandwidth_mbps is None
    for (a, b), rtt in {(0, 3): 100, (2, 5): 100, (1, 6): 150, (4, 6): 250}.items():
        link = scenario.link(a, b)
        assert link.rtt_ms == (rtt, rtt) and link.loss == 0.005 and link.bandwidth_mbps == 20, (a, b)
        assert scenario.link(b, a) == link
    # agent 7 is on `poor` for all its links: never better than poor, and still capped between regions
    for other in range(7):
        link = scenario.link(7, other)
        assert link.rtt_ms[0] >= 150 and link.rtt_ms[1] == 300 and link.loss == 0.05, other
    assert scenario.link(7, 0).bandwidth_mbps == 20 and scenario.link(7, 6).bandwidth_mbps is None


def test_uniform_builtins_and_counts() -> None:
    perfect = load_scenario("perfect")
    assert perfect.link(0, 5).rtt_ms == (0, 0)
    assert perfect.agent_count(12) == 12
    with pytest.raises(ConfigError, match="--agents N"):
        perfect.agent_count()
    with pytest.raises(ConfigError, match="written for 8 agents"):
        BUILTIN_SCENARIOS["regions3"].agent_count(6)


TOML = """
name = "two-sites"
seed = 3
default = "good"

[[regions]]
name = "eu"
agents = "0-2"
internal = { rtt_ms = 10 }

[[regions]]
name = "us"
agents = [3, 4]
internal = "average"

[[region_links]]
between = ["eu", "us"]
profile = { base = "poor", bandwidth_mbps = 5 }

[agent_profiles]
4 = "unstable"

[[events]]
kind = "degrade"
agents = 3
profile = "poor"
at_round = 20

[[events]]
kind = "partition"
agents = "0-1"
at_s = 40
duration_s = 30

[[events]]
kind = "latency_spike"
extra_rtt_ms = 300
at_s = 10
duration_s = 5

[random_events]
seed = 7
mean_interval_s = 30
end_s = 600
"""


def test_toml_scenario_parses(tmp_path: Path) -> None:
    path = tmp_path / "sites.toml"
    path.write_text(TOML)
    scenario = load_scenario(path)
    assert scenario.agent_count() == 5
    assert scenario.link(0, 3).rtt_ms == (150, 300) and scenario.link(0, 3).bandwidth_mbps == 5
    assert scenario.link(3, 4).name == "average+unstable"
    assert scenario.link(0, 9).name == "good"  # an agent outside every region gets the default
    assert [type(e) for e in scenario.round_events()] == [DegradeEvent]
    assert scenario.round_events()[0].agents == (3,)
    timed = scenario.timed_events(5)
    assert timed == sorted(timed, key=lambda e: e.at_s or 0)
    assert isinstance(timed[0], LatencySpikeEvent) or timed[0].at_s < 10
    assert any(isinstance(e, PartitionEvent) and e.agents == (0, 1) for e in timed)
    assert len(timed) > 5  # random events drawn in


def test_random_events_are_reproducible_and_bounded() -> None:
    spec = RandomEvents(seed=11, mean_interval_s=10, start_s=5, end_s=300, agents="2-4", agents_per_event=2)
    first, second = spec.generate(8), spec.generate(8)
    assert first == second and len(first) > 10
    assert all(5 <= e.at_s < 300 for e in first)
    assert all(set(e.agents) <= {2, 3, 4} and len(e.agents) == 2 for e in first)
    assert RandomEvents(seed=12, mean_interval_s=10, end_s=300).generate(8) != first


@pytest.mark.parametrize(
    ("text", "field", "hint"),
    [
        ('[[regions]]\nname = "a"\nagents = "7-5"\n', "regions.0.agents", "backwards"),
        ('default = "terrible"\n', "default", "use one of perfect"),
        (
            '[[regions]]\nname = "a"\nagents = [0]\n'
            '[[region_links]]\nbetween = ["a", "b"]\nprofile = "good"\n',
            "",
            "region 'b'",
        ),
        ("[agent_profiles]\n2 = { rtt_ms = [50, 10] }\n", "agent_profiles.2", "min <= max"),
        ('[[events]]\nkind = "explode"\nagents = 1\n', "events.0", "explode"),
        (
            '[[events]]\nkind = "partition"\nagents = 1\nat_s = 1\nat_round = 2\n',
            "events.0.partition",
            "not both",
        ),
        ('agents = 2\n[agent_profiles]\n5 = "poor"\n', "", "agent index 5"),
        ('[[regions]]\nname = "a"\nagents = [0, 1]\n[[regions]]\nname = "b"\nagents = [1]\n', "", "pick one"),
        ("speed = 3\n", "speed", "Extra inputs"),
    ],
)
def test_invalid_files_name_the_field(tmp_path: Path, text: str, field: str, hint: str) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_scenario(path)
    message = str(caught.value)
    assert str(path) in message and hint in message, message
    assert field in message, message


def test_unreadable_sources_say_what_to_do(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="neither a built-in"):
        load_scenario("nowhere.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("agents = [")
    with pytest.raises(ConfigError, match="not valid toml"):
        load_scenario(broken)


def test_json_round_trip_and_without_loss(tmp_path: Path) -> None:
    scenario = load_scenario("regions3")
    path = tmp_path / "r3.json"
    path.write_text(scenario.model_dump_json())
    assert load_scenario(path) == scenario
    lossless = scenario.without_loss()
    assert all(lossless.link(a, b).loss == 0 for a in range(8) for b in range(8))
    assert lossless.link(0, 3).bandwidth_mbps == 20 and lossless.link(0, 3).rtt_ms == (100, 100)
