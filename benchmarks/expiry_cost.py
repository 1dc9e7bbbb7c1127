"""What seeing expiry costs a plain handle: today's statements against the ones without it.

    python -m benchmarks.expiry_cost --db sqlite,postgresql,mariadb [--rounds 9]

Every plain read now says ``NOT EXISTS (the session row, expired)`` in its WHERE, and every
write's session upsert tells an expired row (``_expiry``). This runs, on one store and
through its own funnel (driver path, pool, retries), the plain ``get_items(limit=20)`` and
``add_items`` (two items of benchmarks.items) against the same operations built from the
statements as they were before (no expiry in them), in alternating order, and prints the
median ratio of times per operation (new/old; 1.00 is no cost). Ratios of one run, so the
machine's load touches both sides alike.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from sqlalchemy import Integer, bindparam, insert, select

from agent_session_store import SessionStore
from agent_session_store._dialect import append_items, touch_session
from agent_session_store._json import decode_rows, encode_items
from agent_session_store._statements import prepare
from agent_session_store._transport import WriteShape
from benchmarks.items import turn

NAMES = {"sessions_table": "bench_exp_sessions", "messages_table": "bench_exp_messages"}
URL_ENVS = {
    "postgresql": "AGENT_SESSION_STORE_TEST_POSTGRES_URL",
    "mariadb": "AGENT_SESSION_STORE_TEST_MARIADB_URL",
}
CALLS = 100


def old_operations(store: SessionStore) -> tuple[Any, Any]:
    """``get_items(limit=20)`` and ``add_items`` with the statements before expiry."""
    s, m, dialect = store.sessions, store.messages, store.engine.dialect
    sid = bindparam("sid", type_=s.c.session_id.type)
    lim = bindparam("lim", type_=Integer)
    tail = prepare(
        select(m.c.message_data).where(m.c.session_id == sid).order_by(m.c.id.desc()).limit(lim),
        dialect,
    )
    append = append_items(dialect, s, m)
    old_append = None if append is None else prepare(append, dialect, modifies=True)
    touch = prepare(touch_session(dialect, s).values(session_id=sid), dialect, modifies=True)
    text = bindparam("text", type_=m.c.message_data.type)
    add_row = prepare(insert(m).values(session_id=sid, message_data=text), dialect, modifies=True)

    async def get(session_id: str) -> list[Any]:
        rows = await store._transport.read(
            lambda run: run.rows(tail, {"sid": session_id, "lim": 20})
        )
        return decode_rows((row[0] for row in reversed(rows)), print)

    async def add(session_id: str, items: list[Any]) -> None:
        encoded = encode_items(items)
        if old_append is not None:
            one = {"sid": session_id, "texts": encoded}
            await store._transport.write(
                lambda run: run.run(old_append, one), WriteShape.ONE_STATEMENT
            )
            return

        async def write(run: Any) -> None:
            await run.run(touch, {"sid": session_id})
            await run.run(add_row, [{"sid": session_id, "text": t} for t in encoded])

        await store._transport.write(write, WriteShape.SEVERAL_STATEMENTS)

    return get, add


async def timed(call: Callable[[], Awaitable[Any]]) -> float:
    start = time.perf_counter()
    for _ in range(CALLS):
        await call()
    return (time.perf_counter() - start) / CALLS * 1e6


async def bench(db: str, url: str, rounds: int) -> None:
    async with SessionStore(url, **NAMES) as store:
        async with store.engine.begin() as conn:
            await conn.run_sync(store.metadata.drop_all)
        await store.create_tables()
        items = turn()[:2]
        old_get, old_add = old_operations(store)
        for sid in ("new", "old"):
            for _ in range(30):
                await store.add_items(sid, items)
        ops: dict[str, dict[str, Callable[[], Awaitable[Any]]]] = {
            "get_items(limit=20)": {
                "new": lambda: store.get_items("new", 20),
                "old": lambda: old_get("old"),
            },
            "add_items(2 items)": {
                "new": lambda: store.add_items("new", items),
                "old": lambda: old_add("old", items),
            },
        }
        for label, pair in ops.items():
            ratios, news, olds = [], [], []
            for rnd in range(rounds):
                order = ("new", "old") if rnd % 2 == 0 else ("old", "new")
                got = {kind: await timed(pair[kind]) for kind in order}
                ratios.append(got["new"] / got["old"])
                news.append(got["new"])
                olds.append(got["old"])
            print(
                f"{db:10} {label:20} with expiry {statistics.median(news):7.0f} us  "
                f"before {statistics.median(olds):7.0f} us  new/old "
                f"{statistics.median(ratios):4.2f}  (load {os.getloadavg()[0]:.1f})",
                flush=True,
            )
        async with store.engine.begin() as conn:
            await conn.run_sync(store.metadata.drop_all)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite", help="sqlite,postgresql,mariadb")
    parser.add_argument("--rounds", type=int, default=9)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        for db in args.db.split(","):
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'exp.db'}" if db == "sqlite" else ""
            url = url or os.environ.get(URL_ENVS.get(db, ""), "")
            if not url:
                print(f"{db}: set {URL_ENVS.get(db, 'a URL')}", file=sys.stderr)
                return 2
            await bench(db, url, args.rounds)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
