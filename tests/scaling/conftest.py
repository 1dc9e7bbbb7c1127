"""The scale-out servers: a 3-node Galera cluster and a PostgreSQL primary + streaming replica.

``.ci/run`` starts them (``.ci/galera.sh``, ``.ci/pg_replica.sh``) and passes their URLs in
environment variables. Locally a missing variable skips these tests with a reason; in CI
(``AGENT_SESSION_STORE_REQUIRE_SERVERS=1``) it fails them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import make_url

from tests.conftest import reset_database

GALERA_ENV = "AGENT_SESSION_STORE_TEST_GALERA_URLS"
REQUIRE_ENV = "AGENT_SESSION_STORE_REQUIRE_SERVERS"


def _urls(env: str, what: str) -> list[str]:
    value = os.environ.get(env, "")
    urls = [u for u in value.replace(" ", ",").split(",") if u]
    if not urls:
        message = f"{env} is not set; the {what} tests need it (.ci/run starts one)"
        if os.environ.get(REQUIRE_ENV) == "1":
            pytest.fail(message)
        pytest.skip(reason=message)
    return urls


@pytest.fixture
async def galera_urls() -> list[str]:
    """One URL per Galera node, all on the same (emptied) database."""
    urls = _urls(GALERA_ENV, "Galera")
    await reset_database(urls[0])
    return urls


PG_REPLICA_ENV = "AGENT_SESSION_STORE_TEST_PG_REPLICA_URLS"
PG_REPLICA_SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "pg_replica.sh"


@pytest.fixture
async def pg_replica_urls() -> tuple[str, str]:
    """The primary's and the streaming replica's URLs (``.ci/run``'s pair), database emptied."""
    primary, replica = _urls(PG_REPLICA_ENV, "PostgreSQL replica")[:2]
    await reset_database(primary)
    return primary, replica


class ReplicaPair:
    """A throwaway primary + streaming replica of our own (``.ci/pg_replica.sh``).

    For the failover tests: a promotion cannot be undone, so each test starts its own pair.
    The directory is made with ``mkdtemp`` under the system temporary directory, because the
    servers run as the ``postgres`` user, who cannot enter pytest's ``tmp_path`` (mode 700).
    """

    def __init__(self, synchronous: bool) -> None:
        self.synchronous = synchronous
        self.dir = Path(tempfile.mkdtemp(prefix="ass-pg-pair-"))
        self.primary = self.replica = ""
        self.ports: tuple[int, int] = (0, 0)

    def run(self, command: str, timeout: float = 90) -> str:
        """Run ``pg_replica.sh COMMAND DIR`` (bounded), returning its output."""
        env = {**os.environ, "PG_REPLICA_SYNCHRONOUS": "1" if self.synchronous else "0"}
        done = subprocess.run(
            ["bash", str(PG_REPLICA_SCRIPT), command, str(self.dir)],
            capture_output=True, text=True, timeout=timeout, env=env, check=False,
        )
        if done.returncode != 0:
            raise AssertionError(f"pg_replica.sh {command} failed: {done.stderr[-2000:]}")
        return done.stdout

    def start(self) -> None:
        self.primary, self.replica = self.run("start").split()[-2:]
        self.ports = (make_url(self.primary).port or 0, make_url(self.replica).port or 0)

    def multi_host_url(self) -> str:
        """Both servers in one URL; asyncpg connects to whichever is read-write."""
        hosts = "&".join(f"host=127.0.0.1:{port}" for port in self.ports)
        return (
            f"postgresql+asyncpg://postgres@/agent_session_store_test?{hosts}"
            "&target_session_attrs=read-write"
        )

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self.run("stop")
        shutil.rmtree(self.dir, ignore_errors=True)


def _pair_or_skip() -> None:
    if PG_REPLICA_SCRIPT.exists() and list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        return
    message = "the PostgreSQL server binaries (initdb, pg_basebackup) are not installed"
    if os.environ.get(REQUIRE_ENV) == "1":
        pytest.fail(message)
    pytest.skip(reason=message)


@pytest.fixture
def replica_pair_factory() -> Iterator[Callable[[bool], ReplicaPair]]:
    """Start private pairs (``synchronous`` replication or not); all stopped at the end."""
    _pair_or_skip()
    pairs: list[ReplicaPair] = []

    def start(synchronous: bool) -> ReplicaPair:
        pair = ReplicaPair(synchronous)
        pairs.append(pair)
        pair.start()
        return pair

    yield start
    for pair in pairs:
        pair.stop()


#: Lines of figures the scale-out tests measured, printed at the end of the run.
FIGURES: list[str] = []


def report(line: str) -> None:
    """Print a figure now (seen with ``-s``) and in the run's closing summary."""
    print(f"\n{line}")
    FIGURES.append(line)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if FIGURES:
        terminalreporter.section("scale-out figures")
        for line in FIGURES:
            terminalreporter.write_line(line)
