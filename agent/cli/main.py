"""Entry point: global options, sub-command dispatch, and domain errors turned into exit codes.

Exit codes: 0 success; 1 unexpected failure; 2 bad usage; 65 bad input data (image, model spec, person id,
a file that is not a FaceFleet store); 66 input file missing; 69 OpenVINO device unavailable or the store
busy; 74 model store, store or file integrity problem; 78 configuration error, or a file it names unusable.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from facefleet import __version__
from facefleet.agent.cli import gallery as gallery_cmd
from facefleet.agent.cli import models as models_cmd
from facefleet.agent.cli import service as service_cmd
from facefleet.agent.cli import vision as vision_cmd
from facefleet.agent.cli.context import Context
from facefleet.agent.config import load_config
from facefleet.core.cli import add_command, configure_logging, program_parser, run_command
from facefleet.core.errors import EXIT_OK

EPILOG = """examples:
  facefleet-agent models import-defaults
  facefleet-agent analyze photo.jpg --json
  facefleet-agent enroll --person-id ada --name Ada photos/ada/
  facefleet-agent identify door.jpg
"""


def build_parser() -> argparse.ArgumentParser:
    parser, commands = program_parser(
        "facefleet-agent",
        "FaceFleet edge agent: face detection, recognition and expression on OpenVINO.",
        EPILOG,
        __version__,
        "models, database and cache (overrides the config)",
    )
    models_cmd.register(commands)
    vision_cmd.register(commands)
    gallery_cmd.register(commands)
    service_cmd.register(commands)
    check = add_command(
        commands,
        "check-config",
        "validate a config file",
        "facefleet-agent check-config /etc/facefleet/agent.toml   (exit 78 when invalid)",
        description="Validate an agent config file strictly, and the files it names as `run` reads them "
        "(MQTT and [server] PEM files, the MQTT password file; a client certificate that is expired or not "
        "valid yet is refused, which `run` only warns of); with --json, print the effective settings, "
        "each door's threshold per embedding model with where it comes from and its margin over the closest "
        "impostor score measured for the model.",
    )
    check.add_argument("file", type=Path)
    check.set_defaults(handler=_check_config, needs_context=False)
    return parser


def _check_config(context: Context | None, args: argparse.Namespace) -> int:
    config = load_config(args.file)
    config.check_files()
    config.check_certificate_dates()  # `run` only warns: doors decide offline with an expired certificate
    if args.json:
        effective = config.model_dump(mode="json")
        for door, dumped in zip(config.doors, effective["doors"], strict=True):
            dumped["effective_threshold"] = {
                model_id: found.to_json() for model_id, found in config.door_thresholds(door).items()
            }
        print(json.dumps(effective, indent=2))
    else:
        print(f"{args.file}: ok")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure_logging(args.verbose)
    return run_command("facefleet-agent", args, Context.from_args)


if __name__ == "__main__":
    sys.exit(main())
