"""The facefleet-agent command line."""

from facefleet.agent.cli.main import main

__all__ = ["main"]
