"""Several hosts in one URL (``?host=a:port&host=b:port``): the store connects to the first
that answers, in order.

MySQL/MariaDB get it from the store (aiomysql takes one host); PostgreSQL from asyncpg, which
reads the same URL form. A host that refuses comes first here, as a node that is down would.
"""

from __future__ import annotations

import socket

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url

from agent_session_store import SessionStore
from agent_session_store._hosts import hosts_of
from agent_session_store.errors import DatabaseConnectionError, InvalidArgumentError
from tests.conftest import dialect_of, reset_database, server_url


def _refusing_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _with_hosts(url: str, *hosts: str) -> str:
    real = make_url(url)
    parsed = URL.create(real.drivername, real.username, real.password, database=real.database)
    parsed = parsed.update_query_dict(dict(real.query))
    return parsed.update_query_dict({"host": list(hosts)}).render_as_string(hide_password=False)


@pytest.fixture(params=["postgresql", "mariadb"])
async def server(request: pytest.FixtureRequest) -> str:
    url = server_url(request.param)
    await reset_database(url)
    return url


async def test_a_store_moves_past_a_host_that_refuses_to_the_next(server: str) -> None:
    real = make_url(server)
    url = _with_hosts(server, f"127.0.0.1:{_refusing_port()}", f"{real.host}:{real.port}")
    async with SessionStore(url) as store:
        await store.create_tables()
        await store.add_items("s", [{"n": 1}])
        assert await store.get_items("s") == [{"n": 1}]
        assert await store.pop_item("s") == {"n": 1}


async def test_a_store_whose_hosts_all_refuse_says_it_cannot_connect(server: str) -> None:
    url = _with_hosts(server, f"127.0.0.1:{_refusing_port()}", f"127.0.0.1:{_refusing_port()}")
    async with SessionStore(url) as store:
        with pytest.raises(DatabaseConnectionError, match="cannot connect"):
            await store.get_items("s")


async def test_causal_reads_are_left_off_on_a_server_without_galera(server: str) -> None:
    if dialect_of(server) != "mariadb":
        pytest.skip("wsrep_sync_wait is a MariaDB Galera setting")
    async with SessionStore(server) as store, store.engine.connect() as conn:
        assert await conn.scalar(text("SELECT @@session.wsrep_sync_wait")) == 0


def test_hosts_are_read_from_the_url_in_order() -> None:
    url = make_url("mysql+aiomysql://u@a:3307/db?host=b&host=c:3309")
    assert hosts_of(url) == [("a", 3307), ("b", 3307), ("c", 3309)]
    with pytest.raises(InvalidArgumentError, match="host="):
        hosts_of(make_url("mysql+aiomysql://u@/db?host=b:port"))


def test_causal_reads_need_a_url_not_an_engine() -> None:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine("sqlite+aiosqlite:///:memory:")
    with pytest.raises(TypeError, match="causal_reads"):
        SessionStore(engine, causal_reads=True)
