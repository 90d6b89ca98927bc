"""Link profiles: the built-ins, validation, and combining an agent's own profile with a link."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from agent.errors import ConfigError
from agent.network.profiles import BUILTIN_PROFILES, LinkProfile, builtin_profile, worse


def test_builtins_match_the_project_brief() -> None:
    expected = {
        "perfect": ((0, 0), 0.0),
        "good": ((10, 50), 0.001),
        "average": ((50, 150), 0.01),
        "poor": ((150, 300), 0.05),
        "unstable": ((50, 500), 0.10),
    }
    for name, (rtt, loss) in expected.items():
        profile = BUILTIN_PROFILES[name]
        assert profile.rtt_ms == rtt and profile.loss == loss, name
    assert BUILTIN_PROFILES["unstable"].is_varying and BUILTIN_PROFILES["unstable"].reset_fraction > 0
    assert not BUILTIN_PROFILES["poor"].is_varying


def test_rto_is_sized_from_the_worst_rtt_with_a_floor() -> None:
    assert BUILTIN_PROFILES["good"].rto_ms == 200  # 2 * 50 < 200
    assert BUILTIN_PROFILES["poor"].rto_ms == 600  # 2 * 300
    assert LinkProfile(rtt_ms=40, min_rto_ms=50).rto_ms == 80


def test_scalar_rtt_means_fixed_and_ranges_must_be_ordered() -> None:
    assert LinkProfile(rtt_ms=25).rtt_ms == (25, 25)
    with pytest.raises(ValidationError, match="rtt_ms"):
        LinkProfile(rtt_ms=(50, 10))
    with pytest.raises(ValidationError):
        LinkProfile(loss=1.5)
    with pytest.raises(ValidationError):
        LinkProfile(bandwidth_mbps=0)
    with pytest.raises(ValidationError):
        LinkProfile(rtt_ms=10, latency=5)  # unknown field


def test_unknown_builtin_names_the_choices() -> None:
    with pytest.raises(ConfigError, match="perfect, good, average, poor, unstable"):
        builtin_profile("terrible")


def test_worse_takes_the_worst_of_each_field() -> None:
    region = LinkProfile(name="r1-r3", rtt_ms=150, loss=0.005, bandwidth_mbps=20)
    combined = worse(region, BUILTIN_PROFILES["poor"])
    assert combined.rtt_ms == (150, 300)
    assert combined.loss == 0.05
    assert combined.bandwidth_mbps == 20  # poor has no cap: the region's cap stays
    assert combined.jitter_ms == BUILTIN_PROFILES["poor"].jitter_ms
    assert worse(region, region) == region
    assert worse(region, BUILTIN_PROFILES["unstable"]).rtt_change_s == 2.0
