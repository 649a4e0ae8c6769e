"""A real mosquitto broker on a free loopback port, started and stopped by the tests."""

from __future__ import annotations

import getpass
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class BrokerTls:
    """A TLS listener: the broker's certificate and key, and the CA it checks client certificates against.
    require_certificate: clients must present a certificate from that CA, whose CN becomes their user name."""

    cafile: Path
    certfile: Path
    keyfile: Path
    require_certificate: bool = False

    def lines(self) -> list[str]:
        lines = [
            f"cafile {self.cafile}",
            f"certfile {self.certfile}",
            f"keyfile {self.keyfile}",
            "tls_version tlsv1.2",  # the lowest version the listener accepts
        ]
        if self.require_certificate:
            lines += ["require_certificate true", "use_identity_as_username true"]
        return lines


class Mosquitto:
    """A broker process; start() and stop() may be called repeatedly (same port, for outage tests).
    With tls, its one listener speaks only TLS; with acl, clients may use only the topics it allows."""

    def __init__(
        self,
        workdir: Path,
        users: dict[str, str] | None = None,
        tls: BrokerTls | None = None,
        acl: str | None = None,
    ) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None
        lines = [
            f"listener {self.port} 127.0.0.1",
            *(tls.lines() if tls is not None else []),
            "persistence true",  # sessions and queued QoS 1 messages survive a restart, as in production
            f"persistence_location {workdir}/",
            f"user {getpass.getuser()}",  # when run as root, stay able to read the test's own files
        ]
        if users:
            password_file = workdir / "passwords"
            password_file.touch()
            for user, password in users.items():
                subprocess.run(["mosquitto_passwd", "-b", str(password_file), user, password], check=True)
            lines += ["allow_anonymous false", f"password_file {password_file}"]
        else:
            lines.append("allow_anonymous true")
        if acl is not None:  # mosquitto's acl_file lines, e.g. "topic readwrite site/events/#"
            (workdir / "acl").write_text(acl)
            lines.append(f"acl_file {workdir / 'acl'}")
        self.config = workdir / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")

    @property
    def log(self) -> str:
        path = self.workdir / "mosquitto.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def start(self) -> Mosquitto:
        with (self.workdir / "mosquitto.log").open("ab") as log:
            self.process = subprocess.Popen([MOSQUITTO, "-c", str(self.config)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return self
            except OSError:
                if self.process.poll() is not None:
                    raise RuntimeError(f"mosquitto exited: {self.log}") from None
                time.sleep(0.05)
        raise RuntimeError("mosquitto did not start listening within 10 s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None
