"""The processes an agent starts die with it, even when the agent is killed with SIGKILL.

hivemind runs the DHT and the averager in forked child processes and the DHT starts the ``p2pd`` daemon.
When the agent exits normally it shuts them down; when it is SIGKILLed (the OOM killer, ``kill -9``, a
crashed host supervisor) they used to live on as orphans, holding the agent's port, so the next
``hypergpu join`` failed with "port in use". Linux's parent-death signal fixes that: every child forked
by the agent asks the kernel for SIGTERM when its parent goes, and on SIGTERM takes its own children
(``p2pd``, started through ``subprocess``, which runs no fork hooks) down with it. No library wraps
``prctl(PR_SET_PDEATHSIG)`` for this; it is one libc call through ctypes.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys
from types import FrameType

import psutil

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>
_installed = False
_forking_parent = 0


def _take_children_down(signum: int, frame: FrameType | None) -> None:
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            child.kill()
    os._exit(128 + signum)


def _before_fork() -> None:
    global _forking_parent
    _forking_parent = os.getpid()  # the child inherits this copy


def _after_fork_in_child() -> None:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0) != 0:
            return
    except (OSError, AttributeError):
        return
    signal.signal(signal.SIGTERM, _take_children_down)
    # Checked after prctl: a parent that died between fork and prctl sent no signal, and the child was
    # already re-parented (to init or a subreaper, so compare with the forking pid, not with 1).
    if os.getppid() != _forking_parent:
        _take_children_down(int(signal.SIGTERM), None)


def children_die_with_this_process() -> None:
    """Make every process forked from now on exit (with its own children) when this process dies.

    Linux only (elsewhere a no-op); idempotent. The signal follows the *thread* that forked the child,
    so call it from a thread that lives as long as the children should.
    """
    global _installed
    if _installed or not sys.platform.startswith("linux"):
        return
    os.register_at_fork(before=_before_fork, after_in_child=_after_fork_in_child)
    _installed = True
