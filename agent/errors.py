"""Errors a user can meet. Each carries one clear line saying what happened and what to try.

The CLI prints ``str(error)`` and exits with ``exit_code``; the traceback goes to the log at DEBUG.
"""

from __future__ import annotations


class UserFacingError(Exception):
    """An error caused by input or environment, not by a bug. ``exit_code`` follows sysexits loosely."""

    exit_code: int = 1


class ConfigError(UserFacingError):
    """Invalid configuration: a field, its value, and what is allowed."""

    exit_code = 2


class DatasetError(UserFacingError):
    """A dataset is missing, incomplete or corrupt."""

    exit_code = 2


class BootstrapError(UserFacingError):
    """No initial peer could be reached."""

    exit_code = 3


class PortInUseError(UserFacingError):
    """The requested listen port is taken."""

    exit_code = 3


class NoPeersError(UserFacingError):
    """No averaging group formed within the matchmaking time."""

    exit_code = 4
