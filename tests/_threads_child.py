"""Thread scenarios of test_sdk_parity_concurrency, run in a child process of their own.

A session used from several event loops at once can do worse than fail: a driver connection
shared across loops can crash the interpreter. In a child process a crash or a hang fails one
test instead of ending the run. Usage: ``python -m tests._threads_child SCENARIO URL``; prints
the result as JSON and exits 0, or exits non-zero with the errors on stderr.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from agent_session_store import SQLAlchemySession

#: Seconds a thread may take; the parent's own timeout is longer.
JOIN_TIMEOUT = 15


def say(content: str) -> dict[str, Any]:
    return {"role": "user", "content": content}


def contents(items: list[Any]) -> list[Any]:
    return [item.get("content") for item in items]


def run_in_threads(work: list[Callable[[], Awaitable[Any]]]) -> list[Any]:
    """Run each coroutine function in its own thread with its own event loop, at once."""
    results: list[Any] = [None] * len(work)
    barrier = threading.Barrier(len(work))

    def target(index: int) -> None:
        async def main() -> Any:
            barrier.wait(JOIN_TIMEOUT)
            return await asyncio.wait_for(work[index](), JOIN_TIMEOUT)

        try:
            results[index] = asyncio.run(main())
        except BaseException as exc:  # reported, not lost in the thread
            results[index] = exc

    threads = [threading.Thread(target=target, args=(i,), daemon=True) for i in range(len(work))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(JOIN_TIMEOUT)
    stuck = sum(thread.is_alive() for thread in threads)
    if stuck:
        raise SystemExit(f"{stuck} of {len(threads)} threads still running after {JOIN_TIMEOUT} s")
    errors = [f"{type(r).__name__}: {r}" for r in results if isinstance(r, BaseException)]
    if errors:
        raise SystemExit("\n".join(errors))
    return results


def separate_sessions(url: str) -> Any:
    def worker(session_id: str, content: str) -> Callable[[], Awaitable[Any]]:
        async def run() -> list[Any]:
            session = SQLAlchemySession.from_url(session_id, url=url, create_tables=True)
            try:
                await session.add_items([say(content)])
                return contents(await session.get_items())
            finally:
                await session.engine.dispose()

        return run

    return run_in_threads([worker("loop_a", "one"), worker("loop_b", "two")])


def one_shared_session(url: str, threads: int, per_thread: int) -> Any:
    session = SQLAlchemySession.from_url("shared", url=url, create_tables=True)

    def writer(thread: int) -> Callable[[], Awaitable[Any]]:
        async def run() -> None:
            for i in range(per_thread):
                await session.add_items([say(f"Message {thread * per_thread + i}")])

        return run

    run_in_threads([writer(t) for t in range(threads)])

    async def read() -> list[Any]:
        return sorted(contents(await session.get_items()))

    return asyncio.run(read())


SCENARIOS: dict[str, Callable[[str], Any]] = {
    "separate_sessions": separate_sessions,
    "two_threads_one_session": lambda url: one_shared_session(url, 2, 1),
    "five_threads_one_session": lambda url: one_shared_session(url, 5, 2),
}

if __name__ == "__main__":
    scenario, url = sys.argv[1], sys.argv[2]
    print(json.dumps(SCENARIOS[scenario](url)))
