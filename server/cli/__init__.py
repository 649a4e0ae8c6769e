"""The facefleet-server command line: serve, certificates, tokens, models, rollouts and queries."""

from facefleet.server.cli.main import main

__all__ = ["main"]
