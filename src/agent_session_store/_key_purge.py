"""Purging old idempotency keys: bounded deletes on the keys table, oldest first.

A key only has to outlive the retries of its batch; kept for ever, the keys table would
grow by one row per ``add_items``. Keys go with their session (``ON DELETE CASCADE``), and
:func:`purge_keys` removes the ones written before a cutoff, ``batch_size`` rows per
transaction, through the index on ``created_at``.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Table, delete, select, tuple_
from sqlalchemy.ext.asyncio import AsyncConnection

from agent_session_store._dialect import is_mysql
from agent_session_store._transport import Transport
from agent_session_store.admin import _cutoff
from agent_session_store.errors import ArgumentTypeError, InvalidArgumentError


async def purge_keys(
    transport: Transport, keys: Table, *, older_than: datetime | timedelta, batch_size: int
) -> int:
    """Delete the keys of ``keys`` created before ``older_than``; return how many went."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, int):
        raise ArgumentTypeError(f"batch_size must be an int, not {type(batch_size).__name__}")
    if batch_size < 1:
        raise InvalidArgumentError(f"batch_size must be at least 1, not {batch_size}")
    cutoff = _cutoff(older_than)
    old = keys.c.created_at < cutoff
    if is_mysql(transport.core.engine.dialect):
        # MySQL/MariaDB refuse a DELETE whose subquery reads the same table; LIMIT is theirs.
        stmt = delete(keys).where(old).with_dialect_options(mysql_limit=batch_size)
    else:
        pk = tuple_(keys.c.session_id, keys.c.idempotency_key)
        oldest = select(keys.c.session_id, keys.c.idempotency_key).where(old).limit(batch_size)
        stmt = delete(keys).where(pk.in_(oldest))

    async def one_batch(conn: AsyncConnection) -> int:
        return int((await conn.execute(stmt)).rowcount)

    total = 0
    while True:
        removed = await transport.write_core(one_batch)
        total += removed
        if removed < batch_size:
            return total
