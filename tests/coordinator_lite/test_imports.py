"""coordinator_lite's logic and the shared protocol types stay free of torch, hivemind and training."""

from __future__ import annotations

import subprocess
import sys


def test_coordinator_logic_imports_neither_torch_nor_the_swarm():
    modules = [
        "agent.protocol.reports",
        "agent.protocol.bindings",
        "coordinator_lite.verification",
        "coordinator_lite.scoring",
        "coordinator_lite.rewards",
        "coordinator_lite.state",
        "coordinator_lite.epochs",
        "coordinator_lite.api",
    ]
    probe = (
        f"import {', '.join(modules)}, sys; "
        "banned = ('torch', 'hivemind', 'agent.training', 'agent.swarm'); "
        "print(','.join(m for m in banned if m in sys.modules))"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == ""
