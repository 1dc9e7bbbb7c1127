"""Where the time of one store operation goes: a cProfile of many calls, grouped by package.

    python -m benchmarks.hotpath --db postgresql --op tail [--impl floor] [--calls 1000]

Operations: ``tail`` (get_items(limit=20) of 60 items), ``add1`` (add_items of one item),
``pop``, ``full`` (get_items() of 60 items). Prints each package's share of the profiled time
(own time of its functions), then the top functions.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import tempfile
from collections import Counter
from typing import Any

from agent_session_store import SessionStore
from benchmarks import floor
from benchmarks.items import items
from benchmarks.run import URL_ENVS

OPS: dict[str, Any] = {
    "tail": lambda s: s.get_items(limit=20),
    "add1": lambda s: s.add_items(items(1)),
    "pop": lambda s: s.pop_item(),
    "full": lambda s: s.get_items(),
}
GROUPS = [
    ("sqlalchemy", "/sqlalchemy/"),
    ("agent_session_store", "/agent_session_store/"),
    ("driver", ("/asyncpg/", "/aiosqlite/", "/aiomysql/", "/pymysql/")),
    ("json", "/json/"),
    ("hand-off to aiosqlite's thread", "_queue"),
    ("greenlet switch", "greenlet"),
    ("socket and epoll (waiting)", ("socket", "epoll", "select.")),
    ("asyncio", ("/asyncio/", "selectors.py", "contextvars")),
]


def group_of(filename: str, name: str) -> str:
    where = f"{filename}:{name}"
    for group, marks in GROUPS:
        if any(mark in where for mark in ((marks,) if isinstance(marks, str) else marks)):
            return group
    return "other"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="sqlite")
    parser.add_argument("--op", default="tail", choices=sorted(OPS))
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--impl", default="ours", choices=["ours", "floor"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = f"sqlite+aiosqlite:///{tmp}/hot.db"
        if args.db != "sqlite":
            url = next(os.environ[e] for e in URL_ENVS[args.db] if os.environ.get(e))
        names = {"sessions_table": floor.SESSIONS_TABLE, "messages_table": floor.MESSAGES_TABLE}
        store = SessionStore(url, **names)
        backend: Any = None
        try:
            await store.create_tables()
            session: Any = store.session("hot")
            if args.impl == "floor":
                backend = {
                    "sqlite": lambda: floor.SqliteFloor(f"{tmp}/hot.db"),
                    "postgresql": lambda: floor.PostgresFloor(url),
                    "mariadb": lambda: floor.MariadbFloor(url),
                }[args.db]()
                if hasattr(backend, "start"):
                    await backend.start()
                session = floor.FloorSession(backend, "hot")
            await session.add_items(items(60 + args.calls))
            op = OPS[args.op]
            for _ in range(50):
                await op(session)
            profiler = cProfile.Profile()
            profiler.enable()
            for _ in range(args.calls):
                await op(session)
            profiler.disable()
        finally:
            if backend is not None:
                await backend.close()
            async with store.engine.begin() as conn:
                await conn.run_sync(store.metadata.drop_all)
            await store.close()
    stats = pstats.Stats(profiler)
    shares: Counter[str] = Counter()
    raw: Any = stats.stats  # type: ignore[attr-defined]
    for (filename, _line, name), (_cc, _nc, tottime, _ct, _callers) in raw.items():
        shares[group_of(filename, name)] += tottime
    total = sum(shares.values())
    print(
        f"{args.impl} {args.db} {args.op}: {total / args.calls * 1e6:.0f} us a call, under cProfile"
    )
    for group, seconds in shares.most_common():
        print(f"  {group:32s} {seconds / total:6.1%}")
    stats.sort_stats("tottime").print_stats(12)


if __name__ == "__main__":
    asyncio.run(main())
