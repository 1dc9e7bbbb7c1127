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

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError

from agent_session_store.errors import MigrationError

logger = logging.getLogger("agent_session_store")

#: The lock table: one row per held lock, shared by every store in the database.
LOCK_TABLE = "agent_session_store_lock"

_CREATE = text(
    f"CREATE TABLE IF NOT EXISTS {LOCK_TABLE} ("
    "name VARCHAR(64) NOT NULL PRIMARY KEY, "
    "holder VARCHAR(200) NOT NULL, "
    "taken_at DATETIME(6) NOT NULL"
    ") ENGINE=InnoDB"
)
_TAKE = text(
    f"INSERT INTO {LOCK_TABLE} (name, holder, taken_at) VALUES (:name, :holder, UTC_TIMESTAMP(6))"
)
_TAKE_OVER = text(
    f"UPDATE {LOCK_TABLE} SET holder = :holder, taken_at = UTC_TIMESTAMP(6) "
    "WHERE name = :name AND taken_at < UTC_TIMESTAMP(6) - INTERVAL :stale SECOND"
)
_HOLDER = text(f"SELECT holder, taken_at FROM {LOCK_TABLE} WHERE name = :name")
_RELEASE = text(f"DELETE FROM {LOCK_TABLE} WHERE name = :name AND holder = :holder")


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
    params = {"name": name, "holder": holder, "stale": int(stale_after)}
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
        connection.rollback()
        connection.execute(text("SET SESSION wsrep_sync_wait = :saved"), {"saved": saved})
        connection.execute(_RELEASE, params)
        connection.commit()


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
                logger.warning("took over the stale migration lock %r", params["name"])
            return True
    return False


def _roll_back(connection: Connection) -> None:
    """Roll back after a failed take: Galera may report the aborted one again, on ROLLBACK."""
    try:
        connection.rollback()
    except DBAPIError:
        connection.rollback()
