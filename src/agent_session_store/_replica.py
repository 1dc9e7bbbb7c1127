"""Reads on a PostgreSQL streaming replica, with read-your-writes for the store's own writes.

A write costs nothing more: the store only numbers it (``Freshness.wrote``). A read of a
session this store wrote recently first needs a primary WAL position taken *after* that
write (``pg_current_wal_insert_lsn()``; one such position covers every write that ended
before it was taken, so concurrent readers share it), then the replica's replay position
(``pg_last_wal_replay_lsn()``): once the replica has replayed past it, the write is visible
there and the read goes to the replica; if it has not within ``max_wait`` seconds, the read
goes to the primary. Sessions the store did not write recently read from the replica at once.

Memory is bounded: the last ``max_tracked`` sessions written are remembered by name; a
session pushed out raises a floor that every read then waits for, once, until the replica has
replayed past it. Writes that touch many sessions (prune, import, erasure) raise the floor too.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.engine import URL, Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from agent_session_store import _dialect
from agent_session_store._engines import Binding, Bindings, owned_engine
from agent_session_store._family import is_postgresql
from agent_session_store._statements import Statement, prepare
from agent_session_store.errors import ArgumentTypeError, InvalidArgumentError

logger = logging.getLogger("agent_session_store")

T = TypeVar("T")

#: Sessions whose last write is remembered by name (a few hundred bytes each at most).
MAX_TRACKED = 10_000
#: Seconds a read waits for the replica to replay the session's last write by this store.
MAX_WAIT_S = 0.05
#: A listing or other read over every session: it owes every write of this store.
EVERY_SESSION = None

#: SQLSTATEs of a replica that cannot serve now: recovery conflict, shutdown, starting up.
_UNAVAILABLE_SQLSTATES = {"40001", "57P01", "57P02", "57P03"}


@dataclass
class ReplicaStats:
    """Where the store's routable reads went (``store.replica_stats``).

    Attributes:
        replica: Reads served by the replica.
        waited: Of those, reads that first waited for the replica to replay this store's write.
        primary_behind: Reads sent to the primary because the replica had not replayed the
            session's last write within the wait.
        primary_unavailable: Reads sent to the primary because the replica failed (down,
            not a standby, a recovery conflict).
        positions: WAL position queries sent to the primary (shared by concurrent reads).
    """

    replica: int = 0
    waited: int = 0
    primary_behind: int = 0
    primary_unavailable: int = 0
    positions: int = 0

    @property
    def reads(self) -> int:
        """Every routable read: to the replica or to the primary."""
        return self.replica + self.primary_behind + self.primary_unavailable

    @property
    def replica_fraction(self) -> float:
        """The share of reads the replica served (0.0 before any read)."""
        return self.replica / self.reads if self.reads else 0.0


class Freshness:
    """Which of this store's writes the replica must show before it may serve a read.

    Writes are numbered as they end (1, 2, ...). A primary WAL position is "observed" with
    the number of writes that had ended before it was taken; once the replica has replayed
    past it, every write up to that number is visible there (``visible``).
    """

    def __init__(self, max_tracked: int) -> None:
        self._lock = threading.Lock()  # a store may be used from several threads' loops
        self._max_tracked = max_tracked
        self._ended = 0
        self._recent: OrderedDict[str, int] = OrderedDict()
        self._floor = 0
        self._observed = (0, 0)  # (writes ended before it, primary WAL position)
        self.visible = 0

    @property
    def tracked(self) -> int:
        """How many sessions are remembered by name."""
        return len(self._recent)

    def wrote(self, session_id: str | None) -> None:
        """A write of ``session_id`` (EVERY_SESSION: of many) ended, committed or not."""
        with self._lock:
            self._ended += 1
            if session_id is EVERY_SESSION:
                self._floor = self._ended
                return
            self._recent[session_id] = self._ended
            self._recent.move_to_end(session_id)
            if len(self._recent) > self._max_tracked:
                _, forgotten = self._recent.popitem(last=False)
                self._floor = max(self._floor, forgotten)

    def owed(self, session_id: str | None) -> int:
        """The last write a read of ``session_id`` must see; 0 when the replica shows it."""
        with self._lock:
            if session_id is EVERY_SESSION:
                owed = self._ended
            else:
                owed = max(self._recent.get(session_id, 0), self._floor)
            if owed <= self.visible:
                if session_id is not EVERY_SESSION:
                    self._recent.pop(session_id, None)  # visible: no need to remember it
                return 0
            return owed

    def ended(self) -> int:
        """How many writes have ended so far."""
        with self._lock:
            return self._ended

    def observation(self, owed: int) -> tuple[int, int] | None:
        """A primary WAL position taken after write ``owed`` ended, if one was observed."""
        with self._lock:
            return self._observed if self._observed[0] >= owed else None

    def observe(self, ended: int, position: int) -> None:
        """``position`` was read from the primary after ``ended`` writes had ended."""
        with self._lock:
            if ended > self._observed[0]:
                self._observed = (ended, position)

    def replayed(self, ended: int) -> None:
        """The replica has replayed every write up to number ``ended``."""
        with self._lock:
            self.visible = max(self.visible, ended)


def unavailable(exc: BaseException) -> bool:
    """True when ``exc`` says the replica cannot serve now (so the primary should)."""
    if isinstance(exc, (OSError, asyncio.TimeoutError)):  # DatabaseConnectionError is one
        return True
    if type(exc).__module__.startswith("asyncpg"):  # a connect error SQLAlchemy let through
        return True
    if not isinstance(exc, DBAPIError):
        return False
    sqlstate = getattr(exc.orig, "sqlstate", None) or ""
    return exc.connection_invalidated or sqlstate.startswith("08") or (
        sqlstate in _UNAVAILABLE_SQLSTATES
    )


class ReplicaReads:
    """Sends reads to the replica when it shows this store's writes, else to the primary."""

    def __init__(
        self, replica: Bindings, dialect: Dialect, *, owned: bool, max_wait: float, max_tracked: int
    ) -> None:
        """``replica``: the replica's engines by loop; ``owned``: the store made them."""
        self.bindings = replica
        self.owned = owned
        self.freshness = Freshness(max_tracked)
        self.stats = ReplicaStats()
        self._max_wait = max_wait
        self._primary_position = _position(dialect, _PRIMARY_POSITION)
        self._replay_position = _position(dialect, _REPLAY_POSITION)
        self._warned = False
        self._pending: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, tuple[int, asyncio.Task[int | None]]
        ] = weakref.WeakKeyDictionary()

    def wrote(self, session_id: str | None) -> None:
        """Note a write of ``session_id`` (EVERY_SESSION for one over many sessions)."""
        self.freshness.wrote(session_id)

    async def read(
        self, session_id: str | None, call: Callable[[Binding], Awaitable[T]], primary: Binding
    ) -> T:
        """Run ``call`` on the replica if it shows this store's writes of the session."""
        replica = self.bindings.current()
        if not await self._fresh(session_id, primary, replica):
            return await call(primary)
        try:
            result = await call(replica)
        except Exception as exc:
            if not unavailable(exc):
                raise
            self._unavailable(exc)
            return await call(primary)
        self.stats.replica += 1
        return result

    async def _fresh(self, session_id: str | None, primary: Binding, replica: Binding) -> bool:
        freshness = self.freshness
        owed = freshness.owed(session_id)
        if owed == 0:
            return True
        seen = freshness.observation(owed)
        if seen is None:
            # Both positions at once, one round trip each on two servers: the replay position
            # may be read first, since it only grows.
            ended, asked = self._asking(owed, primary)
            position, replayed = await asyncio.gather(
                asyncio.shield(asked), self._replayed(replica)
            )
            seen = (ended, position or 0)
            freshness.observe(*seen)
        else:
            replayed = await self._replayed(replica)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._max_wait
        pause, waited = 0.001, False
        while True:
            if replayed is None or isinstance(replayed, BaseException):
                self._unavailable(replayed)  # None: not in recovery (a primary, or promoted)
                return False
            if replayed >= seen[1]:
                freshness.replayed(seen[0])
                self.stats.waited += waited
                return True
            if loop.time() + pause > deadline:
                self.stats.primary_behind += 1
                return False
            waited = True
            await asyncio.sleep(pause)
            pause = min(2 * pause, 0.01)
            replayed = await self._replayed(replica)

    def _asking(self, owed: int, primary: Binding) -> tuple[int, asyncio.Task[int | None]]:
        """The primary position query that covers write ``owed``: one in flight, or a new one.

        Concurrent reads of this loop share it, so a burst of reads after a burst of writes
        asks the primary once.
        """
        loop = asyncio.get_running_loop()
        pending = self._pending.get(loop)
        if pending is not None and pending[0] >= owed and not pending[1].done():
            return pending
        ended = self.freshness.ended()
        task = loop.create_task(_scalar(primary, self._primary_position))
        asked = self._pending[loop] = (ended, task)
        self.stats.positions += 1

        def forget(_task: asyncio.Task[int | None]) -> None:
            if self._pending.get(loop) is asked:
                del self._pending[loop]
            if not _task.cancelled():
                _task.exception()  # each reader re-raises it; none is left unretrieved

        task.add_done_callback(forget)
        return asked

    async def _replayed(self, replica: Binding) -> int | BaseException | None:
        """The replica's replay position; the error, if it says the replica cannot serve."""
        try:
            return await _scalar(replica, self._replay_position)
        except Exception as exc:
            if not unavailable(exc):
                raise
            return exc

    def _unavailable(self, exc: BaseException | None) -> None:
        self.stats.primary_unavailable += 1
        if not self._warned:
            self._warned = True
            why = "it is not a standby" if exc is None else f"{type(exc).__name__}: {exc}"
            logger.warning("the replica cannot serve reads (%s); reading the primary", why)


