"""Code run in child processes by the multi-process scenarios (importable, so ``spawn`` works).

Each child opens its own :class:`SessionStore` on the shared URL, waits at a barrier so that
every process starts writing at the same moment, and reports errors through a queue instead
of raising: a child's traceback would otherwise be lost in its own stderr.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import traceback
from collections.abc import Callable, Coroutine
from typing import Any

from agent_session_store import SessionStore

TASKS_PER_PROCESS = 20
BATCHES_PER_TASK = 25
SESSIONS = 10
#: Connections per child: 8 processes must stay well under the shared servers' 100 clients.
CHILD_ENGINE = {"pool_size": 3, "max_overflow": 0}


def batch_size(batch: int) -> int:
    """Items in batch number ``batch``: 1 to 4, so batches of every size interleave."""
    return 1 + batch % 4


def batch_items(proc: int, task: int, batch: int) -> list[dict[str, Any]]:
    """The items of one batch, each naming its writer, batch and position."""
    return [
        {
            "role": "user",
            "content": f"p{proc} t{task} b{batch} i{i}",
            "w": [proc, task],
            "b": batch,
            "i": i,
        }
        for i in range(batch_size(batch))
    ]


def session_for(proc: int, task: int) -> str:
    """The shared session a writer appends to."""
    return f"shared-{(proc * TASKS_PER_PROCESS + task) % SESSIONS}"


def run_child(
    main: Callable[..., Coroutine[Any, Any, Any]],
    url: str,
    proc: int,
    barrier: Any,
    errors: multiprocessing.Queue[str],
    *args: Any,
) -> None:
    """Run ``main(store, proc, *args)`` on a fresh store after every child reached ``barrier``."""

    async def child() -> None:
        async with SessionStore(url, engine_kwargs=CHILD_ENGINE) as store:
            barrier.wait()
            await main(store, proc, *args)

    try:
        asyncio.run(child())
    except BaseException:
        errors.put(f"process {proc}: {traceback.format_exc()}")
        raise


async def write_batches(store: SessionStore, proc: int) -> None:
    """20 concurrent tasks, each appending 25 batches in order to its shared session."""

    async def writer(task: int) -> None:
        session = store.session(session_for(proc, task))
        for batch in range(BATCHES_PER_TASK):
            await session.add_items(batch_items(proc, task, batch))

    await asyncio.gather(*(writer(task) for task in range(TASKS_PER_PROCESS)))


async def first_use(store: SessionStore, proc: int, sessions: int) -> None:
    """Create the tables and use ``sessions`` new sessions at once, as a cold start does."""
    await store.create_tables()

    async def use(n: int) -> None:
        session = store.session(f"cold-{proc}-{n}")
        await session.add_items([{"role": "user", "content": f"hello {n}"}])
        assert await session.get_items() == [{"role": "user", "content": f"hello {n}"}]

    await asyncio.gather(*(use(n) for n in range(sessions)))


def run_processes(
    url: str,
    count: int,
    main: Callable[..., Coroutine[Any, Any, Any]],
    *args: Any,
    timeout: float = 240.0,
) -> list[str]:
    """Run ``main`` in ``count`` spawned processes at once; return their errors (none: [])."""
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(count)
    errors: multiprocessing.Queue[str] = ctx.Queue()
    procs = [
        ctx.Process(target=run_child, args=(main, url, proc, barrier, errors, *args))
        for proc in range(count)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout)
    found = []
    for p in procs:
        if p.is_alive():
            p.kill()
            found.append(f"process {p.pid} did not finish in {timeout}s")
        elif p.exitcode != 0:
            found.append(f"process {p.pid} exited with {p.exitcode}")
    while not errors.empty():
        found.append(errors.get())
    return found
