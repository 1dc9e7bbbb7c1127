"""Listing sessions: a page of 50 at 1,000 and 100,000 sessions, ours against the raw query.

    python -m benchmarks.listing --db sqlite,postgresql,mariadb [--smoke]

Sessions are bulk-inserted (10 per user, so 100,000 sessions have 10,000 users) into two
pairs of tables, one per size, then ANALYZEd (PostgreSQL: VACUUM ANALYZE, as autovacuum
would). Each round times a batch of 10 calls on each size, in alternating order: the first
page of everyone's sessions, the first page of one (random) user's, and a page 20 pages deep
through cursors, and the raw SELECT of the first two. Flatness is the median over rounds of
the large/small ratio of the same round. Goal (issue 11): 100,000 sessions within 1.5x of
1,000; ours/raw is reported (ours builds the statement and turns each row into a record with
aware datetimes, raw returns driver rows).
``--smoke`` uses 200 and 2,000 sessions and a few rounds, to check the code runs.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from agent_session_store import SessionStore

NAMES = {"sessions_table": "bench_list_sessions", "messages_table": "bench_list_messages"}
#: The small size lives in its own tables, so both sizes are timed in the same rounds.
SMALL_NAMES = {"sessions_table": "bench_list1k_sessions", "messages_table": "bench_list1k_messages"}
PER_USER = 10
URL_ENVS = {
    "postgresql": "AGENT_SESSION_STORE_TEST_POSTGRES_URL",
    "mariadb": "AGENT_SESSION_STORE_TEST_MARIADB_URL",
}
START = datetime(2026, 1, 1, tzinfo=timezone.utc)
TARGET = 1.5

#: The listing's first page as a person would write it by hand, per dialect.
RAW = {
    "postgresql": (
        "SELECT s.session_id, s.user_id, s.title, s.metadata, s.created_at, s.updated_at, "
        "s.expires_at, (SELECT count(m.id) FROM {m} m "
        "WHERE m.session_id = s.session_id) FROM {s} s "
        "WHERE {user} (s.expires_at IS NULL OR s.expires_at > now()) "
        "ORDER BY s.updated_at DESC, s.session_id DESC LIMIT 51"
    ),
    "mariadb": (
        "SELECT s.session_id, s.user_id, s.title, s.metadata, s.created_at, s.updated_at, "
        "s.expires_at, (SELECT count(m.id) FROM {m} m "
        "WHERE m.session_id = s.session_id) FROM {s} s FORCE INDEX ({index}) "
        "WHERE {user} (s.expires_at IS NULL OR s.expires_at > UTC_TIMESTAMP(6)) "
        "ORDER BY s.updated_at DESC, s.session_id DESC LIMIT 51"
    ),
    "sqlite": (
        "SELECT s.session_id, s.user_id, s.title, s.metadata, s.created_at, s.updated_at, "
        "s.expires_at, (SELECT count(m.id) FROM {m} m "
        "WHERE m.session_id = s.session_id) FROM {s} s "
        "WHERE {user} (s.expires_at IS NULL OR s.expires_at > "
        "strftime('%Y-%m-%d %H:%M:%f000', 'now')) "
        "ORDER BY s.updated_at DESC, s.session_id DESC LIMIT 51"
    ),
}


async def grow(store: SessionStore, have: int, want: int) -> None:
    """Bulk-insert sessions ``have`` .. ``want`` - 1, one item each in every tenth session."""
    s, m = store.sessions, store.messages
    for first in range(have, want, 5_000):
        ids = range(first, min(want, first + 5_000))
        rows = [
            {
                "session_id": f"s{i:07d}",
                "user_id": f"u{i // PER_USER:06d}",
                "title": f"chat {i}",
                "updated_at": START + timedelta(seconds=i),
            }
            for i in ids
        ]
        items = [{"session_id": f"s{i:07d}", "message_data": '{"n":1}'} for i in ids if i % 10 == 0]
        async with store.engine.begin() as conn:
            await conn.execute(s.insert(), rows)
            if items:
                await conn.execute(m.insert(), items)
    # Statistics and (PostgreSQL) the visibility map of both tables, as autovacuum leaves
    # them after a bulk load: without, the item counts read the heap of every new row.
    dialect = store.engine.dialect.name
    async with store.engine.connect() as conn:
        auto = await conn.execution_options(isolation_level="AUTOCOMMIT")
        for table in (store.sessions_table, store.messages_table):
            if dialect in ("mysql", "mariadb"):
                await auto.execute(text(f"ANALYZE TABLE {table}"))
            elif dialect == "postgresql":
                await auto.execute(text(f"VACUUM ANALYZE {table}"))
            else:
                await auto.execute(text(f"ANALYZE {table}"))


async def batch(call: Callable[[], Awaitable[Any]], calls: int) -> float:
    """Milliseconds per call, over ``calls`` calls."""
    start = time.perf_counter()
    for _ in range(calls):
        await call()
    return (time.perf_counter() - start) * 1000 / calls


def calls_of(store: SessionStore, db: str, users: int) -> dict[str, Callable[[], Awaitable[Any]]]:
    """The timed calls on one store's tables: ours and the raw query."""
    records = store.records
    engine: AsyncEngine = store.engine
    rng = random.Random(7)
    tables = {"s": store.sessions_table, "m": store.messages_table}

    async def raw(user: str | None) -> None:
        where = "" if user is None else "s.user_id = :user AND"
        index = f"ix_{store.sessions_table}_" + ("updated" if user is None else "user_updated")
        sql = RAW[db].format(user=where, index=index, **tables)
        async with engine.connect() as conn:
            (await conn.execute(text(sql), {"user": user})).all()

    async def deep() -> None:
        cursor = None
        for _ in range(20):
            cursor = (await records.list_sessions(cursor=cursor)).next_cursor

    def some_user() -> str:
        return f"u{rng.randrange(users):06d}"

    return {
        "global": lambda: records.list_sessions(),
        "global_raw": lambda: raw(None),
        "user": lambda: records.list_sessions(user_id=some_user()),
        "user_raw": lambda: raw(some_user()),
        "page_20": deep,
    }


