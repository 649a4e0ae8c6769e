"""systemd's sd_notify datagram protocol in a few lines (no dependency): READY=1, STATUS=…, STOPPING=1 and
WATCHDOG=1 sent to $NOTIFY_SOCKET when the service runs under systemd with Type=notify."""

from __future__ import annotations

import os
import socket


def notify(*fields: str) -> bool:
    """Send 'KEY=value' fields in one datagram; False when not running under a notify-aware manager."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
        try:
            sock.connect(address)
            sock.sendall("\n".join(fields).encode("utf-8"))
        except OSError:
            return False
    return True


def watchdog_interval() -> float | None:
    """Seconds between WATCHDOG=1 pings (half of systemd's WatchdogSec), or None when no watchdog is set."""
    usec = os.environ.get("WATCHDOG_USEC", "")
    pid = os.environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0 or (pid and pid != str(os.getpid())):
        return None
    return int(usec) / 2_000_000
