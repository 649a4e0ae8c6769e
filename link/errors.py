"""The one error of the link: a value that breaks the agent-server contract."""

from __future__ import annotations

from facefleet.core.errors import EXIT_DATA, FaceFleetError


class LinkError(FaceFleetError, ValueError):
    """A link value is malformed, too large or inconsistent; the message names the field and the limit.
    The server answers it with INVALID_ARGUMENT; the agent refuses the message and keeps what it has."""

    exit_code = EXIT_DATA
