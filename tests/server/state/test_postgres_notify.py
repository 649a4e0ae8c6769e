"""The listening connection of facefleet.server.state.postgres.notify on a real PostgreSQL server: TCP
keepalives on its socket, and a 'listening' report each time its LISTEN is in place, the first included."""

from __future__ import annotations

import asyncio
import socket

import numpy as np
import psycopg

from facefleet.link.checks import utc_now
from facefleet.link.gallery import Embedding, Person
from facefleet.server.state.postgres.notify import LISTENING, follow, listen_connection
from facefleet.server.state.postgres.state import PostgresState
from tests.postgres import PostgresCluster
from tests.server.conftest import run


def keepalive_options(conn: psycopg.AsyncConnection[object]) -> tuple[int, int, int, int]:
    """(SO_KEEPALIVE, TCP_KEEPIDLE s, TCP_KEEPINTVL s, TCP_KEEPCNT) of the connection's socket."""
    sock = socket.socket(fileno=socket.dup(conn.pgconn.socket))
    try:
        return (
            sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL),
            sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT),
        )
    finally:
        sock.close()


def test_the_listening_connection_gives_up_a_silent_peer_within_half_a_minute(
    postgres_cluster: PostgresCluster,
) -> None:
    url = postgres_cluster.url()

    async def scenario() -> tuple[tuple[int, ...], tuple[int, ...]]:
        async with (
            await listen_connection(url) as conn,
            await listen_connection(f"{url}?keepalives_idle=60") as own,
        ):
            return keepalive_options(conn), keepalive_options(own)

    default, own = run(scenario)
    assert default == (1, 10, 5, 3)
    assert own == (1, 60, 5, 3)  # a URL's own setting is kept


def test_each_listen_in_place_is_reported_before_the_notifications(postgres_cluster: PostgresCluster) -> None:
    """What was committed before a LISTEN went unheard: the follower says so first, also after its
    connection was cut, so its caller looks at everything once."""
    url = postgres_cluster.create_database()
    state = PostgresState(url, pool_size=1)  # the schema with its notifying triggers

    async def scenario() -> list[str]:
        seen: list[str] = []
        arrived = asyncio.Queue[str]()

        async def on_change(change: str) -> None:
            seen.append(change)
            await arrived.put(change)

        following = asyncio.create_task(follow(url, on_change))
        try:
            assert await asyncio.wait_for(arrived.get(), 20) == LISTENING
            person = Person(
                "p1", embeddings=(Embedding("sface@2021dec", np.ones(128, np.float32) / np.sqrt(128)),)
            )
            await asyncio.to_thread(state.add_person, person, (), utc_now())
            assert await asyncio.wait_for(arrived.get(), 20) == "gallery"
            with psycopg.connect(url, autocommit=True) as conn:  # the database drops the connection
                conn.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'"
                )
            assert await asyncio.wait_for(arrived.get(), 20) == LISTENING
        finally:
            following.cancel()
        return seen

    try:
        assert run(scenario) == [LISTENING, "gallery", LISTENING]
    finally:
        state.close()
