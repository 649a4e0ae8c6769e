"""How every facefleet-agent command is declared: a one-line summary, an example in its help, and --json."""

from __future__ import annotations

import argparse
from typing import Any


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
