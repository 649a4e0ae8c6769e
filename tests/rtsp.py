"""A real RTSP server (GStreamer's, run by the system python: tests/rtsp_server.py) on a free loopback port,
serving a video file as H.264 over RTP; started, stopped, frozen and started again by the tests."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

from tests.mosquitto import free_port

SYSTEM_PYTHON = "/usr/bin/python3"  # has GStreamer's `gi` bindings from apt; the project's .venv does not
SERVER = Path(__file__).with_name("rtsp_server.py")
START_TIMEOUT_S = 60.0  # the first run after installing GStreamer builds its plugin registry


class RtspServer:
    """A server process for one video at rtsp://127.0.0.1:PORT/PATH, looping like a live camera.
    start() and stop() may be called repeatedly: it comes back on the same port."""

    def __init__(self, video: Path, workdir: Path, path: str = "/stream") -> None:
        self.video = video
        self.port = free_port()
        self.path = path
        self.url = f"rtsp://127.0.0.1:{self.port}{path}"
        self.log_path = workdir / f"rtsp-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def start(self) -> RtspServer:
        """Start serving and return once the server describes the stream."""
        command = [SYSTEM_PYTHON, str(SERVER), "--port", str(self.port), "--path", self.path, str(self.video)]
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=log)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the RTSP server exited (run scripts/setup to install GStreamer): {self.log}"
                )
            if self.describe().startswith("RTSP/1.0 200"):
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(
            f"the RTSP server did not describe {self.url} within {START_TIMEOUT_S} s: {self.log}"
        )

    def describe(self) -> str:
        """The status line of the server's answer to an RTSP DESCRIBE of the stream; "" if none came."""
        request = f"DESCRIBE {self.url} RTSP/1.0\r\nCSeq: 1\r\nAccept: application/sdp\r\n\r\n"
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=5) as connection:
                connection.sendall(request.encode())
                answer = b""
                while b"\r\n" not in answer and (chunk := connection.recv(4096)):
                    answer += chunk
        except OSError:
            return ""
        return answer.split(b"\r\n", 1)[0].decode(errors="replace")

    def stop(self) -> None:
        """Stop the server (SIGTERM); its clients' connections close."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a frozen server must run to handle SIGTERM
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.process = None

    def freeze(self) -> None:
        """Stop the process (SIGSTOP) without closing anything: the stream stalls as behind a dead link."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)
