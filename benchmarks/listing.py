"""Listing sessions: a page of 50 at 1,000 and 100,000 sessions, ours against the raw query.

    python -m benchmarks.listing --db sqlite,postgresql,mariadb [--smoke]

Sessions are bulk-inserted (10 per user, so 100,000 sessions have 10,000 users), with
statistics gathered after each size. Per size and database it times, median of rounds: the
first page of everyone's sessions, the first page of one user's, and a page 20 pages deep
through cursors; each against the same SELECT written as raw SQL and run on the same engine.
Goal (issue 11): 100,000 sessions within 1.5x of 1,000; ours/raw is reported (ours builds the
statement and turns each row into a record with aware datetimes, raw returns driver rows).
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
from agent_session_store.records import SessionRecords

NAMES = {"sessions_table": "bench_list_sessions", "messages_table": "bench_list_messages"}
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
        "s.expires_at, (SELECT count(m.id) FROM bench_list_messages m "
        "WHERE m.session_id = s.session_id) FROM bench_list_sessions s "
        "WHERE {user} (s.expires_at IS NULL OR s.expires_at > now()) "
        "ORDER BY s.updated_at DESC, s.session_id DESC LIMIT 51"
    ),
    "mariadb": (
        "SELECT s.session_id, s.user_id, s.title, s.metadata, s.created_at, s.updated_at, "
        "s.expires_at, (SELECT count(m.id) FROM bench_list_messages m "
        "WHERE m.session_id = s.session_id) FROM bench_list_sessions s FORCE INDEX ({index}) "
        "WHERE {user} (s.expires_at IS NULL OR s.expires_at > UTC_TIMESTAMP(6)) "
        "ORDER BY s.updated_at DESC, s.session_id DESC LIMIT 51"
    ),
    "sqlite": (
        "SELECT s.session_id, s.user_id, s.title, s.metadata, s.created_at, s.updated_at, "
        "s.expires_at, (SELECT count(m.id) FROM bench_list_messages m "
        "WHERE m.session_id = s.session_id) FROM bench_list_sessions s "
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
    async with store.engine.begin() as conn:
        dialect = store.engine.dialect.name
        analyze = "ANALYZE TABLE" if dialect in ("mysql", "mariadb") else "ANALYZE"
        await conn.execute(text(f"{analyze} {NAMES['sessions_table']}"))


async def timed(call: Callable[[], Awaitable[Any]], rounds: int) -> float:
    """Median milliseconds of ``rounds`` calls, after one warm-up call."""
    await call()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        await call()
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


async def measure(store: SessionStore, db: str, users: int, rounds: int) -> dict[str, float]:
    records = SessionRecords(store.engine, store.sessions, store.messages)
    engine: AsyncEngine = store.engine
    rng = random.Random(7)

    async def raw(user: str | None) -> None:
        where = "" if user is None else "s.user_id = :user AND"
        index = "ix_bench_list_sessions_" + ("updated" if user is None else "user_updated")
        sql = RAW[db].format(user=where, index=index)
        async with engine.connect() as conn:
            (await conn.execute(text(sql), {"user": user})).all()

    async def deep() -> None:
        cursor = None
        for _ in range(20):
            cursor = (await records.list_sessions(cursor=cursor)).next_cursor

    def some_user() -> str:
        return f"u{rng.randrange(users):06d}"

    return {
        "global": await timed(lambda: records.list_sessions(), rounds),
        "global_raw": await timed(lambda: raw(None), rounds),
        "user": await timed(lambda: records.list_sessions(user_id=some_user()), rounds),
        "user_raw": await timed(lambda: raw(some_user()), rounds),
        "page_20": await timed(deep, max(3, rounds // 5)) / 20,
    }


async def bench(db: str, url: str, sizes: tuple[int, int], rounds: int) -> list[str]:
    async with SessionStore(url, **NAMES) as store:
        async with store.engine.begin() as conn:
            await conn.run_sync(store.metadata.drop_all)
        await store.create_tables()
        results: dict[int, dict[str, float]] = {}
        have = 0
        for size in sizes:
            await grow(store, have, size)
            have = size
            results[size] = await measure(store, db, size // PER_USER, rounds)
        async with store.engine.begin() as conn:
            await conn.run_sync(store.metadata.drop_all)
    small, large = (results[size] for size in sizes)
    lines, misses = [], []
    for key in ("global", "user", "page_20"):
        flat = large[key] / small[key]
        line = f"{db:10} {key:8} {sizes[0]:>7}: {small[key]:6.2f} ms  {sizes[1]:>7}: "
        line += f"{large[key]:6.2f} ms  flat {flat:4.2f}x"
        if key != "page_20":
            vs_raw = large[key] / large[f"{key}_raw"]
            line += f"  raw {large[f'{key}_raw']:6.2f} ms  ours/raw {vs_raw:4.2f}x"
        misses += [f"{db} {key} flat"] if flat > TARGET else []
        lines.append(line)
    print("\n".join(lines), flush=True)
    return misses


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite", help="sqlite,postgresql,mariadb")
    parser.add_argument("--smoke", action="store_true", help="small sizes, few rounds")
    args = parser.parse_args(argv)
    sizes, rounds = ((200, 2_000), 5) if args.smoke else ((1_000, 100_000), 31)
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
