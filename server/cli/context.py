"""What every facefleet-server command shares: the loaded config, the state directory's paths, the state
database (opened on first use; only the verbs that start a new install create it, and only `serve` and
`state migrate` upgrade an older one: the others refuse it untouched, exit 65, since older servers may be
serving it), the output console, and recording changes in the admin audit log."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from facefleet.core.cli import output_console
from facefleet.core.paths import resolve_state_dir
from facefleet.link.checks import utc_now
from facefleet.server.cli.local import LocalHandlers
from facefleet.server.cli.remote import SERVER_ENV, RemoteServer, RemoteSettings
from facefleet.server.config import ServerConfig, load_config
from facefleet.server.domain.audit import LOCAL, AuditEntry
from facefleet.server.errors import StateError, UsageError
from facefleet.server.paths import ServerPaths
from facefleet.server.state.interface import State
from facefleet.server.state.open import on_postgres, open_state, sqlite_database

log = logging.getLogger(__name__)


@dataclass
class Context:
    """Parsed global options and what commands share."""

    config: ServerConfig
    paths: ServerPaths
    json_output: bool = False
    console: Console = field(default_factory=lambda: output_console(soft_wrap=True))
    errors: Console = field(default_factory=lambda: output_console(stderr=True, soft_wrap=True))

    remote: RemoteServer | None = None
    creates_state: bool = False
    """The verb may create the state database (it starts a new install); others refuse a missing one."""
    upgrades_state: bool = False
    """The verb may apply pending migrations (`state migrate`, holding the database offline); others
    refuse an older database (StateOutdatedError)."""

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Context:
        """The context of a verb. A verb that set local_only (its name) is refused with --server or
        $FACEFLEET_SERVER: UsageError (exit 2), the one place every such verb is refused."""
        local_only = getattr(args, "local_only", None)
        if local_only and (getattr(args, "server", None) or os.environ.get(SERVER_ENV)):
            raise UsageError(
                f"{local_only} works on the server host's own state directory, never through --server: run "
                f"it on the server host without --server (and without ${SERVER_ENV})"
            )
        config = load_config(args.config)
        state_dir = resolve_state_dir("facefleet-server", args.state_dir, config.state_dir)
        settings = RemoteSettings.from_options(
            getattr(args, "server", None), getattr(args, "token_file", None), getattr(args, "ca_file", None)
        )
        return cls(
            config,
            ServerPaths.from_config(state_dir, config),
            bool(getattr(args, "json", False)),
            remote=None if settings is None else RemoteServer(settings),
            creates_state=bool(getattr(args, "creates_state", False)),
            upgrades_state=bool(getattr(args, "upgrades_state", False)),
        )

    @cached_property
    def state(self) -> State:
        """The state database; StateError (exit 74) naming the file when it does not exist and this verb
        does not start a new install: a mistyped --state-dir shows no empty fleet. StateOutdatedError (exit
        65, untouched) when it is older than this server and the verb does not upgrade it."""
        self.check_state_exists()
        return open_state(
            self.config.state.url,
            self.paths.database,
            log_revisions=self.config.gallery.log_revisions,
            pool_size=min(self.config.state.pool_size, 2),
            upgrade=self.upgrades_state,
        )

    def check_state_exists(self) -> None:
        """StateError (exit 74) naming the file when the SQLite state database does not exist and this verb
        does not start a new install."""
        url = self.config.state.url
        database = sqlite_database(url, self.paths.database)
        if not self.creates_state and not on_postgres(url) and not database.exists():
            raise StateError(
                f"no state database at {database}: check --state-dir (and state_dir or [state] url of "
                "--config); on a new install `facefleet-server certs init`, `certs issue DEVICE`, `tokens "
                "create`, `models import-defaults` or `models publish` creates it"
            )

    @cached_property
    def operators(self) -> LocalHandlers:
        """The operator handlers over this state directory."""
        return LocalHandlers(self.config, self.paths, self.state)

    def print_json(self, data: Any) -> None:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        sys.stdout.flush()

    @contextmanager
    def audited(self, action: str, target: str) -> Iterator[None]:
        """Record the change the body makes (who = "local") in the admin audit log, refused or not. Against
        a remote server the server records it, with the token's name."""
        if self.remote is not None:
            yield
            return
        try:
            yield
        except Exception as exc:
            self._record(action, target, exc)
            raise
        self._record(action, target, None)

    def _record(self, action: str, target: str, error: Exception | None) -> None:
        try:
            self.state.add_audit(AuditEntry.of(utc_now(), LOCAL, action, target, error))
        except Exception as exc:  # the change's own outcome matters more than its record
            log.warning("cannot record %s %s in the admin audit log: %s", action, target, exc)

    def close(self) -> None:
        """Close the state database if a command opened it, and the connection to a remote server."""
        if "state" in self.__dict__:
            self.state.close()
        if self.remote is not None:
            self.remote.close()


def dump(model: BaseModel) -> Any:
    """A response model of the HTTP API as JSON-ready data: what a verb prints, on the server host or not."""
    return model.model_dump(mode="json")


def when(iso: str, *, seconds: bool = False) -> str:
    """An ISO time of the JSON as a table shows it: 2026-12-02 14:05(:09)."""
    return iso.replace("T", " ")[: 19 if seconds else 16]


def new_table(*columns: str, whole: tuple[str, ...] = ()) -> Table:
    """A table whose cells wrap, however narrow the terminal, instead of being cut to "…"; the columns named
    in `whole` (ids) are never broken."""
    made = Table()
    for column in columns:
        if column in whole:
            made.add_column(column, no_wrap=True)
        else:
            made.add_column(column, overflow="fold")
    return made