async def bench(db: str, url: str, sizes: tuple[int, int], rounds: int) -> list[str]:
    """Both sizes in their own tables, timed in alternating order within each round.

    Timing one size after the other (as this benchmark first did) compared two moments of a
    shared machine: under a load average of 7 the medians drifted by 2x between the phases,
    while the database's own time for a page (EXPLAIN ANALYZE) was 0.1 ms at either size.
    The ratio of each round is taken, then the median of those ratios.
    """
    small_store = SessionStore(url, **SMALL_NAMES)
    large_store = SessionStore(url, **NAMES)
    try:
        stores = {sizes[0]: small_store, sizes[1]: large_store}
        calls = {}
        for size, store in stores.items():
            async with store.engine.begin() as conn:
                await conn.run_sync(store.metadata.drop_all)
            await store.create_tables()
            await grow(store, 0, size)
            calls[size] = calls_of(store, db, size // PER_USER)
        per_batch = 10
        times: dict[int, dict[str, list[float]]] = {size: {} for size in sizes}
        ratios: dict[str, list[float]] = {}
        for key in calls[sizes[0]]:
            for size in sizes:
                await calls[size][key]()  # warm: statement caches, pool connections
            for rnd in range(rounds):
                order = sizes if rnd % 2 == 0 else sizes[::-1]
                got = {size: await batch(calls[size][key], per_batch) for size in order}
                for size in sizes:
                    times[size].setdefault(key, []).append(got[size])
                ratios.setdefault(key, []).append(got[sizes[1]] / got[sizes[0]])
        for store in stores.values():
            async with store.engine.begin() as conn:
                await conn.run_sync(store.metadata.drop_all)
    finally:
        await small_store.close()
        await large_store.close()
    small = {key: statistics.median(v) for key, v in times[sizes[0]].items()}
    large = {key: statistics.median(v) for key, v in times[sizes[1]].items()}
    small["page_20"] /= 20
    large["page_20"] /= 20
    lines, misses = [], []
    for key in ("global", "user", "page_20"):
        flat = statistics.median(ratios[key])
        line = f"{db:10} {key:8} {sizes[0]:>7}: {small[key]:6.2f} ms  {sizes[1]:>7}: "
        line += f"{large[key]:6.2f} ms  flat {flat:4.2f}x"
        if key != "page_20":
            vs_raw = large[key] / large[f"{key}_raw"]
            line += f"  raw {large[f'{key}_raw']:6.2f} ms  ours/raw {vs_raw:4.2f}x"
        misses += [f"{db} {key} flat"] if flat > TARGET else []
        lines.append(line)
    lines.append(f"{db:10} (load average {os.getloadavg()[0]:.1f})")
    print("\n".join(lines), flush=True)
    return misses


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite", help="sqlite,postgresql,mariadb")
    parser.add_argument("--smoke", action="store_true", help="small sizes, few rounds")
    args = parser.parse_args(argv)
    sizes, rounds = ((200, 2_000), 3) if args.smoke else ((1_000, 100_000), 15)
    misses: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        for db in args.db.split(","):
            if db == "sqlite":
                url = f"sqlite+aiosqlite:///{Path(tmp) / 'listing.db'}"
            else:
                url = os.environ.get(URL_ENVS[db], "")
                if not url:
                    print(f"{db}: set {URL_ENVS[db]}", file=sys.stderr)
                    return 2
            misses += await bench(db, url, sizes, rounds)
    if misses and not args.smoke:
        print("missed (goal 1.5x): " + ", ".join(misses))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
