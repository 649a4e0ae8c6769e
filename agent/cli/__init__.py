"""The facefleet-agent command line: one module per verb group (vision, gallery, models, service) over a
shared context; the top layer of the agent."""

from facefleet.agent.cli.main import main

__all__ = ["main"]
