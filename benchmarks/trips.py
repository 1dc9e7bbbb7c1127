"""Why the floor is faster: driver calls per operation, and the cost of one call each way.

    python -m benchmarks.trips --db sqlite,postgresql,mariadb

Counts, per Session operation, the requests each implementation makes of its driver: thread
hops into aiosqlite's worker (each a queue put and an event-loop wake-up), or socket writes to
PostgreSQL/MariaDB (each one round trip for these request-response protocols). Then times one
tail-read statement on one connection through SQLAlchemy's ``AsyncConnection.execute`` and
through the raw driver, the per-statement cost that the counts multiply.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from asyncio import selector_events
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import aiosqlite.core

from benchmarks.items import items, turn
from benchmarks.run import URL_ENVS, implementations

Op = Callable[[Any], Awaitable[Any]]
OPS: list[tuple[str, Op]] = [
    ("add_items(1 item)", lambda s: s.add_items(items(1))),
    ("add_items(6 items)", lambda s: s.add_items(turn())),
    ("get_items(limit=20)", lambda s: s.get_items(limit=20)),
    ("get_items() of 60 items", lambda s: s.get_items()),
    ("pop_item()", lambda s: s.pop_item()),
]


@contextmanager
def counting(db: str) -> Iterator[list[int]]:
    """Count aiosqlite thread hops (SQLite) or socket writes (servers) inside the block."""
    count = [0]
    if db == "sqlite":
        cls: Any = aiosqlite.core.Connection
        name = "_execute"
    else:
        cls = selector_events._SelectorSocketTransport
        name = "write"
    original = getattr(cls, name)

    def counted(self: Any, *args: Any, **kwargs: Any) -> Any:
        count[0] += 1
        return original(self, *args, **kwargs)

    setattr(cls, name, counted)
    try:
        yield count
    finally:
        setattr(cls, name, original)


async def count_calls(db: str, url: str | None) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        async with implementations(db, url, Path(tmp)) as impls:
            for impl in impls:
                session = impl.session(f"trips-{impl.name}")
                for _ in range(10):
                    await session.add_items(turn())
                for label, op in OPS:
                    await op(session)  # warm: prepared statements, pool connections
                    with counting(db) as count:
                        for _ in range(10):
                            await op(session)
                    table.setdefault(label, {})[impl.name] = count[0] / 10
    return table


async def statement_cost(db: str, url: str | None) -> tuple[float, float]:
    """Microseconds per tail-read statement: through SQLAlchemy, and raw, on one connection."""
    from agent_session_store import SessionStore

    with tempfile.TemporaryDirectory() as tmp:
        store = SessionStore(url or f"sqlite+aiosqlite:///{tmp}/cost.db")
        try:
            await store.create_tables()
            await store.session("cost").add_items(items(60))
            # The store's own tail read: its Core statement, and the SQL it compiled once.
            tail = store._statements.select_tail
            assert tail.sql is not None
            sql, args = tail.sql, tail.args({"sid": "cost", "lim": 20})
            async with store.engine.connect() as conn:
                raw = (await conn.get_raw_connection()).driver_connection

                async def through_sqlalchemy() -> None:
                    (await conn.execute(tail.core, {"sid": "cost", "lim": 20})).all()

                async def through_driver() -> None:
                    if db == "postgresql":
                        await raw.fetch(sql, *args)
                    elif db == "sqlite":
                        await raw.execute_fetchall(sql, args)
                    else:
                        async with raw.cursor() as cur:
                            await cur.execute(sql, args)
                            await cur.fetchall()

                times: dict[str, list[float]] = {"sa": [], "raw": []}
                for _ in range(7):
                    for key, fn in (("sa", through_sqlalchemy), ("raw", through_driver)):
                        start = time.perf_counter()
                        for _ in range(200):
                            await fn()
                        times[key].append((time.perf_counter() - start) / 200 * 1e6)
                return statistics.median(times["sa"]), statistics.median(times["raw"])
        finally:
            async with store.engine.begin() as conn:
                await conn.run_sync(store.metadata.drop_all)
            await store.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="sqlite")
    args = parser.parse_args()
    for db in args.db.split(","):
        url = (
            None if db == "sqlite" else next(os.environ[e] for e in URL_ENVS[db] if e in os.environ)
        )
        unit = "thread hops" if db == "sqlite" else "socket writes (round trips)"
        table = await count_calls(db, url)
        print(f"\n### {db}: {unit} per operation\n")
        print("| operation | ours | SDK | floor |\n|---|---:|---:|---:|")
        for label, row in table.items():
            print(f"| {label} | {row['ours']:g} | {row['sdk']:g} | {row['floor']:g} |")
        sa, raw = await statement_cost(db, url)
        print(
            f"\none tail-read statement on a held connection: {sa:.0f} us through SQLAlchemy's "
            f"AsyncConnection.execute, {raw:.0f} us through the raw driver ({sa / raw:.1f}x)"
        )


if __name__ == "__main__":
    asyncio.run(main())
