"""What causal reads (``wsrep_sync_wait = 1``) cost on a Galera node: reads with them on
against reads with them off, on the same node and data.

    python -m benchmarks.causal_reads [--urls URL1,URL2,...] [--rounds 7] [--reads 400]

URLs default to ``$AGENT_SESSION_STORE_TEST_GALERA_URLS`` (``.ci/galera.sh start DIR`` prints
them). Each round reads ``--reads`` times the latest 20 items of 20 sessions through a store
on node 2 with causal reads on and one with them off (alternating which goes first), while a
store on node 1 keeps writing to other sessions, so the node has writes to wait for. The
figure is the median over rounds of reads per second, and their ratio (on / off).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import time

from agent_session_store import SessionStore

SESSIONS = 20


async def reads_per_second(store: SessionStore, reads: int) -> float:
    started = time.perf_counter()
    for n in range(reads):
        await store.get_items(f"bench-causal-{n % SESSIONS}", limit=20)
    return reads / (time.perf_counter() - started)


async def background_writes(store: SessionStore, stop: asyncio.Event) -> int:
    written = 0
    while not stop.is_set():
        await store.add_items(f"bench-causal-w{written % 5}", [{"role": "user", "content": "x"}])
        written += 1
    return written


async def main(urls: list[str], rounds: int, reads: int) -> None:
    item = {"role": "assistant", "content": "a" * 500}
    async with (
        SessionStore(urls[0]) as writer,
        SessionStore(urls[1]) as causal,
        SessionStore(urls[1], causal_reads=False) as loose,
    ):
        await writer.create_tables()
        for n in range(SESSIONS):
            await writer.clear_session(f"bench-causal-{n}")
            await writer.add_items(f"bench-causal-{n}", [item] * 20)
        on: list[float] = []
        off: list[float] = []
        stop = asyncio.Event()
        writing = asyncio.ensure_future(background_writes(writer, stop))
        try:
            for rnd in range(rounds):
                pair = [(causal, on), (loose, off)]
                for store, into in pair if rnd % 2 == 0 else pair[::-1]:
                    into.append(await reads_per_second(store, reads))
        finally:
            stop.set()
            written = await writing
    on_m, off_m = statistics.median(on), statistics.median(off)
    print(f"reads/s on node 2, causal reads on:  {on_m:9.0f}")
    print(f"reads/s on node 2, causal reads off: {off_m:9.0f}")
    print(f"ratio on/off: {on_m / off_m:.2f} ({rounds} rounds of {reads} reads; "
          f"{written} background writes on node 1)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--urls", default=os.environ.get("AGENT_SESSION_STORE_TEST_GALERA_URLS"))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--reads", type=int, default=400)
    args = parser.parse_args()
    if not args.urls:
        parser.error("give --urls or set AGENT_SESSION_STORE_TEST_GALERA_URLS")
    asyncio.run(main(args.urls.split(","), args.rounds, args.reads))
