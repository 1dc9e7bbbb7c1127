"""A test database that does not exist is named in one line, with the command that creates it."""

from __future__ import annotations

import pytest
from sqlalchemy.engine import make_url

from .conftest import reset_database, server_url


@pytest.mark.parametrize("dialect", [
    pytest.param("postgresql", marks=pytest.mark.postgresql),
    pytest.param("mariadb", marks=pytest.mark.mariadb),
])
async def test_a_missing_test_database_fails_in_one_line_saying_how_to_create_it(
    dialect: str,
) -> None:
    url = make_url(server_url(dialect)).set(database="ass_missing_db_for_this_test")
    rendered = url.render_as_string(hide_password=False)
    with pytest.raises(pytest.fail.Exception) as failed:
        await reset_database(rendered)
    message = str(failed.value)
    assert "'ass_missing_db_for_this_test' does not exist" in message
    assert ("createdb" if dialect == "postgresql" else "CREATE DATABASE") in message
    assert "\n" not in message
