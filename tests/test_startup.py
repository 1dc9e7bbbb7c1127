"""The command line starts fast: `--version` imports no SQLAlchemy, and only migrations Alembic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.sqlite
@pytest.mark.parametrize("module", ["agent_session_store", "agent_session_store.cli"])
def test_importing_the_package_or_the_cli_does_not_import_alembic(module: str) -> None:
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.startswith('alembic')))"
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


@pytest.mark.sqlite
def test_migration_names_still_import_from_the_package_on_first_use() -> None:
    import agent_session_store as ass
    from agent_session_store import migrate

    assert ass.upgrade is migrate.upgrade
    assert ass.migrate is migrate
    assert sorted(ass.__all__) == ass.__all__
    assert all(hasattr(ass, name) for name in ass.__all__)
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        _ = ass.nonsense  # type: ignore[attr-defined]


def _modules_after(code: str, *prefixes: str) -> list[str]:
    """Run ``code`` in a fresh interpreter; the modules of ``prefixes`` it imported."""
    probe = (
        "import sys\n" + code + "\n"
        f"print(sorted({{m.split('.')[0] for m in sys.modules}} & {set(prefixes)!r}))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    return eval(done.stdout.strip().splitlines()[-1])  # a list literal we printed


_RUN_CLI = """
from agent_session_store.cli import main
sys.argv = ["agent-session-store", *{args!r}]
try:
    main()
except SystemExit:
    pass
"""


@pytest.mark.sqlite
def test_importing_the_package_imports_nothing_of_sqlalchemy() -> None:
    assert _modules_after("import agent_session_store", "sqlalchemy", "rich", "alembic") == []


@pytest.mark.sqlite
def test_cli_version_imports_neither_sqlalchemy_nor_rich_nor_alembic() -> None:
    code = _RUN_CLI.format(args=["--version"])
    assert _modules_after(code, "sqlalchemy", "rich", "alembic") == []


@pytest.mark.sqlite
def test_sessions_on_an_empty_database_at_head_imports_neither_alembic_nor_rich(
    tmp_path: Path,
) -> None:
    import asyncio

    from agent_session_store import migrate

    url = f"sqlite+aiosqlite:///{tmp_path / 'empty.db'}"
    asyncio.run(migrate.upgrade(url))
    code = _RUN_CLI.format(args=["sessions", "--url", url])
    assert _modules_after(code, "alembic", "rich") == []
    listed = subprocess.run(
        [sys.executable, "-m", "agent_session_store", "sessions", "--url", url],
        capture_output=True, text=True, timeout=60,
    )
    assert (listed.returncode, listed.stdout.strip()) == (0, f"no sessions at {url}")


@pytest.mark.sqlite
def test_sessions_on_a_database_behind_head_still_says_what_to_run(tmp_path: Path) -> None:
    import asyncio

    from agent_session_store import migrate

    url = f"sqlite+aiosqlite:///{tmp_path / 'old.db'}"
    asyncio.run(migrate.upgrade(url, "agent_session_store_0001"))
    listed = subprocess.run(
        [sys.executable, "-m", "agent_session_store", "sessions", "--url", url],
        capture_output=True, text=True, timeout=60,
    )
    assert listed.returncode == 1
    assert "upgrade" in listed.stderr


@pytest.mark.sqlite
def test_the_head_known_without_alembic_is_the_newest_shipped_revision() -> None:
    from agent_session_store import _migration, migrate

    assert migrate.head_revision() == _migration.HEAD_REVISION


@pytest.mark.sqlite
def test_every_command_is_listed_and_imports_from_its_module() -> None:
    import click

    from agent_session_store.cli import COMMANDS, cli

    ctx = click.Context(cli)
    assert cli.list_commands(ctx) == sorted(COMMANDS)
    for name in COMMANDS:
        command = cli.get_command(ctx, name)
        assert isinstance(command, click.Command) and command.name == name
