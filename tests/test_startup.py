"""The command line starts without importing Alembic: only migration commands pay for it."""

from __future__ import annotations

import subprocess
import sys

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
