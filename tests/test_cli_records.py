"""Records from the shell and through export/import: filters, show, prune --expired, erase-user."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from agent_session_store import InvalidRecordError, SessionStore

from .test_cli import invoke, ok
from .test_cli import url_fixture as url_fixture

PAST = datetime.now(timezone.utc) - timedelta(days=1)


def seed(url: str) -> None:
    async def run() -> None:
        async with SessionStore(url) as store:
            await store.create_tables()
            for n in range(6):
                handle = store.session(f"s{n}", user_id=f"u{n % 2}")
                await handle.add_items([{"role": "user", "content": f"hello {n}"}])
                await handle.update(
                    title=f"Chat {n}", metadata={"team": "red" if n < 3 else "blue"}
                )
            await store.session("s5", user_id="u1").update(expires_at=PAST)

    asyncio.run(run())


def listed(*args: str) -> list[str]:
    out = json.loads(ok("sessions", "--json", *args).stdout)
    return [row["session_id"] for row in out["sessions"]]


def test_sessions_filters_by_user_metadata_and_lists_expired_on_request(url: str) -> None:
    seed(url)
    assert listed("--url", url) == ["s4", "s3", "s2", "s1", "s0"]
    assert listed("--url", url, "--user", "u1") == ["s3", "s1"]
    assert listed("--url", url, "--user", "u0", "--meta", "team=red") == ["s2", "s0"]
    assert listed("--url", url, "--expired", "--user", "u1") == ["s5", "s3", "s1"]
    row = json.loads(ok("sessions", "--json", "--url", url, "--user", "u1").stdout)["sessions"][0]
    assert (row["user_id"], row["title"], row["metadata"]) == ("u1", "Chat 3", {"team": "blue"})
    bad = invoke("sessions", "--url", url, "--meta", "novalue")
    assert bad.exit_code == 2 and "'novalue' is not key=value" in bad.output


def test_show_prints_title_owner_and_metadata(url: str) -> None:
    seed(url)
    out = ok("show", "s2", "--url", url).stdout
    assert "title: Chat 2; owner: u0" in out and 'metadata: {"team": "red"}' in out


def test_prune_expired_is_a_dry_run_without_yes_and_deletes_with_it(url: str) -> None:
    seed(url)
    assert (
        "would delete 1 expired session (1 item)" in ok("prune", "--expired", "--url", url).stdout
    )
    assert listed("--url", url, "--expired") == ["s5", "s4", "s3", "s2", "s1", "s0"]
    assert (
        "deleted 1 expired session (1 item)"
        in ok("prune", "--expired", "--yes", "--url", url).stdout
    )
    assert listed("--url", url, "--expired") == ["s4", "s3", "s2", "s1", "s0"]
    result = invoke("prune", "--url", url)
    assert (
        result.exit_code == 2 and "exactly one of --older-than AGE and --expired" in result.output
    )


def test_erase_user_is_a_dry_run_without_yes_and_erases_with_it(url: str) -> None:
    seed(url)
    assert "would erase 3 sessions (3 items) of 'u1'" in ok("erase-user", "u1", "--url", url).stdout
    assert listed("--url", url, "--user", "u1") == ["s3", "s1"]
    assert (
        "erased 3 sessions (3 items) of 'u1'"
        in ok("erase-user", "u1", "--yes", "--url", url).stdout
    )
    assert listed("--url", url, "--expired", "--user", "u1") == []
    assert listed("--url", url) == ["s4", "s2", "s0"]


async def test_export_carries_owner_title_metadata_expiry_and_import_restores_them(
    store: SessionStore, tmp_path: Path
) -> None:
    handle = store.session("a", user_id="u-1")
    await handle.add_items([{"n": 1}])
    await handle.update(
        title="Trip", metadata={"k": [1, {"x": None}]}, expires_at=PAST + timedelta(days=9)
    )
    records = [r async for r in store.export_sessions()]
    assert records[0]["format"] == 2 and records[0]["user_id"] == "u-1"
    async with SessionStore(f"sqlite+aiosqlite:///{tmp_path / 'copy.db'}") as copy:
        await copy.create_tables()
        await copy.import_sessions(records)
        got, want = await copy.info("a"), await store.info("a")
        assert got == want and got is not None and got.title == "Trip"
        assert [r async for r in copy.export_sessions()] == records


async def test_format_1_files_still_import_and_newer_formats_are_refused(
    store: SessionStore,
) -> None:
    when = "2024-02-03T04:05:06.789000+00:00"
    old = [
        {"session": "old", "created_at": when, "updated_at": when},
        {"item": {"n": 1}, "created_at": when},
    ]
    assert (await store.import_sessions(old)).created == 1
    info = await store.info("old")
    assert info is not None and info.user_id is None and info.metadata == {}
    newer = [{"session": "new", "format": 3, "created_at": when, "updated_at": when}]
    with pytest.raises(InvalidRecordError, match="formats 1 to 2"):
        await store.import_sessions(newer)
