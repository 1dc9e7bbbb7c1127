"""Run every workload on this store, the Agents SDK's SQLAlchemySession and the raw driver.

    python -m benchmarks.run --db sqlite,postgresql,mariadb [--rounds 5] [--smoke]

Rounds are interleaved (ours, SDK, floor, then the next round in a rotated order) so that
load from other processes falls on all three alike, and each figure is a median of rounds.
``--smoke`` runs small sizes in seconds and exits 1 when ours is slower than the SDK's class
on any workload. PostgreSQL and MariaDB URLs come from ``--postgresql-url``/``--mariadb-url``
or the test environment variables; each implementation gets its own ``bench_*`` tables there,
dropped before and after the run. SQLite files live in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Index, MetaData
from sqlalchemy.ext.asyncio import create_async_engine

from agent_session_store import SessionStore
from agent_session_store._dialect import configure_sqlite
from benchmarks import floor
from benchmarks.workloads import (
    FULL,
    SMOKE,
    Impl,
    Workload,
    setup_scaling,
    w9_full_read_memory,
    workloads,
)

IMPLS = ("ours", "sdk", "floor")
URL_ENVS = {
    "postgresql": (
        "AGENT_SESSION_STORE_BENCH_POSTGRES_URL",
        "AGENT_SESSION_STORE_TEST_POSTGRES_URL",
    ),
    "mariadb": ("AGENT_SESSION_STORE_BENCH_MARIADB_URL", "AGENT_SESSION_STORE_TEST_MARIADB_URL"),
}
#: Done-when targets of issue 4: ours/floor on every workload, ours/SDK on these workloads.
FLOOR_TARGET = {"sqlite": 0.8, "postgresql": 0.8, "mariadb": 0.7}
SDK_TARGET = {"1": 3.0, "5": 3.0, "6": 3.0}
SDK_TARGET_DBS = ("sqlite", "postgresql")
Rates = dict[str, list[float]]
#: Every implementation keeps up to the same number of open connections. SQLAlchemy's default
#: (5 kept + 10 overflow, closed on return) would reconnect under the concurrent workloads.
POOL = {"pool_size": floor.POOL_SIZE, "max_overflow": 0}


def _tables(prefix: str) -> dict[str, str]:
    return {
        "sessions_table": f"bench_{prefix}_sessions",
        "messages_table": f"bench_{prefix}_messages",
    }


async def drop_bench_tables(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as conn:
            metadata = MetaData()
            await conn.run_sync(
                lambda sync: metadata.reflect(sync, only=lambda name, _: name.startswith("bench_"))
            )
            await conn.run_sync(metadata.drop_all)
    finally:
        await engine.dispose()


@asynccontextmanager
async def implementations(db: str, url: str | None, tmp: Path) -> AsyncIterator[list[Impl]]:
    """The three implementations on ``db``, each on its own engine or pool and tables."""
    from agents.extensions.memory import SQLAlchemySession as SDKSession

    def url_for(name: str) -> str:
        return url if url is not None else f"sqlite+aiosqlite:///{tmp / name}.db"

    async with AsyncExitStack() as stack:
        if url is not None:
            await drop_bench_tables(url)
            stack.push_async_callback(drop_bench_tables, url)

        store = SessionStore(url_for("ours"), engine_kwargs=POOL, **_tables("ours"))
        stack.push_async_callback(store.close)
        await store.create_tables()
        ours = Impl("ours", store.session)

        sdk_engine = create_async_engine(url_for("sdk"), **POOL)
        stack.push_async_callback(sdk_engine.dispose)
        # The same SQLite pragmas as ours (WAL, synchronous=NORMAL, busy timeout, foreign keys),
        # so that the comparison is of code, not of durability settings.
        configure_sqlite(sdk_engine.sync_engine)
        names = _tables("sdk")
        if db == "mariadb":
            # The SDK's create_tables emits VARCHAR without a length, which MySQL rejects: give
            # it our (column-compatible) tables plus the (session_id, created_at) index it reads by.
            async with SessionStore(sdk_engine, **names) as schema:
                await schema.create_tables()
                index = Index("idx_bench_sdk_time", schema.messages.c.session_id,
                              schema.messages.c.created_at)  # fmt: skip
                async with sdk_engine.begin() as conn:
                    await conn.run_sync(index.create)
        else:
            await SDKSession("setup", engine=sdk_engine, create_tables=True, **names).get_items()
        sdk = Impl("sdk", lambda sid: SDKSession(sid, engine=sdk_engine, **names))

        floor_url = url_for("floor")
        async with SessionStore(floor_url, **_tables("floor")) as schema:
            await schema.create_tables()
        backend: Any
        if db == "sqlite":
            backend = floor.SqliteFloor(str(tmp / "floor.db"))
        elif db == "postgresql":
            backend = floor.PostgresFloor(floor_url)
            await backend.start()
        else:
            backend = floor.MariadbFloor(floor_url)
            await backend.start()
        stack.push_async_callback(backend.close)
        raw = Impl("floor", lambda sid: floor.FloorSession(backend, sid))
        yield [ours, sdk, raw]


def grouped(wls: list[Workload]) -> list[list[Workload]]:
    """Each workload alone, except the two tail reads of the scaling workload (8a, 8b), which
    share rounds so that their ratio compares reads made moments apart."""
    groups: list[list[Workload]] = []
    for wl in wls:
        if wl.key == "8b" and groups and groups[-1][0].key == "8a":
            groups[-1].append(wl)
        else:
            groups.append([wl])
    return groups


def rotated(impls: list[Impl], rnd: int) -> list[Impl]:
    k = rnd % len(impls)
    return impls[k:] + impls[:k]


async def measure(
    wls: list[Workload], impls: list[Impl], size: dict[str, int], rounds: int
) -> dict[str, Rates]:
    """Run ``rounds`` interleaved rounds of ``wls``; every round in a rotated order."""
    rates: dict[str, Rates] = {wl.key: {i.name: [] for i in impls} for wl in wls}
    for rnd in range(rounds):
        for impl in rotated(impls, rnd):
            for wl in wls:
                units, seconds = await wl.run(impl, size, rnd)
                rates[wl.key][impl.name].append(units / seconds)
    return rates


async def bench_db(
    db: str, url: str | None, size: dict[str, int], rounds: int, smoke: bool
) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix="ass-bench-"))
    rows: list[dict[str, Any]] = []
    try:
        async with implementations(db, url, tmp) as impls:
            for group in grouped(workloads(size)):
                if group[0].key == "8a":
                    for impl in impls:
                        await setup_scaling(impl, size)
                rates = await measure(group, impls, size, rounds)
                for wl in group:
                    medians = {n: statistics.median(r) for n, r in rates[wl.key].items()}
                    if smoke and medians["ours"] < medians["sdk"]:
                        # A burst of load from elsewhere can hit a few short rounds: before
                        # failing, measure again with twice the rounds and judge on all of them.
                        print(f"  [{db}] {wl.key}: slower than SDK; again", file=sys.stderr)
                        more = (await measure([wl], impls, size, 2 * rounds))[wl.key]
                        medians = {
                            n: statistics.median(r + more[n]) for n, r in rates[wl.key].items()
                        }
                    rows.append({"key": wl.key, "title": wl.title, "unit": wl.unit, **medians})
                    progress = ", ".join(f"{n} {v:,.0f}" for n, v in medians.items())
                    print(f"  [{db}] {wl.key}: {progress}", file=sys.stderr, flush=True)
            memory = {}
            for impl in impls:
                peak, payload = await w9_full_read_memory(impl)
                memory[impl.name] = {"peak": peak, "payload": payload, "ratio": peak / payload}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"rows": rows, "memory": memory}


def report(db: str, result: dict[str, Any], smoke: bool) -> list[str]:
    """Print the table for ``db``; return the targets it misses."""
    misses: list[str] = []
    print(f"\n### {db}\n")
    print("| # | workload | unit | ours | SDK | floor | ours/SDK | ours/floor |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for row in result["rows"]:
        vs_sdk, vs_floor = row["ours"] / row["sdk"], row["ours"] / row["floor"]
        flags = []
        if vs_sdk < 1.0:
            flags.append("slower than SDK")
        if not smoke:
            if vs_floor < FLOOR_TARGET[db]:
                flags.append(f"< {FLOOR_TARGET[db]}x floor")
            if db in SDK_TARGET_DBS and vs_sdk < SDK_TARGET.get(row["key"], 0):
                flags.append(f"< {SDK_TARGET[row['key']]}x SDK")
        misses += [f"{db} workload {row['key']}: {f}" for f in flags]
        mark = " **" + "; ".join(flags) + "**" if flags else ""
        print(
            f"| {row['key']} | {row['title']} | {row['unit']} | {row['ours']:,.0f} | "
            f"{row['sdk']:,.0f} | {row['floor']:,.0f} | {vs_sdk:.2f} | {vs_floor:.2f}{mark} |"
        )
    rows = {r["key"]: r for r in result["rows"]}
    slowdown = {n: rows["8a"][n] / rows["8b"][n] for n in IMPLS}
    if not smoke and slowdown["ours"] > 1.3:
        misses.append(f"{db} workload 8: tail read {slowdown['ours']:.2f}x slower at scale")
    print(
        "| 8 | tail read time at large / at small history (target <= 1.3) | ratio | "
        + " | ".join(f"{slowdown[n]:.2f}" for n in IMPLS)
        + " | | |"
    )
    mem = result["memory"]
    if not smoke and mem["ours"]["ratio"] >= 3:
        misses.append(f"{db} workload 9: full-read peak {mem['ours']['ratio']:.2f}x payload")
    print(
        f"| 9 | full-read peak Python heap / JSON payload ({mem['ours']['payload'] / 1e6:.1f} MB)"
        " (target < 3) | ratio | " + " | ".join(f"{mem[n]['ratio']:.2f}" for n in IMPLS) + " | | |"
    )
    return misses


def machine() -> str:
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
         if ln.startswith("model name")), platform.processor(),
    )  # fmt: skip
    load = os.getloadavg() if hasattr(os, "getloadavg") else ()
    return (
        f"{os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, "
        f"load average at start {', '.join(f'{x:.2f}' for x in load)}"
    )


def write_json(path: str, results: dict[str, Any]) -> None:
    Path(path).write_text(json.dumps(results, indent=2))


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", default="sqlite", help="comma-separated: sqlite,postgresql,mariadb")
    parser.add_argument(
        "--smoke", action="store_true", help="small sizes; exit 1 if slower than SDK"
    )
    parser.add_argument("--rounds", type=int, help="interleaved rounds per workload (default 5)")
    parser.add_argument("--postgresql-url")
    parser.add_argument("--mariadb-url")
    parser.add_argument("--json", help="also write the medians to this file")
    args = parser.parse_args(argv)
    size = SMOKE if args.smoke else FULL
    rounds = args.rounds or 5
    print(f"machine: {machine()}; rounds: {rounds}; sizes: {'smoke' if args.smoke else 'full'}")
    results: dict[str, Any] = {}
    misses: list[str] = []
    for db in args.db.split(","):
        url = None
        if db != "sqlite":
            url = getattr(args, f"{db}_url") or next(
                (os.environ[e] for e in URL_ENVS[db] if os.environ.get(e)), None
            )
            if url is None:
                parser.error(f"--db {db} needs --{db}-url or ${URL_ENVS[db][0]}")
        results[db] = await bench_db(db, url, size, rounds, args.smoke)
        misses += report(db, results[db], args.smoke)
    if args.json:
        write_json(args.json, results)
    if misses:
        print("\nmissed: " + "; ".join(misses))
    if args.smoke:
        slower = [m for m in misses if "slower than SDK" in m]
        return 1 if slower else 0
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
