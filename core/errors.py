"""The base of every FaceFleet error, and the process exit codes the CLIs return for them.

Exit codes follow sysexits.h so systemd units and scripts can tell a bad config from a bad image.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_DATA = 65
EXIT_NO_INPUT = 66
EXIT_UNAVAILABLE = 69
EXIT_IO = 74
EXIT_CONFIG = 78


class FaceFleetError(Exception):
    """Base class: a message that names the thing and the fix, plus an exit code."""

    exit_code = EXIT_FAILURE


class ConfigError(FaceFleetError):
    """A configuration file or value is invalid."""

    exit_code = EXIT_CONFIG
