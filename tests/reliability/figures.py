"""The figures table of the reliability suite: one row per scenario and database."""

from __future__ import annotations

from dataclasses import dataclass

import pytest


@dataclass
class Figure:
    scenario: str
    database: str
    runs: int
    items: int
    faults: int
    lost: int
    seconds: float = 0.0
    note: str = ""


#: Every row recorded in this pytest run, printed by the suite's terminal summary.
recorded: list[Figure] = []


class Figures:
    """Records one row of the reliability table per scenario and database."""

    def add(
        self,
        scenario: str,
        database: str,
        *,
        runs: int,
        items: int,
        faults: int = 0,
        lost: int = 0,
        seconds: float = 0.0,
        note: str = "",
    ) -> None:
        recorded.append(
            Figure(scenario, database, runs, items, faults, lost, round(seconds, 3), note)
        )


def database_of(request: pytest.FixtureRequest) -> str:
    """The database kind a parametrized test runs on: ``sqlite_file``, ``postgresql``..."""
    callspec = getattr(request.node, "callspec", None)
    if callspec is None:
        return "-"
    for name in ("shared_db_url", "db_url", "private_server"):
        if name in callspec.params:
            return str(callspec.params[name])
    return "-"
