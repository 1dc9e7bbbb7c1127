"""rewind, replace_items and fork against concurrent writers, poppers, readers, cancellation.

Every item written is accounted for exactly once (in the history, popped, returned by a
rewind, or, with the archive on, archived), batches written by ``add_items`` are never split
or interleaved, and a cancelled rewind or replace leaves the old history or the new one.
"""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterable
from typing import Any

import pytest
from sqlalchemy import select

from agent_session_store import SessionStore

from .test_history import items

WRITERS, BATCHES, BATCH = 3, 6, 4


def batch(writer: int, number: int) -> list[dict[str, Any]]:
    return [{"w": writer, "b": number, "i": i} for i in range(BATCH)]


def every_batch() -> list[dict[str, Any]]:
    return [item for w in range(WRITERS) for b in range(BATCHES) for item in batch(w, b)]


def key(item: dict[str, Any]) -> str:
    return json.dumps(item, sort_keys=True)


def assert_exactly_once(seen: Iterable[dict[str, Any]], written: Iterable[dict[str, Any]]) -> None:
    assert sorted(map(key, seen)) == sorted(map(key, written))


def assert_batches_not_interleaved(history: list[dict[str, Any]]) -> None:
    """Each batch's items that are still there sit together, in order, from its first."""
    where: dict[tuple[Any, Any], list[int]] = {}
    for position, item in enumerate(history):
        if "w" in item:
            where.setdefault((item["w"], item["b"]), []).append(position)
    for (w, b), positions in where.items():
        assert positions == list(range(positions[0], positions[0] + len(positions))), (w, b)
        assert [history[p]["i"] for p in positions] == list(range(len(positions)))


async def archived_items(store: SessionStore) -> list[dict[str, Any]]:
    a = store.archive_table
    async with store.engine.connect() as conn:
        rows = await conn.execute(select(a.c.message_data).where(a.c.reason != "restore"))
        return [json.loads(row[0]) for row in rows]


async def writers(chat: Any) -> None:
    async def write(w: int) -> None:
        for b in range(BATCHES):
            await chat.add_items(batch(w, b))
            await asyncio.sleep(0)

    await asyncio.gather(*(write(w) for w in range(WRITERS)))


async def poppers(chat: Any, popped: list[Any], count: int = 8) -> None:
    async def pop() -> None:
        for _ in range(count):
            item = await chat.pop_item()
            if item is not None:
                popped.append(item)

    await asyncio.gather(pop(), pop())


@pytest.mark.parametrize("archive", [False, True], ids=["plain", "archive"])
async def test_rewind_under_concurrent_writers_and_poppers_loses_and_duplicates_nothing(
    shared_db_url: str, archive: bool
) -> None:
    async with SessionStore(shared_db_url, archive=archive) as store:
        await store.create_tables()
        chat = store.session("chat")
        base = items(40, "base")
        await chat.add_items(base)
        popped: list[Any] = []
        rewound: list[Any] = []

        async def rewinder() -> None:
            for keep in (30, 20, 10):
                await asyncio.sleep(0)
                removed = await chat.rewind(keep)
                assert isinstance(removed, list)
                rewound.extend(removed)

        await asyncio.gather(writers(chat), poppers(chat, popped), rewinder())
        final = await chat.get_items()
        kept = [item for item in final if "w" not in item]
        assert final[: len(kept)] == kept == base[: len(kept)]  # pops may take base items too
        assert_exactly_once([*final, *popped, *rewound], [*base, *every_batch()])
        assert_batches_not_interleaved(final)
        in_final = {(i["w"], i["b"]) for i in final if "w" in i}
        assert not in_final & {(i["w"], i["b"]) for i in rewound if "w" in i}  # never split
        if archive:
            assert_exactly_once(await archived_items(store), [*popped, *rewound])


