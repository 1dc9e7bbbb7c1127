"""SQLite ``add_items`` of 100 items: this store against the SDK's ``AsyncSQLiteSession``.

    python -m benchmarks.sdk_sqlite [--batches 200] [--rounds 5] [--smoke]

Both write batches of 100 items into a fresh file in a temporary directory, rounds
interleaved so that load from other processes falls on both alike; the figure is the median
items/s of each and their ratio (target: ours/SDK >= 1.0). ``--smoke`` runs a small size and
exits 1 when ours is slower.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from agent_session_store import SessionStore
from benchmarks.workloads import items


async def _ours(path: Path, batches: list[list[dict[str, Any]]]) -> float:
    async with SessionStore(f"sqlite+aiosqlite:///{path}") as store:
        await store.create_tables()
        session = store.session("bench")
        await session.add_items(batches[0])  # warm: connection, statements
        start = time.perf_counter()
        for batch in batches:
            await session.add_items(batch)
        return time.perf_counter() - start


async def _sdk(path: Path, batches: list[list[dict[str, Any]]]) -> float:
    from agents.extensions.memory.async_sqlite_session import AsyncSQLiteSession

    session = AsyncSQLiteSession("bench", db_path=path)
    try:
        await session.add_items(batches[0])
        start = time.perf_counter()
        for batch in batches:
            await session.add_items(batch)
        return time.perf_counter() - start
    finally:
        await session.close()


async def main(batches: int, rounds: int) -> float:
    data = [items(100) for _ in range(batches)]
    rates: dict[str, list[float]] = {"ours": [], "sdk": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rnd in range(rounds):
            order = [("ours", _ours), ("sdk", _sdk)]
            for name, run in order if rnd % 2 == 0 else order[::-1]:
                elapsed = await run(Path(tmp) / f"{name}-{rnd}.db", data)
                rates[name].append(100 * batches / elapsed)
    ours, sdk = statistics.median(rates["ours"]), statistics.median(rates["sdk"])
    print(f"sqlite add_items(100 items) x {batches}, median of {rounds} rounds")
    print(f"  ours: {ours:,.0f} items/s   SDK AsyncSQLiteSession: {sdk:,.0f} items/s")
    print(f"  ours/SDK = {ours / sdk:.2f} (target >= 1.00)")
    return ours / sdk


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args()
    if args.smoke:
        args.batches, args.rounds = 20, 3
    ratio = asyncio.run(main(args.batches, args.rounds))
    sys.exit(1 if args.smoke and ratio < 1.0 else 0)
