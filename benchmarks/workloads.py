"""The nine workloads of issue 4, each run against any implementation with a ``session(id)``.

A workload's ``run`` returns how many units it did and the seconds it took; set-up work
(filling a history to read from) happens outside the timed part.
"""

from __future__ import annotations

import asyncio
import gc
import time
import tracemalloc
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from benchmarks.items import items, payload_bytes, turn

FULL = {
    "turn_sessions": 40, "turns": 15, "batch": 100, "batches": 200, "tail_reads": 300,
    "full_reads": 3, "pops": 200, "single_adds": 500, "conc_sessions": 200, "conc_adds": 5,
    "scale_small": 1_000, "scale_big": 100_000, "scale_reads": 300,
}  # fmt: skip
SMOKE = {
    "turn_sessions": 8, "turns": 4, "batch": 100, "batches": 10, "tail_reads": 50,
    "full_reads": 2, "pops": 40, "single_adds": 80, "conc_sessions": 30, "conc_adds": 3,
    "scale_small": 100, "scale_big": 2_000, "scale_reads": 50,
}  # fmt: skip


@dataclass
class Impl:
    """One implementation under test: a name and a factory of Session-protocol objects."""

    name: str
    session: Callable[[str], Any]
    state: dict[str, Any] = field(default_factory=dict)


Result = tuple[int, float]
_ids = iter(range(10**9))


def new_id(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


async def fill(impl: Impl, session_id: str, count: int, batch: int = 1_000) -> None:
    """Give ``session_id`` ``count`` items, outside any timing."""
    session = impl.session(session_id)
    for start in range(0, count, batch):
        await session.add_items(items(min(batch, count - start)))


async def w1_turn_loop(impl: Impl, size: dict[str, int], rnd: int) -> Result:
    async def agent(session: Any) -> None:
        for _ in range(size["turns"]):
            await session.get_items()
            await session.add_items(turn())

    sessions = [impl.session(new_id("turn")) for _ in range(size["turn_sessions"])]
    start = time.perf_counter()
    await asyncio.gather(*(agent(s) for s in sessions))
    return size["turn_sessions"] * size["turns"], time.perf_counter() - start


async def w2_add_batches(impl: Impl, size: dict[str, int], rnd: int) -> Result:
    session_id = new_id("big")
    batches = [items(size["batch"]) for _ in range(size["batches"])]
    session = impl.session(session_id)
    start = time.perf_counter()
    for batch in batches:
        await session.add_items(batch)
    elapsed = time.perf_counter() - start
    impl.state.setdefault("big", []).append(session_id)
    return size["batch"] * size["batches"], elapsed


def _big(impl: Impl, rnd: int) -> Any:
    ids = impl.state["big"]
    return impl.session(ids[rnd % len(ids)])


async def w3_tail_read(impl: Impl, size: dict[str, int], rnd: int) -> Result:
    session = _big(impl, rnd)
    start = time.perf_counter()
    for _ in range(size["tail_reads"]):
        await session.get_items(limit=20)
    return size["tail_reads"], time.perf_counter() - start


async def w4_full_read(impl: Impl, size: dict[str, int], rnd: int) -> Result:
    session = _big(impl, rnd)
    start = time.perf_counter()
    count = 0
    for _ in range(size["full_reads"]):
        count += len(await session.get_items())
    return count, time.perf_counter() - start


async def w5_pop(impl: Impl, size: dict[str, int], rnd: int) -> Result:
    session = _big(impl, rnd)
    start = time.perf_counter()
    for _ in range(size["pops"]):
        await session.pop_item()
    return size["pops"], time.perf_counter() - start


async def w6_single_adds(impl: Impl, size: dict[str, int], rnd: int) -> Result:
    session = impl.session(new_id("single"))
    singles = [[item] for item in items(size["single_adds"])]
    start = time.perf_counter()
    for one in singles:
        await session.add_items(one)
    return size["single_adds"], time.perf_counter() - start


async def w7_many_sessions(impl: Impl, size: dict[str, int], rnd: int) -> Result:
    async def user(session: Any) -> None:
        for _ in range(size["conc_adds"]):
            await session.add_items(turn())
        await session.get_items(limit=20)

    sessions = [impl.session(new_id("many")) for _ in range(size["conc_sessions"])]
    start = time.perf_counter()
    await asyncio.gather(*(user(s) for s in sessions))
    return size["conc_sessions"], time.perf_counter() - start


async def setup_scaling(impl: Impl, size: dict[str, int]) -> None:
    for key in ("scale_small", "scale_big"):
        session_id = new_id(key)
        await fill(impl, session_id, size[key])
        impl.state[key] = session_id


def _tail_at(key: str) -> Callable[[Impl, dict[str, int], int], Awaitable[Result]]:
    async def tail(impl: Impl, size: dict[str, int], rnd: int) -> Result:
        session = impl.session(impl.state[key])
        start = time.perf_counter()
        for _ in range(size["scale_reads"]):
            await session.get_items(limit=20)
        return size["scale_reads"], time.perf_counter() - start

    return tail


w8a_tail_small = _tail_at("scale_small")
w8b_tail_big = _tail_at("scale_big")


async def w9_full_read_memory(impl: Impl) -> tuple[int, int]:
    """Peak Python heap during a full read of the big history, and that history's JSON size."""
    session = impl.session(impl.state["scale_big"])
    gc.collect()
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        result = await session.get_items()
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    return peak, payload_bytes(result)


@dataclass(frozen=True)
class Workload:
    key: str
    title: str
    unit: str
    run: Callable[[Impl, dict[str, int], int], Awaitable[Result]]


def workloads(size: dict[str, int]) -> list[Workload]:
    s = size
    return [
        Workload("1", f"turn loop: {s['turn_sessions']} sessions x {s['turns']} turns "
                 "(get_items + add_items(6))", "turns/s", w1_turn_loop),
        Workload("2", f"add_items({s['batch']}) x {s['batches']}, one session", "items/s",
                 w2_add_batches),
        Workload("3", f"get_items(limit=20) at {s['batch'] * s['batches']:,} items", "reads/s",
                 w3_tail_read),
        Workload("4", f"full get_items() of {s['batch'] * s['batches']:,} items", "items/s",
                 w4_full_read),
        Workload("5", f"pop_item() x {s['pops']}", "pops/s", w5_pop),
        Workload("6", f"add_items(1 item) x {s['single_adds']}", "adds/s", w6_single_adds),
        Workload("7", f"{s['conc_sessions']} sessions at once, {s['conc_adds']} adds each "
                 "+ tail read", "sessions/s", w7_many_sessions),
        Workload("8a", f"get_items(limit=20) at {s['scale_small']:,} items", "reads/s",
                 w8a_tail_small),
        Workload("8b", f"get_items(limit=20) at {s['scale_big']:,} items", "reads/s",
                 w8b_tail_big),
    ]  # fmt: skip
