"""The metrics endpoint under clients that connect and then say nothing: at most max_connections are served
at once (one more is closed at once), each closed after its request timeout, and scrapes answered after."""

from __future__ import annotations

import os
import select
import socket
import threading
import time
import urllib.request

from prometheus_client import CollectorRegistry, Gauge

from facefleet.core.metrics import MetricsEndpoint


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


def closed_by_server(clients: list[socket.socket], within: float) -> list[socket.socket]:
    """The clients whose connection the server closed (end of stream) within `within` seconds."""
    readable, _, _ = select.select(clients, [], [], within)
    return [client for client in readable if client.recv(1024) == b""]


def test_idle_clients_are_capped_and_timed_out_and_scrapes_are_answered_after_them() -> None:
    registry = CollectorRegistry()
    Gauge("facefleet_test_up", "1 while up", registry=registry).set(1)
    endpoint = MetricsEndpoint(registry, "127.0.0.1:0", request_timeout_s=1.0, max_connections=4)
    port = endpoint.start()
    threads = threading.active_count()
    clients: list[socket.socket] = []
    try:
        assert "facefleet_test_up 1.0" in scrape(port)
        while threading.active_count() > threads:  # the scrape's thread is done with its connection
            time.sleep(0.01)
        fds = open_fds()
        started = time.monotonic()
        clients += [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(12)]
        for client in clients:
            client.sendall(b"GET /metrics HTTP/1.1\r\n")  # and nothing more
        time.sleep(0.3)
        at_once = closed_by_server(clients, 0.0)
        assert len(at_once) == 8  # over the cap: closed as soon as accepted
        assert open_fds() <= fds + len(clients) + 4  # the clients' own, and the 4 served
        assert threading.active_count() <= threads + 4
        held = [client for client in clients if client not in at_once]
        timed_out: list[socket.socket] = []
        all_open_at = 0.0  # seconds after the clients connected
        while len(timed_out) < len(held) and time.monotonic() - started < 5:
            timed_out += closed_by_server([c for c in held if c not in timed_out], 0.05)
            if not timed_out:
                all_open_at = time.monotonic() - started
        assert len(timed_out) == 4 and all_open_at >= 0.9  # closed after their request timeout (1 s)
        assert "facefleet_test_up 1.0" in scrape(port)
    finally:
        for client in clients:
            client.close()
        endpoint.stop()
