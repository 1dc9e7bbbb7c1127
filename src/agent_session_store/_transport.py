"""The policy around every operation: which executor, retries, cancellation, one writer.

:class:`Transport` is the one funnel between the store's operations and the executors. It
picks the executor (the probe's decision, per call), runs writes again only after errors
that mean the server rolled the transaction back (``_retry.RetryPolicy``, until a deadline),
and makes a cancelled write all-or-nothing.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import random
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager, nullcontext
from functools import partial
from typing import Any, TypeVar

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from agent_session_store import _dialect, _internals
from agent_session_store._executor import (
    CoreExecutor,
    CoreRunner,
    DriverExecutor,
    Executor,
    LoopLocks,
    Operation,
    Runner,
)
from agent_session_store._probe import Path, Probe
from agent_session_store._retry import RetryPolicy
from agent_session_store.errors import CommitOutcomeUnknownError, DatabaseConnectionError

logger = logging.getLogger("agent_session_store")

T = TypeVar("T")
#: Attempts of the store's own DDL (``create_tables``), which races other processes.
MAX_ATTEMPTS = 8
_UNLOCKED: AbstractAsyncContextManager[None] = nullcontext()


class WriteShape(enum.Enum):
    """How many statements a write sends.

    Where a lone statement commits by itself (asyncpg), only one-statement writes run on the
    driver executor.
    """

    ONE_STATEMENT = "one statement"
    SEVERAL_STATEMENTS = "several statements"


class Transport:
    """Runs the store's operations on the executor the probe allows, with its retry rules."""

    def __init__(
        self,
        core: CoreExecutor,
        driver: DriverExecutor | None,
        probe: Probe,
        *,
        one_writer: bool,
        retry: RetryPolicy | None = None,
        lost_retries: int = 1,
        waits_for_primary: bool = False,
    ) -> None:
        """``one_writer``: writers of this process queue on an asyncio lock (SQLite).

        ``retry``: which rolled-back writes run again and until when; ``lost_retries``: how
        many connections lost before COMMIT one write may run again after (one per host).
        ``waits_for_primary``: a failed connect may be a failover (several hosts), so it is
        tried again until the retry deadline.
        """
        self.retry = retry or RetryPolicy()
        self.lost_retries = lost_retries
        self.core = core
        self._waits_for_primary = waits_for_primary
        self._driver = driver
        self.probe = probe
        self._one_writer = one_writer
        self._writer_locks = LoopLocks()

    async def path(self) -> Path:
        """The executor for an operation starting now (the first call looks at a connection)."""
        driver = self._driver
        if driver is None or self.probe.path() is Path.CORE:
            return Path.CORE
        if not self.probe.connection_checked and not await driver.first_connection_allows():
            return Path.CORE
        return Path.DRIVER

    async def _executor(self, shape: WriteShape | None = None) -> Executor:
        driver = self._driver
        if driver is None or await self.path() is Path.CORE:
            return self.core
        if shape is WriteShape.SEVERAL_STATEMENTS and driver.driver.lone_statement_commits:
            return self.core  # BEGIN ... COMMIT around several statements: SQLAlchemy's
        return driver

    async def read(self, operation: Operation[T], *, cursor: bool = False) -> T:
        """Run a read; a connection the server dropped earns it one more try.

        ``cursor``: the read goes through a server-side cursor (``Runner.pages``).
        """
        wait = _PrimaryWait(self.retry.deadline_s)
        while True:
            try:
                return await self._read_once(operation, cursor)
            except DatabaseConnectionError:
                if not self._waits_for_primary or not await wait.pause():
                    raise

    async def _read_once(self, operation: Operation[T], cursor: bool) -> T:
        try:
            return await (await self._executor()).read(operation, cursor=cursor)
        except DBAPIError as exc:
            if not exc.connection_invalidated:
                raise
            return await (await self._executor()).read(operation, cursor=cursor)

    async def write(self, operation: Operation[T], shape: WriteShape) -> T:
        """Run ``operation`` in one transaction, retrying server-side rollbacks; all or nothing.

        A connection lost before anything could have been committed means nothing was
        written, so the operation runs once more on a fresh connection; one lost after
        (during COMMIT, or during a statement that commits by itself) raises
        ``CommitOutcomeUnknownError`` instead of risking a second copy.

        A cancelled write has settled when the caller sees ``CancelledError``: what is stored
        then stays so. On the driver executor of aiosqlite and asyncpg the write stops where
        it is and waits for the server to finish with what was sent (rolled back, or
        committed if its COMMIT or single statement got there first). Elsewhere (aiomysql,
        whose protocol a cancellation breaks; Core, which cannot be left mid-transaction)
        the write runs to its end in its own task.
        """
        executor = await self._first_connect(shape)
        if executor.settles_cancelled:
            return await self._retrying(operation, executor)
        return await settle(self._retrying(operation, executor))

    async def _first_connect(self, shape: WriteShape) -> Executor:
        # The first call looks at a connection (the probe): during a failover, wait there too.
        wait = _PrimaryWait(self.retry.deadline_s)
        while True:
            try:
                return await self._executor(shape)
            except DatabaseConnectionError:
                if not self._waits_for_primary or not await wait.pause():
                    raise

    async def write_core(self, operation: Callable[[AsyncConnection], Awaitable[T]]) -> T:
        """:meth:`write` for an operation on SQLAlchemy's ``AsyncConnection`` (admin)."""

        async def on_core(runner: Runner) -> T:
            assert isinstance(runner, CoreRunner)
            return await operation(runner.conn)

        return await settle(self._retrying(on_core, self.core))

    def _writer(self) -> AbstractAsyncContextManager[Any]:
        if not self._one_writer:
            return _UNLOCKED
        return self._writer_locks.get()

    async def _retrying(self, operation: Operation[T], executor: Executor) -> T:
        wait = _PrimaryWait(self.retry.deadline_s)
        clock = self.retry.start()
        losses = 0
        while True:
            used: list[Runner] = []
            try:
                async with self._writer():
                    return await executor.write(partial(_recording, used, operation))
            except DatabaseConnectionError:
                # Nothing was sent. On several hosts, none may be the primary yet.
                if not self._waits_for_primary or not await wait.pause():
                    raise
                continue
            except DBAPIError as exc:
                if used and used[0].committing and exc.connection_invalidated:
                    raise CommitOutcomeUnknownError(
                        "the database connection was lost while committing; the write may or "
                        "may not have been saved, so it was not retried: read the session "
                        f"before writing again ({type(exc.orig).__name__}: {exc.orig})"
                    ) from exc
                if _dialect.is_read_only_server(exc):
                    # A standby refused it: the next connections may reach the new primary.
                    _internals.invalidate_pool(self.core.engine.sync_engine.pool)
                    if not await wait.pause():
                        raise
                    continue
                # A connection lost before COMMIT was sent took its transaction with it; one
                # retry on a fresh connection per host the store can reach, since a
                # statement that kills it would again.
                if exc.connection_invalidated:
                    losses += 1
                    if losses > self.lost_retries:
                        raise
                    kind = "connection lost before commit"
                else:
                    found = self.retry.kind_of(exc)
                    if found is None:
                        raise
                    kind = found.name
                sleep = clock.next_sleep(kind)
                if sleep is None:
                    raise
                logger.debug("retrying a rolled-back transaction (%s): %s", kind, exc.orig)
                if not exc.connection_invalidated:
                    await asyncio.sleep(sleep)