#: WAL positions as byte counts: comparable numbers, NULL where the function is NULL.
_PRIMARY_POSITION = "SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), '0/0')"
_REPLAY_POSITION = "SELECT pg_wal_lsn_diff(pg_last_wal_replay_lsn(), '0/0')"


def replica_engine(
    primary: AsyncEngine, replica: AsyncEngine | str | URL, kwargs: dict[str, Any] | None
) -> AsyncEngine:
    """The replica's engine: made from a URL with the primary's ``kwargs``, or the host's.

    ``kwargs`` is None when the primary engine is the host's: the replica must be one too
    (a store owns both of its engines or neither).

    Raises:
        InvalidArgumentError: the primary is not PostgreSQL, or the replica is another database.
        ArgumentTypeError: an engine where a URL is needed, or the other way round.
    """
    if not is_postgresql(primary.dialect):
        raise InvalidArgumentError(
            f"replica= is for PostgreSQL streaming replicas; this store is on "
            f"{primary.dialect.name}, where the store cannot tell whether a replica shows its "
            "writes (on MariaDB that needs each write's GTID and MASTER_GTID_WAIT, not built "
            "yet): leave replica out, and every read goes to the primary"
        )
    if isinstance(replica, AsyncEngine):
        if kwargs is not None:
            raise ArgumentTypeError(
                "the store was given a URL for its primary, so give the replica as a URL too "
                "(the store makes and closes both engines); or give both as AsyncEngines"
            )
        engine = replica
    else:
        if kwargs is None:
            raise ArgumentTypeError(
                "the store was given an AsyncEngine for its primary, so give the replica as an "
                "AsyncEngine too (yours to close); or give both as URLs"
            )
        url = _dialect.async_url(replica)
        _check_postgresql(url.get_dialect(_is_async=True))
        return owned_engine(url, kwargs)
    _check_postgresql(type(engine.dialect))
    return engine


def _check_postgresql(dialect: type[Dialect]) -> None:
    if not is_postgresql(dialect):
        raise InvalidArgumentError(
            f"the replica must be a PostgreSQL standby of the primary, not {dialect.name}"
        )


def _position(dialect: Dialect, sql: str) -> Statement:
    return prepare(text(sql), dialect)


async def _scalar(binding: Binding, stmt: Statement) -> int | None:
    rows = await binding.transport.read(lambda run: run.rows(stmt, {}))
    value = rows[0][0]
    return None if value is None else int(value)
