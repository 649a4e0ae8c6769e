"""A TCP load balancer in front of several server replicas, as HAProxy in `mode tcp` with TLS passthrough:
each new client connection goes to the next backend in turn, a backend that refuses the connection is
skipped for the next one (HAProxy's `retries` with `option redispatch`), and bytes are copied both ways
untouched, so mutual TLS still ends at the replica. It runs its own event loop in a thread."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import Counter
from collections.abc import Sequence

from tests.mosquitto import free_port

CHUNK_BYTES = 64 * 1024


class TcpBalancer:
    """Round-robin over `backends` ((host, port) each) on 127.0.0.1:port; start() and close() once."""

    def __init__(self, backends: Sequence[tuple[str, int]]) -> None:
        self.backends = list(backends)
        self.port = free_port()
        self.connections: Counter[tuple[str, int]] = Counter()
        """Client connections sent to each backend so far."""
        self._next = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="balancer", daemon=True)
        self._server: asyncio.Server | None = None
        self._lock = threading.Lock()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> TcpBalancer:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._accept, "127.0.0.1", self.port), self._loop
        ).result(10)
        return self

    def close(self) -> None:
        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def count(self, backend: tuple[str, int]) -> int:
        with self._lock:
            return self.connections[backend]

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        for _ in self.backends:
            with self._lock:
                backend = self.backends[self._next % len(self.backends)]
                self._next += 1
            try:
                reader, writer = await asyncio.open_connection(*backend)
            except OSError:
                continue  # down: the next backend takes this client
            with self._lock:
                self.connections[backend] += 1
            await asyncio.gather(self._pipe(client_reader, writer), self._pipe(reader, client_writer))
            return
        client_writer.close()

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Copy until either side ends, then close the other (a killed replica ends its clients' streams)."""
        try:
            while data := await reader.read(CHUNK_BYTES):
                writer.write(data)
                await writer.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(OSError, RuntimeError):
                writer.close()
