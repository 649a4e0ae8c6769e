"""What both command lines share: the program's parser with its global options, sub-commands declared
with a one-line summary, an example in their help and --json, logging by -v, and running a command so that
a FaceFleetError becomes its message on stderr and its exit code."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from facefleet.core.errors import EXIT_FAILURE, FaceFleetError

EXIT_INTERRUPTED = 130
PIPED_WIDTH = 200
"""Columns of a command's tables when its output goes to a pipe or a file (and $COLUMNS is not set)."""


def output_console(*, stderr: bool = False, soft_wrap: bool = False) -> Console:
    """Where a command prints: the terminal's width on a terminal; PIPED_WIDTH columns into a pipe or a file
    (rich would take 80), so that a table row stays on one line for grep, less and logs. Strings and table
    cells are printed as they are, never read as rich markup or emoji codes: they hold names, ids and
    messages ("Eileen [/x] C." is a name); style with rich.text.Text."""
    stream = sys.stderr if stderr else sys.stdout
    piped = not stream.isatty() and "COLUMNS" not in os.environ
    return Console(
        stderr=stderr,
        highlight=False,
        markup=False,
        emoji=False,
        soft_wrap=soft_wrap,
        width=PIPED_WIDTH if piped else None,
    )


def program_parser(
    prog: str, description: str, epilog: str, version: str, state_dir_help: str
) -> tuple[argparse.ArgumentParser, Any]:
    """The parser of one program with --version, --config, --state-dir and -v, and its sub-commands."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"{prog} {version}")
    parser.add_argument("--config", type=Path, help="config file (TOML); default: built-in defaults")
    parser.add_argument("--state-dir", type=Path, help=state_dir_help)
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    return parser, commands


def add_command(
    commands: Any, name: str, summary: str, example: str, *, description: str = "", json_output: bool = True
) -> argparse.ArgumentParser:
    """A sub-command whose --help shows the summary (or a longer description) and an example."""
    parser: argparse.ArgumentParser = commands.add_parser(
        name,
        help=summary,
        description=description or summary[0].upper() + summary[1:] + ".",
        epilog=f"example{'s' if chr(10) in example else ''}:\n  {example}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if json_output:
        parser.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def configure_logging(verbose: int, level: int = logging.WARNING) -> None:
    """Log at `level`, one step more detailed for each -v (down to DEBUG)."""
    logging.basicConfig(
        level=max(logging.DEBUG, level - 10 * verbose), format="%(levelname)s %(name)s: %(message)s"
    )


def run_command(
    program: str, args: argparse.Namespace, make_context: Callable[[argparse.Namespace], Any]
) -> int:
    """Run the chosen sub-command's handler(context, args); the context is made unless the command set
    needs_context=False, and closed afterwards when it has a close(). Returns the exit code."""
    context: Any = None
    try:
        if getattr(args, "needs_context", True):
            context = make_context(args)
        code: int = args.handler(context, args)
        return code
    except FaceFleetError as exc:
        print(f"{program}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return EXIT_FAILURE
    finally:
        close = getattr(context, "close", None)
        if close is not None:
            close()
