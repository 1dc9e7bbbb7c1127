"""The agent-session-store command line, through click's runner, on real databases."""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result
from sqlalchemy import String, literal, select, update

from agent_session_store import SessionStore
from agent_session_store.cli import cli

from .conftest import SERVER_ENVS, SHARED_KINDS, _url_for, reset_database

ITEMS: list[dict[str, Any]] = [
    {"role": "user", "content": "What's the weather in Paris?"},
    {"type": "reasoning", "id": "rs_1",
     "summary": [{"type": "summary_text", "text": "Use the tool."}]},
    {"type": "function_call", "call_id": "c1", "name": "get_weather",
     "arguments": '{"city":"Paris"}'},
    {"type": "function_call_output", "call_id": "c1", "output": "18°C, sunny"},
    {"type": "message", "role": "assistant", "id": "m1", "status": "completed",
     "content": [{"type": "output_text", "text": "Sunny in Paris.", "annotations": []}]},
]


@pytest.fixture(name="url", params=SHARED_KINDS)
def url_fixture(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database (SQLite file, PostgreSQL, MariaDB) for command-line tests."""
    url = _url_for(request.param, tmp_path)
    if request.param in SERVER_ENVS:
        asyncio.run(reset_database(url))
    return url


@pytest.fixture(name="clean_env", autouse=True)
def clean_env_fixture(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    monkeypatch.delenv("AGENT_SESSION_STORE_URL", raising=False)
    monkeypatch.chdir(tmp_path)
    yield


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=True)


def ok(*args: str) -> Result:
    result = invoke(*args)
    assert result.exit_code == 0, (result.output, result.exception)
    return result


def fails(*args: str, match: str, code: int = 1) -> Result:
    """The command fails with one line on stderr; ``code`` 3 means "cannot reach"."""
    result = invoke(*args)
    assert result.exit_code == code, result.output
    assert result.stdout == ""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert match in lines[0], lines[0]
    assert "Traceback" not in result.output
    return result


def fill(url: str, sessions: dict[str, list[dict[str, Any]]], age_days: int = 0) -> None:
    async def run() -> None:
        async with SessionStore(url) as store:
            await store.create_tables()
            for session_id, items in sessions.items():
                await store.session(session_id).add_items(items)
            if age_days:
                when = datetime.now(timezone.utc) - timedelta(days=age_days)
                s = store.sessions
                async with store.engine.begin() as conn:
                    await conn.execute(
                        update(s).where(s.c.session_id.in_(list(sessions))).values(updated_at=when)
                    )

    asyncio.run(run())


def items_of(url: str, session_id: str) -> list[Any]:
    async def run() -> list[Any]:
        async with SessionStore(url) as store:
            return await store.session(session_id).get_items()

    return asyncio.run(run())


# -- sessions and show ----------------------------------------------------------------------


def test_sessions_lists_id_items_created_updated_newest_first(url: str) -> None:
    fill(url, {"older": ITEMS[:2]})
    fill(url, {"newer": ITEMS})
    table = ok("sessions", "--url", url).stdout
    assert table.index("newer") < table.index("older")
    assert "created (UTC)" in table and "updated (UTC)" in table
    data = json.loads(ok("sessions", "--url", url, "--json").stdout)
    assert [(s["session_id"], s["items"]) for s in data["sessions"]] == [("newer", 5), ("older", 2)]
    assert data["next_cursor"] is None
    assert datetime.fromisoformat(data["sessions"][0]["updated_at"]).tzinfo is not None


def test_sessions_pages_follow_the_printed_cursor(url: str) -> None:
    for name in ("a", "b", "c"):
        fill(url, {name: ITEMS[:1]})
    first = json.loads(ok("sessions", "--url", url, "--json", "--limit", "2").stdout)
    assert [s["session_id"] for s in first["sessions"]] == ["c", "b"]
    page = ok("sessions", "--url", url, "--limit", "2").stdout
    assert f"--cursor {first['next_cursor']}" in page
    rest = ok("sessions", "--url", url, "--json", "--limit", "2", "--cursor", first["next_cursor"])
    assert [s["session_id"] for s in json.loads(rest.stdout)["sessions"]] == ["a"]


def test_sessions_on_a_database_without_tables_says_to_run_upgrade(url: str) -> None:
    if url.startswith("sqlite"):
        Path(url.split("///", 1)[1]).touch()  # an existing, empty SQLite file
    fails("sessions", "--url", url, match="run: agent-session-store upgrade --url")


def test_sessions_on_a_missing_sqlite_file_fails_without_creating_it(tmp_path: Path) -> None:
    fails("sessions", "--url", "sqlite:///typo.db", match="no database file 'typo.db'", code=3)
    assert not (tmp_path / "typo.db").exists()


def test_show_renders_each_item_type_readably(url: str) -> None:
    fill(url, {"s1": ITEMS})
    out = ok("show", "s1", "--url", url).stdout
    for expected in ("user", "What's the weather in Paris?", "reasoning", "Use the tool.",
                     "tool call", 'get_weather({"city":"Paris"})', "tool output", "18°C, sunny",
                     "assistant", "Sunny in Paris.", "5 items"):
        assert expected in out
    assert out.index("tool call") < out.index("tool output") < out.index("assistant")


def test_show_limit_and_json_print_the_latest_items_verbatim(url: str) -> None:
    fill(url, {"s1": ITEMS})
    assert json.loads(ok("show", "s1", "--url", url, "--json").stdout) == ITEMS
    assert json.loads(ok("show", "s1", "--url", url, "--json", "--limit", "2").stdout) == ITEMS[-2:]
    out = ok("show", "s1", "--url", url, "--limit", "1").stdout
    assert "latest 1 of 5 items" in out and "Sunny in Paris." in out and "Paris?" not in out


def test_show_unknown_session_is_a_one_line_error(url: str) -> None:
    fill(url, {"s1": ITEMS})
    fails("show", "nobody", "--url", url, match="no session 'nobody'")


# -- export and import ----------------------------------------------------------------------


def test_export_then_import_into_another_database_matches_item_for_item(
    url: str, tmp_path: Path
) -> None:
    fill(url, {"s1": ITEMS, "s2": [{"role": "user", "content": f"m{i} ✓"} for i in range(300)]})
    fill(url, {"empty": ITEMS[:1]})
    asyncio.run(_pop(url, "empty"))
    ok("export", "--url", url, "-o", "all.jsonl")
    lines = Path("all.jsonl").read_text(encoding="utf-8").splitlines()
    assert json.loads(lines[0]) == {"format": "agent-session-store", "version": 1}
    assert len(lines) == 1 + 3 + 305
    copy = f"sqlite+aiosqlite:///{tmp_path / 'copy.db'}"
    assert "imported 3 new sessions (305 items)" in ok("import", "all.jsonl", "--url", copy).stdout
    ok("export", "--url", copy, "-o", "again.jsonl")
    assert Path("again.jsonl").read_text(encoding="utf-8") == "\n".join(lines) + "\n"
    assert items_of(copy, "s1") == ITEMS
    assert json.loads(ok("sessions", "--url", copy, "--json").stdout) == json.loads(
        ok("sessions", "--url", url, "--json").stdout
    )


async def _pop(url: str, session_id: str) -> None:
    async with SessionStore(url) as store:
        await store.session(session_id).pop_item()


def test_export_selected_ids_to_stdout(url: str) -> None:
    fill(url, {"s1": ITEMS, "s2": ITEMS[:1]})
    out = ok("export", "s2", "--url", url, "-o", "-").stdout.splitlines()
    assert [json.loads(line).get("session") for line in out[1:]] == ["s2", None]


def test_export_unknown_id_is_an_error_and_writes_nothing(url: str) -> None:
    fill(url, {"s1": ITEMS})
    fails("export", "s1", "ghost", "--url", url, "-o", "out.jsonl", match="no session 'ghost'")
    assert not Path("out.jsonl").exists()


def test_import_twice_changes_nothing_and_replace_overwrites(url: str, tmp_path: Path) -> None:
    source = f"sqlite+aiosqlite:///{tmp_path / 'source.db'}"
    fill(source, {"s1": ITEMS})
    ok("export", "--url", source, "-o", "s1.jsonl")
    ok("import", "s1.jsonl", "--url", url)
    before = ok("export", "--url", url, "-o", "-").stdout
    second = ok("import", "s1.jsonl", "--url", url).stdout
    assert "imported 0 new sessions (0 items); skipped 1 already present" in second
    assert ok("export", "--url", url, "-o", "-").stdout == before
    fill(url, {"s1": [{"role": "user", "content": "later"}]})
    assert len(items_of(url, "s1")) == 6
    replaced = ok("import", "s1.jsonl", "--replace", "--url", url).stdout
    assert "replaced 1" in replaced
    assert ok("export", "--url", url, "-o", "-").stdout == before


def test_import_of_a_file_that_is_not_an_export_is_a_one_line_error(url: str) -> None:
    Path("notes.jsonl").write_text('{"hello": "world"}\n', encoding="utf-8")
    fails("import", "notes.jsonl", "--url", url, match="not an agent-session-store export")
    Path("broken.jsonl").write_text(
        '{"format":"agent-session-store","version":1}\n{"session":\n', encoding="utf-8"
    )
    fails("import", "broken.jsonl", "--url", url, match="broken.jsonl:2: not valid JSON")
    Path("odd.jsonl").write_text(
        '{"format":"agent-session-store","version":1}\n'
        '{"session":"s1","created_at":"2024-01-01T00:00:00+00:00",'
        '"updated_at":"2024-01-01T00:00:00+00:00"}\n'
        '{"item":{"role":"user","content":"hi"},"created_at":"2024-01-01T00:00:00+00:00"}\n'
        '{"note":"what is this"}\n',
        encoding="utf-8",
    )
    fails("import", "odd.jsonl", "--url", url, match="odd.jsonl:4: expected an item record")
    assert json.loads(ok("sessions", "--url", url, "--json").stdout)["sessions"] == []


def test_import_sdk_sqlite_copies_an_sdk_file_without_changing_it(
    url: str, tmp_path: Path
) -> None:
    agents = pytest.importorskip("agents")
    path = tmp_path / "sdk.db"

    async def write() -> None:
        for session_id, items in (("a", ITEMS), ("b", ITEMS[:2])):
            session = agents.SQLiteSession(session_id, str(path))
            await session.add_items(items)
            session.close()

    asyncio.run(write())
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    out = ok("import-sdk-sqlite", str(path), "--url", url).stdout
    assert "imported 2 new sessions (7 items)" in out
    assert items_of(url, "a") == ITEMS and items_of(url, "b") == ITEMS[:2]
    assert hashlib.sha256(path.read_bytes()).hexdigest() == digest
    assert "skipped 2 already present" in ok("import-sdk-sqlite", str(path), "--url", url).stdout


def test_import_sdk_sqlite_rejects_a_file_that_is_not_an_sdk_database(
    url: str, tmp_path: Path
) -> None:
    Path("text.db").write_text("not sqlite at all " * 100, encoding="utf-8")
    fails("import-sdk-sqlite", "text.db", "--url", url, match="cannot read text.db as SQLite")
    other = tmp_path / "other.db"
    fill(f"sqlite+aiosqlite:///{other}", {"x": ITEMS[:1]})
    fails("import-sdk-sqlite", str(other), "--url", url, "--messages-table", "msgs",
          match="not an SDK SQLiteSession file")


# -- prune ----------------------------------------------------------------------------------


def test_prune_is_a_dry_run_without_yes_and_deletes_with_it(url: str) -> None:
    fill(url, {"old": ITEMS, "older": ITEMS[:1]}, age_days=40)
    fill(url, {"fresh": ITEMS[:2]})
    dry = ok("prune", "--older-than", "30d", "--url", url).stdout
    assert "would delete 2 sessions (6 items)" in dry and "--yes" in dry
    assert len(json.loads(ok("sessions", "--url", url, "--json").stdout)["sessions"]) == 3
    done = ok("prune", "--older-than", "30d", "--yes", "--url", url).stdout
    assert "deleted 2 sessions (6 items)" in done
    remaining = json.loads(ok("sessions", "--url", url, "--json").stdout)["sessions"]
    assert [s["session_id"] for s in remaining] == ["fresh"]
    assert items_of(url, "fresh") == ITEMS[:2]


def test_prune_deletes_the_archived_items_of_the_sessions_it_deletes_and_only_those(
    url: str,
) -> None:
    async def archive_some() -> None:
        async with SessionStore(url, archive=True) as store:
            await store.create_tables()
            for session_id in ("old", "fresh"):
                chat = store.session(session_id)
                await chat.add_items(ITEMS)
                await chat.pop_item()  # one archived item each
                await chat.rewind(2)  # and two more
            s = store.sessions
            when = datetime.now(timezone.utc) - timedelta(days=40)
            async with store.engine.begin() as conn:
                await conn.execute(update(s).where(s.c.session_id == "old").values(updated_at=when))

    async def archived() -> list[str]:
        async with SessionStore(url) as store:
            a = store.archive_table
            async with store.engine.connect() as conn:
                rows = await conn.execute(select(a.c.session_id).order_by(a.c.id))
                return list(rows.scalars())

    asyncio.run(archive_some())
    assert asyncio.run(archived()) == ["old"] * 3 + ["fresh"] * 3
    ok("prune", "--older-than", "30d", "--url", url)  # a dry run deletes nothing archived
    assert asyncio.run(archived()) == ["old"] * 3 + ["fresh"] * 3
    done = ok("prune", "--older-than", "30d", "--yes", "--url", url).stdout
    assert "deleted 1 session (2 items)" in done
    assert asyncio.run(archived()) == ["fresh"] * 3
    assert items_of(url, "fresh") == ITEMS[:2]


def test_prune_rejects_an_age_it_cannot_read(url: str) -> None:
    result = invoke("prune", "--older-than", "a month", "--url", url)
    assert result.exit_code == 2
    assert "not an age such as 30d" in result.stderr


# -- demo -----------------------------------------------------------------------------------


def test_demo_plays_a_conversation_through_the_sdk_runner_and_shows_it(url: str) -> None:
    pytest.importorskip("agents")
    out = ok("demo", "--url", url).stdout
    assert "stored 11 items in session 'demo'" in out
    assert "tool call" in out and "The forecast says Tokyo: 18 °C, light rain." in out
    items = items_of(url, "demo")
    assert [i.get("type", i.get("role")) for i in items] == [
        "user", "reasoning", "function_call", "function_call_output", "message",
        "user", "function_call", "function_call_output", "message", "user", "message",
    ]
    ok("demo", "--url", url)
    assert items_of(url, "demo") == items


def test_demo_defaults_to_the_embedded_sqlite_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("agents")
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert "sqlite+aiosqlite:///agent_sessions.db" in ok("demo").stdout
    assert (tmp_path / "agent_sessions.db").exists()
    assert "demo" in ok("sessions").stdout


def test_the_installed_console_script_runs_the_readme_demo(tmp_path: Path) -> None:
    pytest.importorskip("agents")
    script = Path(sys.executable).parent / "agent-session-store"
    if not script.exists():
        pytest.skip(reason=f"no console script next to {sys.executable}; install the package")
    unset = ("AGENT_SESSION_STORE_URL", "OPENAI_API_KEY")
    env = {key: value for key, value in os.environ.items() if key not in unset}
    done = subprocess.run([str(script), "demo"], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    assert "stored 11 items in session 'demo'" in done.stdout
    assert (tmp_path / "agent_sessions.db").exists()


def test_demo_without_the_agents_sdk_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "agents", None)
    monkeypatch.delitem(sys.modules, "agent_session_store._demo", raising=False)
    fails("demo", match='pip install "agent-session-store[agents]"')


# -- where the database is, and what goes wrong ---------------------------------------------


def test_url_comes_from_the_environment_when_not_given(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    fill(url, {"from-env": ITEMS[:1]})
    monkeypatch.setenv("AGENT_SESSION_STORE_URL", url)
    assert "from-env" in ok("sessions").stdout


def test_unreachable_database_is_one_line_error_and_debug_shows_the_traceback() -> None:
    dead = "postgresql+asyncpg://postgres@127.0.0.1:9/nothing"
    fails("sessions", "--url", dead, match="cannot reach the database at postgresql+asyncpg://",
          code=3)
    result = invoke("sessions", "--url", dead, "--debug")
    assert result.exit_code != 0 and isinstance(result.exception, OSError)


def test_bad_url_is_a_one_line_error() -> None:
    fails("sessions", "--url", "nosuchdb://x/y", match="bad database URL 'nosuchdb://x/y'", code=3)
    fails("sessions", "--url", "not a url", match="bad database URL", code=3)


def test_bad_url_with_a_password_never_echoes_it() -> None:
    result = fails("sessions", "--url", "nosuchdb://me:s3cret@host/db", match="bad database URL",
                   code=3)
    assert "s3cret" not in result.stderr and "me:***@host" in result.stderr


def missing_driver_url() -> str:
    """A URL whose driver (asyncmy, which no extra of ours installs) is absent here."""
    if importlib.util.find_spec("asyncmy") is not None:
        pytest.skip(reason="asyncmy is installed here, so no driver of the mysql extra is missing")
    return "mysql+asyncmy://root@127.0.0.1/x"


def test_missing_driver_names_the_package_to_install() -> None:
    fails("sessions", "--url", missing_driver_url(), match="run: pip install asyncmy", code=3)


def test_password_is_hidden_in_error_messages() -> None:
    result = fails("sessions", "--url", "postgresql://me:s3cret@127.0.0.1:9/x",
                   match="cannot reach", code=3)
    assert "s3cret" not in result.stderr


EVERY_COMMAND = [
    ["sessions"], ["show", "s1"], ["export", "-o", "out.jsonl"], ["import", "in.jsonl"],
    ["import-sdk-sqlite", "sdk.db"], ["prune", "--older-than", "30d"], ["demo"],
    ["upgrade"], ["downgrade", "base", "--yes"], ["current"], ["check"], ["usage"],
]


@pytest.fixture(name="inputs")
def inputs_fixture(tmp_path: Path) -> None:
    """The files the import commands read, so they get as far as the database."""
    Path("in.jsonl").write_text('{"format":"agent-session-store","version":1}\n', "utf-8")
    fill(f"sqlite+aiosqlite:///{tmp_path / 'sdk.db'}", {"s1": ITEMS[:1]})


@pytest.mark.parametrize("command", EVERY_COMMAND, ids=lambda c: c[0])
@pytest.mark.usefixtures("inputs")
def test_every_command_reports_an_unreachable_database_in_one_line(command: list[str]) -> None:
    pytest.importorskip("agents")
    dead = "postgresql://postgres:pw@127.0.0.1:9/nothing"
    result = fails(*command, "--url", dead, match="cannot reach the database at postgresql+asyncpg",
                   code=3)
    assert "pw@" not in result.stderr
    assert not Path("out.jsonl").exists()


@pytest.mark.parametrize("command", EVERY_COMMAND, ids=lambda c: c[0])
@pytest.mark.usefixtures("inputs")
def test_every_command_names_the_package_for_a_missing_driver(command: list[str]) -> None:
    pytest.importorskip("agents")
    fails(*command, "--url", missing_driver_url(), match="run: pip install asyncmy", code=3)


@pytest.mark.sqlite
def test_an_export_that_fails_half_way_leaves_no_file(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'bad.db'}"
    fill(url, {"a": ITEMS, "b": ITEMS})

    async def corrupt() -> None:
        async with SessionStore(url) as store, store.engine.begin() as conn:
            # A timestamp no reader can parse, as a hand-edited file might hold.
            await conn.execute(
                update(store.sessions).where(store.sessions.c.session_id == "b")
                .values(updated_at=literal("not a time", String()))
            )

    asyncio.run(corrupt())
    result = invoke("export", "--url", url, "-o", "all.jsonl")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert not Path("all.jsonl").exists() and not Path("all.jsonl.partial").exists()


def test_the_command_list_in_docs_cli_md_is_the_one_help_prints() -> None:
    """docs/cli.md's block under "## Commands" names each command `--help` lists, no other."""
    doc = (Path(__file__).parent.parent / "docs" / "cli.md").read_text("utf-8")
    block = doc.split("## Commands", 1)[1].split("```text output", 1)[1].split("```", 1)[0]
    documented = {line.split()[1] for line in block.splitlines()
                  if line.startswith("agent-session-store ")}
    listed = set(cli.list_commands(click.Context(cli)))
    assert documented == listed
    helped = ok("--help").stdout
    assert all(f"  {name} " in helped for name in listed)
