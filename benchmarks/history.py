"""History operations: fork and replace against doing them client-side; the hot path's cost.

    python -m benchmarks.history --db sqlite,postgresql,mariadb [--smoke] [--main DIR]
        [--parts fork,replace,hot]

- fork: ``store.fork`` of an N-item session (100,000; 5,000 with ``--smoke``) against a
  client-side copy (``get_items`` of the source, ``add_items`` of it all into a new session).
  Figure: copy time / fork time (how many times faster the server-side fork is).
- replace: ``replace_items`` of a 200-item history by a 5-item summary against the SDK
  compaction wrapper's way (``clear_session`` then ``add_items``), both with the archive off.
  Figure: clear+add time / replace time.
- hot path: turns of ``add_items`` (2 items), ``get_items(limit=20)`` and ``pop_item`` over 20
  sessions, by a store with the archive off, one with it on and, with ``--main DIR``, the
  package in ``DIR/src`` (``git archive <main's commit> src | tar -x -C DIR``), in a child
  process like ours, with the same workload. Each variant runs in its own process, in
  alternating order per round; the figure is the median of turns per second, and the ratios
  are off/main and on/off.

Ratios measured in one run on one machine; the absolute figures are for reading the ratios.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

URL_ENVS = {
    "postgresql": "AGENT_SESSION_STORE_TEST_POSTGRES_URL",
    "mariadb": "AGENT_SESSION_STORE_TEST_MARIADB_URL",
}
NAMES = {"sessions_table": "bench_hist_sessions", "messages_table": "bench_hist_messages"}
ROOT = Path(__file__).resolve().parents[1]


def item(n: int) -> dict[str, Any]:
    return {"role": "user", "content": f"message {n}: " + "x" * 150}


async def _fresh(url: str, **kwargs: Any) -> Any:
    from agent_session_store import SessionStore

    store = SessionStore(url, **NAMES, **kwargs)
    async with store.engine.begin() as conn:
        await conn.run_sync(store.metadata.drop_all)
    await store.create_tables()
    return store


async def bench_fork(url: str, size: int) -> tuple[float, float]:
    store = await _fresh(url)
    source = store.session("source")
    for start in range(0, size, 10_000):
        await source.add_items([item(n) for n in range(start, min(size, start + 10_000))])
    begin = time.perf_counter()
    await store.fork("source", "forked")
    fork_s = time.perf_counter() - begin
    begin = time.perf_counter()
    await store.session("copied").add_items(await source.get_items())
    copy_s = time.perf_counter() - begin
    assert await store.count_items("forked") == await store.count_items("copied") == size
    await store.close()
    return fork_s, copy_s


async def bench_replace(url: str, rounds: int) -> tuple[float, float]:
    store = await _fresh(url)
    history, summary = [item(n) for n in range(200)], [item(-n) for n in range(5)]
    times: dict[str, list[float]] = {"replace": [], "clear+add": []}
    for rnd in range(rounds):
        chat = store.session(f"r{rnd}")
        for way in ("replace", "clear+add") if rnd % 2 == 0 else ("clear+add", "replace"):
            await chat.replace_items(history)
            begin = time.perf_counter()
            if way == "replace":
                await chat.replace_items(summary)
            else:
                await chat.clear_session()
                await chat.add_items(summary)
            times[way].append(time.perf_counter() - begin)
    await store.close()
    return statistics.median(times["replace"]), statistics.median(times["clear+add"])


async def hot_turns(url: str, variant: str, turns: int, rnd: int) -> float:
    """Run in a child: turns per second of add/get/pop for one variant of the store."""
    from agent_session_store import SessionStore

    kwargs: dict[str, Any] = {"archive": True} if variant == "on" else {}
    names = {key: f"{value}_{variant}" for key, value in NAMES.items()}
    async with SessionStore(url, **names, **kwargs) as store:
        await store.create_tables()
        handles = [store.session(f"s{rnd}-{n}") for n in range(20)]
        pair = [item(1), item(2)]
        for handle in handles:  # warm: statements, pool, the first row of each session
            await handle.add_items(pair)
        begin = time.perf_counter()
        for _ in range(turns):
            for handle in handles:
                await handle.add_items(pair)
                await handle.get_items(limit=20)
                await handle.pop_item()
        return turns * len(handles) / (time.perf_counter() - begin)


def run_child(url: str, variant: str, turns: int, rnd: int, main: Path | None) -> float:
    env = dict(os.environ)
    src = main / "src" if variant == "main" and main is not None else ROOT / "src"
    env["PYTHONPATH"] = os.pathsep.join([str(src), str(ROOT)])
    args = [sys.executable, "-m", "benchmarks.history", "--child", variant, "--url", url]
    args += ["--turns", str(turns), "--round", str(rnd)]
    out = subprocess.run(args, env=env, cwd=tempfile.gettempdir(), capture_output=True)
    if out.returncode != 0:
        raise RuntimeError(f"{variant} child failed:\n{out.stderr.decode()[-2000:]}")
    return float(json.loads(out.stdout)["turns_per_s"])


async def drop_hot_tables(url: str, main: Path | None) -> None:
    from agent_session_store import SessionStore

    for variant in ("off", "on", "main"):
        names = {key: f"{value}_{variant}" for key, value in NAMES.items()}
        async with SessionStore(url, **names) as store, store.engine.begin() as conn:
            await conn.run_sync(store.metadata.drop_all)


def bench_hot(url: str, rounds: int, turns: int, main: Path | None) -> dict[str, float]:
    variants = ["off", "on"] + (["main"] if main is not None else [])
    rates: dict[str, list[float]] = {v: [] for v in variants}
    for rnd in range(rounds):
        order = variants if rnd % 2 == 0 else list(reversed(variants))
        for variant in order:
            rates[variant].append(run_child(url, variant, turns, rnd, main))
    return {variant: statistics.median(found) for variant, found in rates.items()}


async def bench(db: str, url: str, smoke: bool, main: Path | None, parts: set[str]) -> None:
    size = 5_000 if smoke else 100_000
    if "fork" in parts:
        fork_s, copy_s = await bench_fork(url, size)
        print(
            f"{db:10} fork of {size:,} items: fork {fork_s * 1000:8.1f} ms, client-side copy "
            f"{copy_s * 1000:8.1f} ms, copy/fork {copy_s / fork_s:5.1f}",
            flush=True,
        )
    if "replace" in parts:
        replace_s, clear_add_s = await bench_replace(url, 5 if smoke else 21)
        print(
            f"{db:10} replace 200 by 5 items: replace_items {replace_s * 1000:6.2f} ms, "
            f"clear+add {clear_add_s * 1000:6.2f} ms, (clear+add)/replace "
            f"{clear_add_s / replace_s:4.2f}",
            flush=True,
        )
    if "hot" not in parts:
        return
    await drop_hot_tables(url, main)
    rates = bench_hot(url, 3 if smoke else 7, 5 if smoke else 25, main)
    await drop_hot_tables(url, main)
    line = f"{db:10} hot path turns/s: archive off {rates['off']:7.0f}, on {rates['on']:7.0f}"
    if "main" in rates:
        line += f", main {rates['main']:7.0f}; off/main {rates['off'] / rates['main']:4.2f}"
    print(f"{line}; on/off {rates['on'] / rates['off']:4.2f}", flush=True)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", default="sqlite", help="sqlite,postgresql,mariadb")
    parser.add_argument("--smoke", action="store_true", help="small sizes, a few rounds")
    parser.add_argument(
        "--main", type=Path, default=None, help="a tree with main's src/ to compare, e.g. "
        "from git archive (a fixed commit: not a checkout that moves during the run)"
    )
    parser.add_argument("--parts", default="fork,replace,hot", help="fork,replace,hot")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--url", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--turns", type=int, default=10, help=argparse.SUPPRESS)
    parser.add_argument("--round", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:
        rate = await hot_turns(args.url, args.child, args.turns, args.round)
        print(json.dumps({"turns_per_s": rate}))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        for db in args.db.split(","):
            url = f"sqlite+aiosqlite:///{Path(tmp) / 'hist.db'}" if db == "sqlite" else ""
            url = url or os.environ.get(URL_ENVS.get(db, ""), "")
            if not url:
                print(f"{db}: set {URL_ENVS.get(db, 'a URL')}", file=sys.stderr)
                return 2
            await bench(db, url, args.smoke, args.main, set(args.parts.split(",")))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
