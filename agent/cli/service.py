"""`facefleet-agent run`: the long-running service, stopped cleanly by SIGTERM or SIGINT."""

from __future__ import annotations

import argparse
import signal
from types import FrameType
from typing import Any

from agent.cli.context import Context
from agent.errors import EXIT_OK
from agent.service import AgentService


def register(commands: Any) -> None:
    run = commands.add_parser(
        "run",
        help="run the agent service (cameras, recognition, MQTT events, doors)",
        description="Run until SIGTERM: read the configured cameras, publish events, decide door access.",
        epilog="example:\n  facefleet-agent --config /etc/facefleet/agent.toml run",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.set_defaults(handler=_run)


def _run(context: Context, args: argparse.Namespace) -> int:
    service = AgentService(context.config, context.state_dir)

    def stop(signum: int, frame: FrameType | None) -> None:
        service.stop_event.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    service.run()
    return EXIT_OK
