"""The facefleet-server command line: serve, certificates, tokens, models, rollouts and queries; the top
layer of the server."""

from facefleet.server.cli.main import main

__all__ = ["main"]
