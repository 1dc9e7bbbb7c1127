"""``show`` prints where a fork came from; ``restore`` undoes an archived clear or replace."""

from __future__ import annotations

import asyncio

from agent_session_store import SessionStore

from .test_cli import fails, invoke, ok
from .test_cli import url_fixture as url_fixture
from .test_history import items


def test_show_prints_the_fork_reference(url: str) -> None:
    async def run() -> None:
        async with SessionStore(url) as store:
            await store.create_tables()
            await store.session("main").add_items(items(3))
            await store.fork("main", "branch", upto=2)

    asyncio.run(run())
    out = ok("show", "branch", "--url", url).stdout
    assert "2 items" in out and "forked from: main at item " in out
    assert "forked from" not in ok("show", "main", "--url", url).stdout


def test_restore_brings_back_a_cleared_session_and_says_so(url: str) -> None:
    async def clear() -> None:
        async with SessionStore(url, archive=True) as store:
            await store.create_tables()
            chat = store.session("chat", user_id="u-1")
            await chat.add_items(items(4))
            await chat.replace_items(items(1, "summary"))

    async def history() -> list[object]:
        async with SessionStore(url) as store:
            return await store.session("chat").get_items()

    asyncio.run(clear())
    fails("restore", "chat", "--user-id", "u-2", "--url", url, match="another user")
    assert "restored 4 items of session 'chat'" in ok("restore", "chat", "--url", url).stdout
    assert asyncio.run(history()) == items(4)
    out = invoke("restore", "nothing-here", "--url", url)
    assert out.exit_code == 0 and "nothing archived" in out.stdout
