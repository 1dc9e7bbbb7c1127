"""What the command line says when something is off: URLs, files, pipes, silent servers."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from agent_session_store.cli import cli

from .test_cli import (  # noqa: F401 - fixtures used here too
    ITEMS,
    clean_env_fixture,
    fails,
    fill,
    invoke,
    items_of,
    ok,
    url_fixture,
)

CLI = [sys.executable, "-m", "agent_session_store"]


# -- URLs -----------------------------------------------------------------------------------


@pytest.mark.postgresql
def test_a_paas_postgres_url_is_accepted() -> None:
    from .conftest import server_url

    url = server_url("postgresql").replace("postgresql+asyncpg://", "postgres://")
    asyncio.run(_reset(url.replace("postgres://", "postgresql+asyncpg://")))
    ok("upgrade", "--url", url)
    assert "no sessions" in ok("sessions", "--url", url).stdout


async def _reset(url: str) -> None:
    from .conftest import reset_database

    await reset_database(url)


@pytest.mark.sqlite
@pytest.mark.parametrize("url, driver", [
    ("postgresql+psycopg2://u@127.0.0.1/x", "psycopg2"),
    ("sqlite+pysqlite:///x.db", "pysqlite"),
    ("mysql+pymysql://u@127.0.0.1/x", "pymysql"),
])
def test_a_sync_driver_is_named_with_the_url_that_works(url: str, driver: str) -> None:
    result = fails("sessions", "--url", url, match=f"{driver!r} has no asyncio support", code=3)
    assert "leave the driver out" in result.stderr and "pip install" not in result.stderr


@pytest.mark.sqlite
@pytest.mark.parametrize("url", ["mssql://u@127.0.0.1/x", "oracle://u@127.0.0.1/x"])
def test_an_unsupported_database_is_one_line(url: str) -> None:
    fails("sessions", "--url", url, match="SQLite, PostgreSQL or MySQL/MariaDB", code=3)


# -- files and pipes ------------------------------------------------------------------------


def test_export_into_a_missing_folder_names_the_folder_not_the_database(url: str) -> None:
    fill(url, {"s1": ITEMS})
    result = fails("export", "--url", url, "-o", "missing/dir/x.jsonl",
                   match="there is no directory 'missing/dir'")
    assert "database" not in result.stderr


@pytest.mark.sqlite
def test_export_to_a_pipe_closed_early_exits_quietly(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'many.db'}"
    fill(url, {f"s{n}": ITEMS for n in range(300)})
    shell = f"{' '.join(CLI)} export --url '{url}' -o - | head -1"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", shell], capture_output=True,
                          text=True, timeout=120, check=False, cwd=tmp_path)
    assert json.loads(done.stdout) == {"format": "agent-session-store", "version": 1}
    assert done.stderr == ""
    assert done.returncode == 141  # as for any tool stopped by SIGPIPE


def test_import_reads_stdin_and_export_json_counts(url: str, tmp_path: Path) -> None:
    source = f"sqlite:///{tmp_path / 'source.db'}"
    fill(source, {"s1": ITEMS, "s2": ITEMS[:1]})
    counts = json.loads(ok("export", "--url", source, "-o", "all.jsonl", "--json").stdout)
    assert counts == {"sessions": 2, "items": 6, "output": "all.jsonl"}
    result = CliRunner().invoke(
        cli, ["import", "-", "--url", url, "--json"], input=Path("all.jsonl").read_text("utf-8")
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"created": 2, "replaced": 0, "skipped": 0, "items": 6}
    assert items_of(url, "s1") == ITEMS


def test_an_aborted_import_says_how_many_sessions_it_committed(url: str, tmp_path: Path) -> None:
    source = f"sqlite:///{tmp_path / 'source.db'}"
    fill(source, {"a": ITEMS, "b": ITEMS})
    ok("export", "--url", source, "-o", "two.jsonl")
    lines = Path("two.jsonl").read_text("utf-8").splitlines()
    Path("cut.jsonl").write_text("\n".join([*lines[:-1], '{"note": "torn"}']) + "\n", "utf-8")
    result = fails("import", "cut.jsonl", "--url", url, match=f"cut.jsonl:{len(lines)}: ")
    assert "(imported 1 new session (5 items) before it, committed; run again" in result.stderr
    assert items_of(url, "a") == ITEMS
    assert items_of(url, "b") == []  # the torn session was rolled back whole


def test_counts_of_one_read_in_the_singular(url: str) -> None:
    fill(url, {"only": ITEMS[:1]})
    assert "exported 1 session, 1 item to one.jsonl" in ok(
        "export", "--url", url, "-o", "one.jsonl").stdout
    assert "would delete 0 sessions (0 items)" in ok(
        "prune", "--url", url, "--older-than", "30d").stdout
    pruned = json.loads(ok("prune", "--url", url, "--older-than", "0s", "--yes", "--json").stdout)
    assert (pruned["deleted"], pruned["sessions"], pruned["items"]) == (True, 1, 1)


def test_the_cursor_hint_repeats_url_limit_and_table_names(url: str) -> None:
    ok("upgrade", "--url", url, "--sessions-table", "c_s", "--messages-table", "c_m")
    _fill_custom(url, ["a", "b", "c"])
    page = ok("sessions", "--url", url, "--limit", "2", "--sessions-table", "c_s",
              "--messages-table", "c_m").stdout
    hint = next(line for line in page.splitlines() if line.startswith("more: "))
    assert "--url '" in hint and "--limit 2" in hint
    assert "--sessions-table c_s --messages-table c_m" in hint


def _fill_custom(url: str, names: list[str]) -> None:
    from agent_session_store import SessionStore

    async def run() -> None:
        async with SessionStore(url, sessions_table="c_s", messages_table="c_m") as store:
            for name in names:
                await store.session(name).add_items(ITEMS[:1])

    asyncio.run(run())


# -- a server that accepts and never answers -----------------------------------------------


@pytest.fixture(name="silent_port")
def silent_port_fixture() -> Iterator[int]:
    """A loopback port that accepts connections and never says a word."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


@pytest.mark.sqlite  # no database server involved: the silent one is ours
@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
def test_a_silent_server_fails_within_the_connect_timeout(silent_port: int, scheme: str) -> None:
    url = f"{scheme}://u@127.0.0.1:{silent_port}/x"
    started = time.monotonic()
    fails("check", "--url", url, "--connect-timeout", "1", match="within 1s", code=3)
    assert time.monotonic() - started < 10  # without the deadline: 60 s or forever
