"""What reads on a streaming replica cost: the writes, and the reads of one's own writes.

    python -m benchmarks.replica PRIMARY_URL REPLICA_URL [--ops 400 --rounds 5]

(``.ci/pg_replica.sh start DIR`` prints the two URLs.) Each figure is a ratio of two stores
measured in the same run, in interleaved rounds, median of the rounds:

- ``add_items`` on a store with ``replica=`` against one without: the write path is the same,
  the store only numbers the write (goal: 1.00);
- ``add_items`` followed by ``SELECT pg_current_wal_insert_lsn()`` against ``add_items``: what
  recording each write's WAL position at write time would have cost (the design not taken);
- a write-then-read cycle (``add_items``, then ``get_items(limit=20)`` of that session) with the
  replica against the primary alone: the price of read-your-writes on a replica;
- ``get_items(limit=20)`` of sessions this store did not write, on the replica against the
  primary: a plain replica read.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy import text

from agent_session_store import SessionStore
from agent_session_store._statements import prepare

Cycle = Callable[[int], Awaitable[Any]]


async def _timed(ops: int, cycle: Cycle) -> float:
    started = time.perf_counter()
    for n in range(ops):
        await cycle(n)
    return time.perf_counter() - started


async def _ratio(ops: int, rounds: int, ours: Cycle, base: Cycle) -> tuple[float, float, float]:
    """Median seconds per op of ``ours`` and ``base``, and their ratio (ours / base)."""
    mine, theirs = [], []
    for rnd in range(rounds):
        pair = [(mine, ours), (theirs, base)]
        for times, cycle in pair if rnd % 2 == 0 else reversed(pair):
            times.append(await _timed(ops, cycle) / ops)
    a, b = statistics.median(mine), statistics.median(theirs)
    return a, b, a / b


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("primary")
    parser.add_argument("replica")
    parser.add_argument("--ops", type=int, default=400, help="operations per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    item = [{"role": "user", "content": "x" * 200}]
    async with (
        SessionStore(args.primary) as plain,
        SessionStore(args.primary, replica=args.replica) as routed,
    ):
        await plain.create_tables()
        # As the store would send it: prepared once, on its driver path.
        lsn = prepare(text("SELECT pg_current_wal_insert_lsn()"), plain.engine.dialect)

        async def with_position(n: int) -> None:
            await plain.add_items(f"w{n % 50}", item)
            await plain._transport.read(lambda run: run.rows(lsn, {}))

        async def cycle_on(store: SessionStore, n: int) -> None:
            await store.add_items(f"c{n % 50}", item)
            await store.get_items(f"c{n % 50}", limit=20)

        for n in range(50):
            await plain.add_items(f"r{n}", item * 20)
        await asyncio.sleep(0.5)  # the replica replays those
        rows = [
            ("add_items, replica= vs none", *await _ratio(
                args.ops, args.rounds,
                lambda n: routed.add_items(f"w{n % 50}", item),
                lambda n: plain.add_items(f"w{n % 50}", item),
            )),
            ("add_items + WAL position query vs add_items", *await _ratio(
                args.ops, args.rounds, with_position,
                lambda n: plain.add_items(f"w{n % 50}", item),
            )),
            ("write-then-read cycle, replica vs primary", *await _ratio(
                args.ops, args.rounds,
                lambda n: cycle_on(routed, n), lambda n: cycle_on(plain, n),
            )),
            ("get_items(limit=20) not written here, replica vs primary", *await _ratio(
                args.ops, args.rounds,
                lambda n: routed.get_items(f"r{n % 50}", limit=20),
                lambda n: plain.get_items(f"r{n % 50}", limit=20),
            )),
        ]
        stats = routed.replica_stats
    print(f"{'figure':58} {'ours us':>9} {'base us':>9} {'ratio':>6}")
    for name, mine, theirs, ratio in rows:
        print(f"{name:58} {mine * 1e6:9.0f} {theirs * 1e6:9.0f} {ratio:6.2f}")
    if stats is not None:
        print(
            f"replica served {stats.replica} of {stats.reads} reads "
            f"({stats.replica_fraction:.0%}); {stats.waited} waited for replay, "
            f"{stats.primary_behind} went to the primary"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
