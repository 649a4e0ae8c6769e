"""An HTTP MJPEG camera for tests, in a thread of the test process: JPEG frames as multipart/x-mixed-replace,
the way many IP cameras serve them, optionally stalling halfway through a frame."""

from __future__ import annotations

import http.server
import itertools
import socketserver
import threading
import time

import cv2
import numpy as np


class MjpegServer(socketserver.ThreadingMixIn, http.server.HTTPServer):
    """An HTTP camera on 127.0.0.1: GET /<name>.mjpg streams the JPEG frames of streams[name] as
    multipart/x-mixed-replace at 20 frames/s, over and over until the client leaves (or `rounds` times, then
    closes the connection). With stall_after, it stops halfway through the frame after that many, as a
    camera behind a dead link, until stalls_end is set; then it closes the connection, the n-th stalled
    connection n × release_spacing_s later."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _MjpegHandler)
        self.streams: dict[str, list[bytes]] = {}
        self.rounds: int | None = None
        self.stall_after: int | None = None
        self.stalls_end = threading.Event()
        self.release_spacing_s = 0.0
        self.sent: dict[str, int] = {}
        """Whole frames sent so far per stream, over all connections."""
        self._stalled = itertools.count()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}.mjpg"


class _MjpegHandler(http.server.BaseHTTPRequestHandler):
    server: MjpegServer

    def do_GET(self) -> None:
        name = self.path.strip("/").removesuffix(".mjpg")
        frames = self.server.streams[name]
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
        self.end_headers()
        try:
            rounds = sent = 0
            while self.server.rounds is None or rounds < self.server.rounds:
                rounds += 1
                for jpeg in frames:
                    head = b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                    if sent == self.server.stall_after:
                        self.wfile.write(head + jpeg[: len(jpeg) // 2])
                        order = next(self.server._stalled)
                        self.server.stalls_end.wait()
                        time.sleep(order * self.server.release_spacing_s)
                        return
                    self.wfile.write(head + jpeg + b"\r\n")
                    sent += 1
                    self.server.sent[name] = self.server.sent.get(name, 0) + 1
                    time.sleep(0.05)
        except OSError:  # the client left
            pass

    def log_message(self, format: str, *args: object) -> None:
        pass


def flat_jpeg(width: int, height: int) -> bytes:
    """A JPEG of one grey level: a few hundred KB even at 4K."""
    ok, encoded = cv2.imencode(".jpg", np.full((height, width, 3), 90, np.uint8))
    assert ok
    return encoded.tobytes()