@pytest.mark.parametrize("archive", [False, True], ids=["plain", "archive"])
async def test_replace_under_concurrent_writers_and_poppers_keeps_whole_batches_after_it(
    shared_db_url: str, archive: bool
) -> None:
    async with SessionStore(shared_db_url, archive=archive) as store:
        await store.create_tables()
        chat = store.session("chat")
        base = items(10, "base")
        await chat.add_items(base)
        popped: list[Any] = []
        replacements = [[{"r": k, "i": i} for i in range(3)] for k in range(3)]

        async def replacer() -> None:
            for replacement in replacements:
                await asyncio.sleep(0)
                await chat.replace_items(replacement)

        await asyncio.gather(writers(chat), poppers(chat, popped, 4), replacer())
        final = await chat.get_items()
        summary = [item for item in final if "r" in item]
        assert final[: len(summary)] == summary  # the replacement comes first...
        if summary:  # ...and is a prefix of one replacement (pops take from the end)
            assert summary == replacements[summary[0]["r"]][: len(summary)]
        assert_batches_not_interleaved(final)
        seen = [key(item) for item in [*final, *popped]]
        assert len(seen) == len(set(seen))
        if archive:
            everything = [*base, *every_batch(), *(i for r in replacements for i in r)]
            assert_exactly_once([*final, *await archived_items(store)], everything)


async def test_fork_under_concurrent_writers_and_poppers_copies_a_consistent_prefix(
    shared_db_url: str,
) -> None:
    async with SessionStore(shared_db_url) as store:
        await store.create_tables()
        chat = store.session("chat")
        base = items(10, "base")
        await chat.add_items(base)
        popped: list[Any] = []
        forks: list[str] = []

        async def forker() -> None:
            for n in range(4):
                await asyncio.sleep(0)
                await store.fork("chat", f"fork-{n}")
                forks.append(f"fork-{n}")

        await asyncio.gather(writers(chat), poppers(chat, popped, 4), forker())
        for fork_id in forks:
            copied = await store.session(fork_id).get_items()
            seen = list(map(key, copied))
            assert len(seen) == len(set(seen))
            assert_batches_not_interleaved(copied)
            assert copied[: min(len(copied), 6)] == base[: min(len(copied), 6)]


async def test_readers_see_the_old_or_the_new_history_while_it_is_replaced(
    shared_db_url: str,
) -> None:
    async with SessionStore(shared_db_url) as store:
        await store.create_tables()
        chat = store.session("chat")
        old, new = items(30, "old"), items(5, "new")
        await chat.add_items(old)
        reads: list[list[Any]] = []
        done = asyncio.Event()

        async def reader() -> None:
            while not done.is_set():
                reads.append(await chat.get_items())
                await asyncio.sleep(0)

        async def replacer() -> None:
            for n in range(20):
                await chat.replace_items(new if n % 2 == 0 else old)
            done.set()

        await asyncio.gather(reader(), reader(), replacer())
        assert reads
        assert all(read in (old, new) for read in reads)


@pytest.mark.parametrize("archive", [False, True], ids=["plain", "archive"])
async def test_replace_and_rewind_cancelled_at_random_points_are_all_or_nothing(
    db_url: str, archive: bool
) -> None:
    """60 cancelled replaces and 60 cancelled rewinds per database and archive setting."""
    rng = random.Random(f"{db_url}-{archive}")
    async with SessionStore(db_url, archive=archive) as store:
        await store.create_tables()
        chat = store.session("chat")
        old, new = items(20, "old"), items(3, "new")
        await chat.replace_items(old)
        cancelled = 0
        for run in range(120):
            replacing = run % 2 == 0
            task = asyncio.ensure_future(chat.replace_items(new) if replacing else chat.rewind(5))
            for _ in range(rng.randrange(40)):  # a random point: 0 to 39 loop iterations in
                await asyncio.sleep(0)
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                cancelled += 1
            history = await chat.get_items()
            assert history in (old, new if replacing else old[:5]), run
            if history != old:
                await chat.replace_items(old)
        assert cancelled > 0
