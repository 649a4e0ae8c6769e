"""Entry point: global options, sub-command dispatch, and domain errors turned into exit codes.

Exit codes: 0 success; 1 unexpected failure; 2 bad usage; 65 bad input data (image, model spec);
66 input file missing; 69 OpenVINO device unavailable; 74 model store or file integrity problem;
78 configuration error.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from agent import __version__
from agent.cli import gallery as gallery_cmd
from agent.cli import models as models_cmd
from agent.cli import service as service_cmd
from agent.cli import vision as vision_cmd
from agent.cli.context import Context
from agent.cli.parsing import add_command
from agent.config import load_config
from agent.errors import EXIT_FAILURE, EXIT_OK, FaceFleetError

EPILOG = """examples:
  facefleet-agent models import-defaults
  facefleet-agent analyze photo.jpg --json
  facefleet-agent enroll --person-id ada --name Ada photos/ada/
  facefleet-agent identify door.jpg
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="facefleet-agent",
        description="FaceFleet edge agent: face detection, recognition and expression on OpenVINO.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"facefleet-agent {__version__}")
    parser.add_argument("--config", type=Path, help="agent config file (TOML); default: built-in defaults")
    parser.add_argument("--state-dir", type=Path, help="models, database and cache (overrides the config)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    models_cmd.register(commands)
    vision_cmd.register(commands)
    gallery_cmd.register(commands)
    service_cmd.register(commands)
    check = add_command(
        commands,
        "check-config",
        "validate a config file",
        "facefleet-agent check-config /etc/facefleet/agent.toml   (exit 78 when invalid)",
        description="Validate an agent config file strictly; with --json, print the effective settings.",
    )
    check.add_argument("file", type=Path)
    check.set_defaults(handler=_check_config, needs_context=False)
    return parser


def _check_config(context: Context | None, args: argparse.Namespace) -> int:
    config = load_config(args.file)
    if args.json:
        print(config.model_dump_json(indent=2))
    else:
        print(f"{args.file}: ok")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    try:
        context = Context.from_args(args) if getattr(args, "needs_context", True) else None
        code: int = args.handler(context, args)
        return code
    except FaceFleetError as exc:
        print(f"facefleet-agent: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