class _PrimaryWait:
    """Pauses while a failover runs: capped backoff with jitter, until a deadline."""

    def __init__(self, seconds: float) -> None:
        self._seconds = seconds
        self._deadline: float | None = None
        self._pauses = 0

    async def pause(self) -> bool:
        """Sleep before the next try; False once the deadline (from the first pause) passed."""
        now = asyncio.get_running_loop().time()
        if self._deadline is None:
            self._deadline = now + self._seconds
        if now >= self._deadline:
            return False
        delay = min(0.25, 0.005 * 2**self._pauses) * random.uniform(0.5, 1.0)
        self._pauses += 1
        await asyncio.sleep(min(delay, self._deadline - now))
        return True


async def _recording(used: list[Runner], operation: Operation[T], runner: Runner) -> T:
    """Run ``operation`` on ``runner``, noting the runner so the caller can see how far it got."""
    used.append(runner)
    return await operation(runner)


async def settle(operation: Awaitable[T]) -> T:
    """Await ``operation`` to its end even if the caller is cancelled, then re-raise that.

    A write interrupted half-way would leave its connection mid-transaction; letting it
    finish makes every call all-or-nothing, as the SDK's own sessions do.
    """
    task = asyncio.ensure_future(operation)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        while not task.done():
            try:
                await asyncio.wait([task])
            except asyncio.CancelledError:
                continue
        if not task.cancelled():
            task.exception()  # mark retrieved; the caller's cancellation wins
        raise
