"""What an owner check costs on the hot path: a scoped turn against an unscoped one.

    python -m benchmarks.ownership --db sqlite,postgresql,mariadb [--smoke] [--trips]

A turn is what an agent run does with its session: read the latest 20 items, then append a
user message and an answer (2.5 KB of JSON, as in benchmarks.items). Each round plays the
same turns over 20 sessions through handles without ``user_id`` and through handles with one
(in alternating order), and the figure is the median over rounds of turns per second.
Goal (issue 11): scoped within 10% of unscoped (ratio >= 0.90). ``--trips`` first counts the
requests each operation makes of its driver (as ``benchmarks.trips``) through a plain handle,
an owner's handle and a handle with a ttl; the load average is printed with each figure.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time

from agent_session_store import SessionStore
from benchmarks import ratios
from benchmarks.items import turn

NAMES = {"sessions_table": "bench_own_sessions", "messages_table": "bench_own_messages"}
SESSIONS = 20
TARGET = 0.90


async def play(store: SessionStore, scoped: bool, turns: int, rnd: int) -> float:
    """Turns per second over ``SESSIONS`` sessions, ``turns`` turns each."""
    kind = "scoped" if scoped else "plain"
    handles = [
        store.session(f"{kind}-{rnd}-{n}", user_id=f"user-{n}" if scoped else None)
        for n in range(SESSIONS)
    ]
    items = turn()[:2]
    start = time.perf_counter()
    for _ in range(turns):
        for handle in handles:
            await handle.get_items(limit=20)
            await handle.add_items(items)
    return turns * SESSIONS / (time.perf_counter() - start)


TRIP_OPS = {
    "get_items(limit=20)": lambda h: h.get_items(limit=20),
    "add_items(2 items)": lambda h: h.add_items(turn()[:2]),
    "pop_item()": lambda h: h.pop_item(),
}


async def trips(db: str, url: str) -> None:
    """Driver requests per operation: plain, owner, ttl handles (the same statements' work)."""
    from benchmarks.trips import counting

    async with SessionStore(url, **NAMES) as store, ratios.fresh_tables(store):
        kinds = {"plain": {}, "user_id": {"user_id": "u-1"}, "ttl": {"ttl": 3600}}
        print(f"| {db} | " + " | ".join(kinds) + " |")
        counts: dict[str, list[float]] = {label: [] for label in TRIP_OPS}
        for kind, kwargs in kinds.items():
            handle = store.session(f"trips-{kind}", **kwargs)
            for _ in range(10):
                await handle.add_items(turn())
            for label, op in TRIP_OPS.items():
                await op(handle)  # warm
                with counting(db) as count:
                    for _ in range(10):
                        await op(handle)
                counts[label].append(count[0] / 10)
        for label, row in counts.items():
            print(f"| {label} | " + " | ".join(f"{n:g}" for n in row) + " |", flush=True)


async def bench(db: str, url: str, rounds: int, turns: int) -> float:
    async with SessionStore(url, **NAMES) as store, ratios.fresh_tables(store):
        rates: dict[bool, list[float]] = {False: [], True: []}
        await play(store, False, 2, -1)  # warm the pool and both sets of statements
        await play(store, True, 2, -1)
        for rnd in range(rounds):
            for scoped in (False, True) if rnd % 2 == 0 else (True, False):
                rates[scoped].append(await play(store, scoped, turns, rnd))
    plain, scoped_rate = statistics.median(rates[False]), statistics.median(rates[True])
    ratio = scoped_rate / plain
    print(
        f"{db:10} plain {plain:8.0f} turns/s  scoped {scoped_rate:8.0f} turns/s  "
        f"scoped/plain {ratio:4.2f}  (load {os.getloadavg()[0]:.1f})",
        flush=True,
    )
    return ratio


main = ratios.entry(
    __doc__,
    bench=bench,
    sizes=((9, 10), (3, 3)),
    target=TARGET,
    ratio_name="scoped/plain",
    extras={"trips": ("count driver requests first", trips)},
)

if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
