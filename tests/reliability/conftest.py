"""Fixtures of the reliability suite, and the table of figures it prints at the end.

Every scenario records what it did (runs, items written, faults injected, items lost) with
the ``figures`` fixture; the terminal summary prints the table that ``docs/reliability.md``
quotes, and ``AGENT_SESSION_STORE_RELIABILITY_REPORT=path`` also writes it as JSON.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any

import pytest

from .figures import Figures, recorded
from .servers import PrivateMariaDB, PrivatePostgres

REPORT_ENV = "AGENT_SESSION_STORE_RELIABILITY_REPORT"


@pytest.fixture(scope="session")
def figures() -> Figures:
    """The recorder of the figures table."""
    return Figures()


@pytest.fixture(params=["postgresql", "mariadb"])
def private_server(request: pytest.FixtureRequest) -> Iterator[PrivatePostgres | PrivateMariaDB]:
    """A running private server of each kind, removed afterwards."""
    server: PrivatePostgres | PrivateMariaDB = (
        PrivatePostgres() if request.param == "postgresql" else PrivateMariaDB()
    )
    request.node.add_marker(getattr(pytest.mark, request.param))
    try:
        server.start()
        yield server
    finally:
        server.remove()


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not recorded:
        return
    write = terminalreporter.write_line
    write("")
    write("reliability figures")
    write("| scenario | database | runs | items | faults | lost | seconds | note |")
    write("|---|---|---:|---:|---:|---:|---:|---|")
    for f in recorded:
        write(
            f"| {f.scenario} | {f.database} | {f.runs} | {f.items} | {f.faults} | {f.lost} "
            f"| {f.seconds} | {f.note} |"
        )
    path = os.environ.get(REPORT_ENV)
    if path:
        with open(path, "w", encoding="utf-8") as out:
            json.dump([asdict(f) for f in recorded], out, indent=1)
