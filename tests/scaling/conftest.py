"""The scale-out servers: a 3-node Galera cluster and a PostgreSQL primary + streaming replica.

``.ci/run`` starts them (``.ci/galera.sh``, ``.ci/pg_replica.sh``) and passes their URLs in
environment variables. Locally a missing variable skips these tests with a reason; in CI
(``AGENT_SESSION_STORE_REQUIRE_SERVERS=1``) it fails them.
"""

from __future__ import annotations

import os

import pytest

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
