"""The wheel, installed (not editable) into a fresh venv and run from outside the repository."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool

from agent_session_store.migrate import head_revision

from .docblocks import ROOT as DOCS_ROOT
from .docblocks import recipe
from .test_host_app import HOST_APP, assert_host_schema_at_heads, host_alembic

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow

# Upgrade, check, write and read through the installed package; print where it was imported from.
SCRIPT = """
import asyncio, sys
import agent_session_store as ass
from agent_session_store import SessionStore, check, current, downgrade, upgrade

url = sys.argv[1]
names = {"sessions_table": "w_sessions", "messages_table": "w_messages"}

async def main():
    await upgrade(url, **names)
    await check(url, **names)
    async with SessionStore(url, check_schema=True, **names) as store:
        await store.session("s").add_items([{"n": 1}, {"n": 2}])
        assert await store.session("s").get_items() == [{"n": 1}, {"n": 2}]
    await downgrade(url, "base", **names)
    assert await current(url, **names) is None
    await upgrade(url, **names)
    print(ass.__file__)
    print(await current(url, **names))

asyncio.run(main())
"""


def run(*args: str | Path, cwd: Path) -> str:
    result = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a fresh venv holding the wheel built from this checkout."""
    base = tmp_path_factory.mktemp("wheel")
    pip = (sys.executable, "-m", "pip")
    run(*pip, "wheel", "-q", "--no-deps", "-w", base / "dist", ROOT, cwd=base)
    (wheel,) = (base / "dist").glob("agent_session_store-*.whl")
    venv.EnvBuilder(with_pip=True).create(base / "venv")
    python = base / "venv" / "bin" / "python"
    run(python, "-m", "pip", "install", "-q", f"{wheel}[postgres,mysql]", cwd=base)
    return python


def test_wheel_in_a_fresh_venv_upgrades_a_database_from_outside_the_repository(
    installed: Path, shared_db_url: str, tmp_path: Path
) -> None:
    out = run(installed, "-c", SCRIPT, shared_db_url, cwd=tmp_path).split()
    site_packages = installed.parent.parent / "lib"
    assert Path(out[0]).is_relative_to(site_packages)  # not the checkout
    assert out[1] == head_revision()


async def test_wheel_in_a_fresh_venv_serves_a_host_alembic_env_through_version_locations(
    installed: Path, shared_db_url: str, tmp_path: Path
) -> None:
    host = tmp_path / "host_app"
    shutil.copytree(HOST_APP, host, ignore=shutil.ignore_patterns("__pycache__"))
    host_alembic(shared_db_url, "upgrade", "heads", python=str(installed), cwd=host)
    await assert_host_schema_at_heads(shared_db_url)


def package_files(python: Path) -> dict[str, str]:
    """Every file of the installed package (bytecode caches aside) with its SHA-256."""
    folder = Path(run(python, "-c", "import agent_session_store as a; print(a.__file__)",
                      cwd=python.parent).strip()).parent
    return {
        str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and "__pycache__" not in path.parts
    }


async def test_the_documented_host_recipe_leaves_the_package_unchanged_and_current_agrees(
    installed: Path, shared_db_url: str, tmp_path: Path
) -> None:
    steps = recipe(DOCS_ROOT / "docs" / "migrations.md")
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "AGENT_SESSION_STORE_URL")}
    env.update(PATH=f"{installed.parent}{os.pathsep}{env['PATH']}", DATABASE_URL=shared_db_url)

    def shell(step: str) -> str:
        done = subprocess.run(["bash", "-e", "-"], input=steps[step].text, cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 0, f"{steps[step].where}:\n{done.stdout}{done.stderr}"
        return done.stdout

    before = package_files(installed)
    shell("init")
    for name in ("alembic.ini", "models.py", "migrations/env.py"):
        (tmp_path / name).write_text(steps[name].text, "utf-8")
    shell("branch")
    shell("next")
    looked = shell("look")

    assert package_files(installed) == before
    host_revisions = (tmp_path / "migrations" / "versions").glob("*.py")
    # Named <random id>_<message>.py, in the host's folder.
    assert sorted(p.name.split("_", 1)[1] for p in host_revisions) == ["host_tables.py",
                                                                       "next_change.py"]
    head = head_revision()
    assert f"current: {head}" in looked and f"is up to date at revision {head}" in looked
    engine = create_async_engine(shared_db_url, poolclass=NullPool)
    async with engine.connect() as conn:
        tables = set(await conn.run_sync(lambda c: inspect(c).get_table_names()))
    await engine.dispose()
    # One version table, the host's: neither current nor check made one of ours.
    assert tables == {"alembic_version", "chat_sessions", "chat_messages", "chat_sessions_usage",
                      "chat_messages_archive", "chat_messages_keys", "conversations"}
