"""Domain errors of the agent, each with the process exit code the CLI returns for it.

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


class ImageError(FaceFleetError):
    """An image cannot be read or has an unusable format."""

    exit_code = EXIT_DATA


class DeviceError(FaceFleetError):
    """The requested OpenVINO device is not available."""

    exit_code = EXIT_UNAVAILABLE


class ModelStoreError(FaceFleetError):
    """The model store is missing a model or cannot be written."""

    exit_code = EXIT_IO


class ModelIntegrityError(ModelStoreError):
    """A stored model file does not match the sha256 in its manifest."""


class ModelSpecError(FaceFleetError):
    """A model's inputs or outputs do not fit the task it is imported for."""

    exit_code = EXIT_DATA
