"""Several MySQL/MariaDB hosts behind one store, and causal reads on Galera.

aiomysql connects to one host. For an engine the store makes from a MySQL/MariaDB URL, the
store connects itself (SQLAlchemy's ``async_creator``): to the URL's hosts in order, as
libpq does with ``?host=a:5432&host=b:5432``, moving to the next on a connection error
(refused, timed out, or a Galera node that is not ready for clients). The URL form is the
same::

    mysql+aiomysql://app@/agents?host=db1:3306&host=db2:3306&host=db3:3306

Each new connection then asks whether the server is a Galera node (``@@wsrep_on``); if it
is, and causal reads are on (the default there), it sets ``wsrep_sync_wait = 1``: a read
waits until the node has applied every write the cluster committed before it began, so a
read on one node sees a write just made through another.

Only the connection is chosen here: which errors end a write, and whether it runs again, is
still ``_transport``'s rule (a connection lost at the commit point is never retried). An
engine the host application made is used as it is.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.engine import URL

from agent_session_store.errors import InvalidArgumentError, UnsupportedDatabaseError

_DEFAULT_PORT = 3306


def hosts_of(url: URL) -> list[tuple[str, int]]:
    """The hosts ``url`` names: its own, then every ``host=name[:port]`` of its query."""
    found: list[tuple[str, int]] = []
    if url.host:
        found.append((url.host, url.port or _DEFAULT_PORT))
    listed = url.query.get("host", ())
    for entry in (listed,) if isinstance(listed, str) else listed:
        name, _, port = entry.rpartition(":") if ":" in entry else (entry, "", "")
        if not name or (port and not port.isdigit()):
            raise InvalidArgumentError(
                f"host={entry!r} in the database URL is not name or name:port"
            )
        found.append((name, int(port) if port else url.port or _DEFAULT_PORT))
    return found


def owned_mysql_engine(
    url: URL, kwargs: dict[str, Any], causal_reads: bool | None
) -> tuple[URL, dict[str, Any], int]:
    """The URL, engine arguments and host count for a MySQL/MariaDB engine the store makes.

    ``causal_reads``: True sets ``wsrep_sync_wait = 1`` on every connection to a Galera
    node, False never, None (the default) on every node that reports ``wsrep_on``.
    """
    hosts = hosts_of(url)
    several = "host" in url.query
    if kwargs.get("creator") or kwargs.get("async_creator"):
        if several or causal_reads:
            raise InvalidArgumentError(
                "engine_kwargs gives its own creator, so the store cannot choose among "
                "several hosts or set causal reads; leave one of them out"
            )
        return url, kwargs, 1
    if url.get_driver_name() != "aiomysql":
        if several or causal_reads:
            raise UnsupportedDatabaseError(
                "several hosts (?host=...) and causal_reads need the aiomysql driver "
                f"(mysql+aiomysql://), not {url.get_driver_name()!r}"
            )
        return url, kwargs, 1
    # The engine's URL names the first host (what errors and repr show); the creator knows all.
    single = url.difference_update_query(["host"])
    if hosts:
        single = single.set(host=hosts[0][0], port=hosts[0][1])
    dialect = url.get_dialect(_is_async=True)()
    _, found = dialect.create_connect_args(single)
    params = dict(found)
    kwargs = dict(kwargs)
    params.update(kwargs.pop("connect_args", None) or {})
    kwargs["async_creator"] = _connector(hosts, params, causal_reads)
    return single, kwargs, max(1, len(hosts))


def _connector(
    hosts: list[tuple[str, int]], params: dict[str, Any], causal_reads: bool | None
) -> Callable[[], Awaitable[Any]]:
    import aiomysql  # type: ignore[import-untyped]

    targets: list[dict[str, Any]] = [{"host": h, "port": p} for h, p in hosts] or [{}]

    async def connect() -> Any:
        last: BaseException | None = None
        for target in targets:
            where = f"{target.get('host', params.get('host'))}:{target.get('port', '')}"
            try:
                conn = await aiomysql.connect(**{**params, **target})
            except (OSError, aiomysql.Error) as exc:
                last = exc
                continue
            try:
                if await _ready(conn, causal_reads):
                    return conn
                last = aiomysql.OperationalError(
                    1047, f"the Galera node at {where} is not ready for clients"
                )
            except (OSError, aiomysql.Error) as exc:
                last = exc
            conn.close()
        assert last is not None
        raise last

    return connect


async def _ready(conn: Any, causal_reads: bool | None) -> bool:
    """Set causal reads on a Galera node; False for a node that cannot serve clients yet."""
    async with conn.cursor() as cursor:
        await cursor.execute("SELECT @@wsrep_on")
        row = await cursor.fetchone()
        if not row or not row[0]:
            return True  # not Galera: causal reads have nothing to wait for
        await cursor.execute("SHOW STATUS LIKE 'wsrep_ready'")
        ready = await cursor.fetchone()
        if ready is None or str(ready[1]).upper() != "ON":
            return False
        if causal_reads is not False:
            await cursor.execute("SET SESSION wsrep_sync_wait = 1")
    return True
