"""A migration lock that a whole MariaDB Galera Cluster agrees on: a row in a table.

``GET_LOCK`` holds only on the node it ran on, so two processes upgrading through two nodes
would both get it. A row is replicated: the lock is taken by inserting the lock's row, and
Galera's certification lets exactly one of two concurrent inserts of one key commit (the
other fails with a deadlock error at COMMIT). Releasing deletes the row only if this holder
still owns it.

A holder that died leaves its row behind. The row names the holder's connection (its
``CONNECTION_ID()`` and a digest of the node and account it was made on), so a waiter
connected to the same node as the same account looks for it in ``information_schema
.PROCESSLIST`` (which shows a user their own connections without the ``PROCESS`` privilege):
gone, the row is taken over at once; there, the holder is alive (perhaps still in a long
``ALTER``) and is waited for, however old its row. Only a row the waiter cannot check (made
on another node, by another account, or by an older version of this package) is taken over
by age, once older than ``stale_after`` seconds. Every takeover names the holder it replaces,
so two waiters that both saw a dead one cannot both take it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import re
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import (
    Column,
    MetaData,
    String,
    Table,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.schema import CreateTable
from sqlalchemy.sql.expression import Executable

from agent_session_store.errors import MigrationError

logger = logging.getLogger("agent_session_store")

#: The lock table: one row per held lock, shared by every store in the database.
LOCK_TABLE = "agent_session_store_lock"

_LOCKS = Table(
    LOCK_TABLE,
    MetaData(),
    Column("name", String(64), primary_key=True),
    Column("holder", String(200), nullable=False),
    Column("taken_at", mysql.DATETIME(fsp=6), nullable=False),
    mysql_engine="InnoDB",
)
_CREATE = CreateTable(_LOCKS, if_not_exists=True)
_NOW = func.utc_timestamp(6)
_NAMED = _LOCKS.c.name == bindparam("lock_name")
_TAKE = insert(_LOCKS).values(
    name=bindparam("lock_name"), holder=bindparam("lock_holder"), taken_at=_NOW
)
_SEEN = _LOCKS.c.holder == bindparam("seen_holder")
_REPLACE = update(_LOCKS).values(holder=bindparam("lock_holder"), taken_at=_NOW)
#: Take over the row of a holder whose connection is gone (checked before).
_TAKE_OVER_DEAD = _REPLACE.where(_NAMED, _SEEN)
#: Take over the row of a holder that cannot be checked, once it is ``stale`` seconds old.
_TAKE_OVER_STALE = _REPLACE.where(
    _NAMED, _SEEN, _LOCKS.c.taken_at < func.date_sub(_NOW, text("INTERVAL :stale SECOND"))
)
_HOLDER = select(_LOCKS.c.holder, _LOCKS.c.taken_at).where(_NAMED)
_RELEASE = delete(_LOCKS).where(_NAMED, _LOCKS.c.holder == bindparam("lock_holder"))
_WHO = text("SELECT CONNECTION_ID(), @@hostname, @@port, CURRENT_USER()")
_CONNECTED = text("SELECT COUNT(*) FROM information_schema.PROCESSLIST WHERE ID = :id")
#: The end of a holder string: `` conn <digest of node and account>/<CONNECTION_ID()>``.
_CONNECTION = re.compile(r" conn (?P<where>[0-9a-f]{12})/(?P<id>[0-9]+)$")


def is_galera(connection: Connection) -> bool:
    """True when the server replicates with Galera (``wsrep_on``)."""
    row = connection.execute(text("SHOW VARIABLES LIKE 'wsrep_on'")).first()
    connection.commit()
    return row is not None and str(row[1]).upper() == "ON"


@contextmanager
def cluster_lock(
    connection: Connection, name: str, *, timeout: float, stale_after: float
) -> Iterator[None]:
    """Hold the cluster-wide lock ``name`` while the block runs.

    Waits up to ``timeout`` seconds for another holder to release it; a holder whose
    connection is gone is taken over at once, one that cannot be checked after ``stale_after``
    seconds (see the module's docstring). While held, the connection reads causally
    (``wsrep_sync_wait``): it sees every write the cluster committed before, whichever node
    made it. No transaction is left open.
    """
    connection_id, where = _who(connection)
    host = socket.gethostname()[:100]
    holder = f"{host}:{os.getpid()}:{uuid.uuid4().hex[:12]} conn {where}/{connection_id}"
    params = {"lock_name": name, "lock_holder": holder, "stale": int(stale_after)}
    connection.execute(_CREATE)
    connection.commit()
    deadline = time.monotonic() + timeout
    pause = 0.05
    while not _try_take(connection, params, where, connection_id):
        if time.monotonic() > deadline:
            found = connection.execute(_HOLDER, params).first()
            connection.rollback()
            owner = f"{found[0]} since {found[1]} UTC" if found else "a process that just left"
            raise MigrationError(
                f"the cluster-wide migration lock {name!r} is held by {owner}; waited "
                f"{timeout:.0f}s. Check that no upgrade is stuck (a holder whose connection "
                f"is gone is taken over at once when seen from its node, any other after "
                f"{stale_after:.0f}s), then run the upgrade again"
            )
        time.sleep(random.uniform(pause / 2, pause))
        pause = min(pause * 2, 1.0)
    saved = connection.execute(text("SELECT @@SESSION.wsrep_sync_wait")).scalar()
    connection.execute(text("SET SESSION wsrep_sync_wait = 1"))
    connection.commit()
    try:
        yield
    finally:
        _roll_back(connection)
        connection.execute(text("SET SESSION wsrep_sync_wait = :saved"), {"saved": saved})
        connection.commit()
        _release(connection, params)


def _who(connection: Connection) -> tuple[int, str]:
    """This connection's id, and a digest of the node and account it is on.

    Connection ids are per server, and a user without ``PROCESS`` sees only their own
    account's connections: a waiter may judge a holder by its id only when both digests match.
    """
    row = connection.execute(_WHO).one()
    connection.commit()
    where = hashlib.sha256(f"{row[1]}:{row[2]}:{row[3]}".encode()).hexdigest()[:12]
    return int(row[0]), where


def _release(connection: Connection, params: dict[str, object]) -> None:
    """Delete our lock row; a certification conflict aborts the DELETE, so try it again."""
    for attempt in range(10):
        try:
            connection.execute(_RELEASE, params)
            connection.commit()
            return
        except DBAPIError:
            _roll_back(connection)
            if attempt == 9:
                raise
            time.sleep(0.05 * (attempt + 1))


def _try_take(
    connection: Connection, params: dict[str, object], where: str, own_id: int
) -> bool:
    """Insert the lock row, or take over a dead or stale holder's; False while one holds it."""
    if _run(connection, _TAKE, params):
        return True
    found = connection.execute(_HOLDER, params).first()
    connection.rollback()
    if found is None:  # released in between: insert again at once
        return _run(connection, _TAKE, params)
    seen = {**params, "seen_holder": found[0]}
    alive = _holder_connected(connection, found[0], where, own_id)
    if alive is False and _run(connection, _TAKE_OVER_DEAD, seen):
        logger.warning(
            "took over the migration lock %r from %s, whose connection is gone",
            params["lock_name"],
            found[0],
        )
        return True
    if alive is None and _run(connection, _TAKE_OVER_STALE, seen):
        logger.warning(
            "took over the migration lock %r from %s, held since %s UTC",
            params["lock_name"],
            found[0],
            found[1],
        )
        return True
    return False


def _holder_connected(
    connection: Connection, holder: str, where: str, own_id: int
) -> bool | None:
    """Whether ``holder``'s connection is still open; None when this connection cannot tell.

    An id equal to our own is a dead holder's (the server reuses ids after a restart): this
    connection holds nothing yet.
    """
    match = _CONNECTION.search(holder)
    if match is None or match["where"] != where:
        return None
    if int(match["id"]) == own_id:
        return False
    count = connection.execute(_CONNECTED, {"id": int(match["id"])}).scalar()
    connection.rollback()
    return bool(count)


def _run(connection: Connection, statement: Executable, params: dict[str, object]) -> bool:
    """Run and commit one write of the lock row; True when it wrote a row."""
    try:
        result = connection.execute(statement, params)
        connection.commit()
    except DBAPIError:
        # A duplicate key (held), or a certification conflict with a concurrent taker.
        _roll_back(connection)
        return False
    return bool(result.rowcount == 1)


def _roll_back(connection: Connection) -> None:
    """Roll back after a failed take: Galera may report the aborted one again, on ROLLBACK."""
    try:
        connection.rollback()
    except DBAPIError:
        connection.rollback()
