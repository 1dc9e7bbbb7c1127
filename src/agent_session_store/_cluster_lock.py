"""A migration lock that a whole MariaDB Galera Cluster agrees on: a row in a table.

``GET_LOCK`` holds only on the node it ran on, so two processes upgrading through two nodes
would both get it. A row is replicated: the lock is taken by inserting the lock's row, and
Galera's certification lets exactly one of two concurrent inserts of one key commit (the
other fails with a deadlock error at COMMIT). The row names its holder and when it was taken,
so a holder that died (the row outlives it) is taken over once the row is older than
``stale_after`` seconds; releasing deletes the row only if this holder still owns it.
"""

from __future__ import annotations

import logging
import os
import random
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
_TAKE_OVER = (
    update(_LOCKS)
    .where(_NAMED, _LOCKS.c.taken_at < func.date_sub(_NOW, text("INTERVAL :stale SECOND")))
    .values(holder=bindparam("lock_holder"), taken_at=_NOW)
)
_HOLDER = select(_LOCKS.c.holder, _LOCKS.c.taken_at).where(_NAMED)
_RELEASE = delete(_LOCKS).where(_NAMED, _LOCKS.c.holder == bindparam("lock_holder"))


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

    Waits up to ``timeout`` seconds for another holder to release it. While held, the
    connection reads causally (``wsrep_sync_wait``): it sees every write the cluster
    committed before, whichever node made it. No transaction is left open.
    """
    holder = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"[:200]
    params = {"lock_name": name, "lock_holder": holder, "stale": int(stale_after)}
    connection.execute(_CREATE)
    connection.commit()
    deadline = time.monotonic() + timeout
    pause = 0.05
    while not _try_take(connection, params):
        if time.monotonic() > deadline:
            found = connection.execute(_HOLDER, params).first()
            connection.rollback()
            owner = f"{found[0]} since {found[1]} UTC" if found else "a process that just left"
            raise MigrationError(
                f"the cluster-wide migration lock {name!r} is held by {owner}; waited "
                f"{timeout:.0f}s. Check that no upgrade is stuck (a dead holder's lock is taken "
                f"over after {stale_after:.0f}s), then run the upgrade again"
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


def _try_take(connection: Connection, params: dict[str, object]) -> bool:
    """Insert the lock row, or take over a stale one; False when another holder has it."""
    for statement in (_TAKE, _TAKE_OVER):
        try:
            result = connection.execute(statement, params)
            connection.commit()
        except DBAPIError:
            # A duplicate key (held), or a certification conflict with a concurrent taker.
            _roll_back(connection)
            continue
        if statement is _TAKE or result.rowcount == 1:
            if statement is _TAKE_OVER:
                logger.warning("took over the stale migration lock %r", params["lock_name"])
            return True
    return False


def _roll_back(connection: Connection) -> None:
    """Roll back after a failed take: Galera may report the aborted one again, on ROLLBACK."""
    try:
        connection.rollback()
    except DBAPIError:
        connection.rollback()
