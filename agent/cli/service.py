"""`facefleet-agent run`: the long-running service, stopped cleanly by SIGTERM or SIGINT. It holds the store's
lock (facefleet.agent.store.lock) for as long as it runs, and upgrades the store at start.

SIGHUP does not stop it (nor reload anything in place): it logs that the connection to the server rereads
[server] ca_file, cert_file and key_file when it next connects, and that other changes need a restart."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

from facefleet.agent.cli.context import Context
from facefleet.agent.service.loop import AgentService
from facefleet.agent.store.lock import StoreLock
from facefleet.core.cli import add_command
from facefleet.core.config import check_writable
from facefleet.core.errors import EXIT_OK
from facefleet.core.logs import set_log_format

log = logging.getLogger(__name__)
HANGUP_NOTE = (
    "SIGHUP: the agent goes on; its connections to the server and to the broker reread their TLS files "
    "([server] and [mqtt] ca_file, cert_file, key_file) when they next connect (e.g. after the server or the "
    "broker restarts or closes them); other changes, the configuration, take a restart (systemctl restart "
    "facefleet-agent)"
)


def register(commands: Any) -> None:
    run = add_command(
        commands,
        "run",
        "run the agent service (cameras, recognition, MQTT events, doors)",
        "facefleet-agent --config /etc/facefleet/agent.toml run",
        description="Run until SIGTERM: read the configured cameras, publish events, decide door access.",
        json_output=False,
    )
    run.set_defaults(handler=_run)


def _run(context: Context, args: argparse.Namespace) -> int:
    context.config.check_files()  # a bad TLS or password file: exit 78 before any model is compiled
    check_writable("state_dir", context.state_dir)  # models, store, cache: exit 74 before anything is read
    set_log_format(context.config.log_format, {"device_id": context.config.device()})
    # held until the process ends: a second service, or `store migrate`, is refused meanwhile (exit 69)
    lock = StoreLock(context.store_path, "run")
    try:
        service = AgentService(context.config, context.state_dir)
    except BaseException:
        lock.close()
        raise

    def stop(signum: int, frame: FrameType | None) -> None:
        service.request_stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, _hangup_logger())
    service.run()
    if any(not camera.join(0.0) for camera in service.cameras.values()):
        # A camera still inside a read of a stalled stream: when that read returns, its thread must not find
        # the interpreter shutting down (the native code under it aborts the process). Everything is flushed.
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(EXIT_OK)
    lock.close()
    return EXIT_OK


def _hangup_logger() -> Callable[[int, FrameType | None], None]:
    """A SIGHUP handler that has a thread of its own log HANGUP_NOTE: logging in the handler itself could
    interrupt the main thread inside a write to the same stream."""
    hangups = threading.Event()

    def note() -> None:
        while True:
            hangups.wait()
            hangups.clear()
            log.warning(HANGUP_NOTE)

    threading.Thread(target=note, name="sighup", daemon=True).start()

    def hangup(signum: int, frame: FrameType | None) -> None:
        hangups.set()

    return hangup
