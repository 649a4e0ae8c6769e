"""The facefleet-agent command line."""

from agent.cli.main import main

__all__ = ["main"]
