"""An agent's forked children, and their own subprocesses, die with it even when it is SIGKILLed."""

import json
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

# The parent installs the hook, forks a child like hivemind's DHT process, and that child starts a
# subprocess like p2pd; then the parent prints the pids and waits to be killed.
PARENT = r"""
import json, multiprocessing as mp, subprocess, sys, time
from agent.swarm.orphans import children_die_with_this_process

def dht_like(queue):
    daemon = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    queue.put(daemon.pid)
    time.sleep(120)

if __name__ == "__main__":
    children_die_with_this_process()
    mp.set_start_method("fork")
    queue = mp.Queue()
    child = mp.Process(target=dht_like, args=(queue,))
    child.start()
    print(json.dumps({"child": child.pid, "daemon": queue.get(timeout=30)}), flush=True)
    time.sleep(120)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="parent-death signal is Linux only")
def test_children_and_their_daemons_die_when_the_agent_is_sigkilled() -> None:
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    pids: dict[str, int] = {}
    try:
        pids = json.loads(parent.stdout.readline())
        assert psutil.pid_exists(pids["child"]) and psutil.pid_exists(pids["daemon"])
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=10)
        deadline = time.monotonic() + 10
        alive = list(pids.values())
        while alive and time.monotonic() < deadline:
            alive = [pid for pid in alive if _running(pid)]
            time.sleep(0.1)
        assert not alive, f"orphans left behind: {alive}"
    finally:
        for pid in [parent.pid, *pids.values()]:  # never leave sleepers behind, even on failure
            if _running(pid):
                os.kill(pid, signal.SIGKILL)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
