"""What an idempotency key costs on add_items: keyed writes against the same writes without.

    python -m benchmarks.idempotency --db sqlite,postgresql,mariadb [--smoke]

Each round appends a user message and an answer (2.5 KB of JSON, as in benchmarks.items)
to 20 sessions, ``adds`` times each, through a store that records a key per call (the
default) and through one with ``idempotency_keys=False``, which sends exactly the statements
the store sent before keys existed. The two stores take turns call by call (so both see the
same load), and the figure is the median over rounds of the ratio of the time each spent.
Goal (issue 14, point 6): keyed within 10% of unkeyed (ratio >= 0.90).
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time

from agent_session_store import SessionStore
from benchmarks import ratios
from benchmarks.items import turn

NAMES = {"sessions_table": "bench_key_sessions", "messages_table": "bench_key_messages"}
SESSIONS = 20
TARGET = 0.90


async def play(stores: dict[str, SessionStore], adds: int, rnd: int) -> dict[str, float]:
    """Seconds spent in add_items per kind, over ``SESSIONS`` sessions, ``adds`` calls each.

    The two kinds take turns call by call, so both see the same load on a shared machine.
    """
    handles = {
        kind: [store.session(f"{kind}-{rnd}-{n}") for n in range(SESSIONS)]
        for kind, store in stores.items()
    }
    items = turn()[:2]
    spent = dict.fromkeys(stores, 0.0)
    kinds = list(stores)
    for a in range(adds):
        for n in range(SESSIONS):
            for kind in kinds if (a + n) % 2 == 0 else reversed(kinds):
                start = time.perf_counter()
                await handles[kind][n].add_items(items)
                spent[kind] += time.perf_counter() - start
    return spent


async def bench(db: str, url: str, rounds: int, adds: int) -> float:
    async with SessionStore(url, **NAMES) as keyed, SessionStore(
        url, idempotency_keys=False, **NAMES
    ) as plain, ratios.fresh_tables(keyed):
        stores = {"keyed": keyed, "plain": plain}
        await play(stores, 2, -1)  # warm each pool and its statements
        rates: dict[str, list[float]] = {"keyed": [], "plain": []}
        round_ratios: list[float] = []
        for rnd in range(rounds):
            spent = await play(stores, adds, rnd)
            for kind, seconds in spent.items():
                rates[kind].append(adds * SESSIONS / seconds)
            round_ratios.append(spent["plain"] / spent["keyed"])
    plain_rate, keyed_rate = statistics.median(rates["plain"]), statistics.median(rates["keyed"])
    ratio = statistics.median(round_ratios)
    print(
        f"{db:10} without keys {plain_rate:8.0f} adds/s  with keys {keyed_rate:8.0f} adds/s  "
        f"keyed/unkeyed {ratio:4.2f} (rounds {min(round_ratios):4.2f}-{max(round_ratios):4.2f})",
        flush=True,
    )
    return ratio


main = ratios.entry(
    __doc__,
    bench=bench,
    sizes=((9, 15), (3, 3)),
    target=TARGET,
    ratio_name="keyed/unkeyed",
)

if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
