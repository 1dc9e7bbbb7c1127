"""Migrations on a MariaDB Galera Cluster: processes on different nodes upgrading at once.

``GET_LOCK`` is local to one node, so the lock that keeps two upgrades apart must be one the
whole cluster agrees on.
"""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from agent_session_store import SessionStore, check, current
from agent_session_store.migrate import head_revision
from tests.conftest import reset_database
from tests.scaling.conftest import report

PROCESSES_PER_NODE = 2
ROUNDS = 3

# Each worker waits for a common start time, upgrades through its node, and prints how many
# revisions it ran (or the error it met).
WORKER = """
import asyncio, logging, sys, time
from agent_session_store import upgrade

ran = []
class Count(logging.Handler):
    def emit(self, record):
        if record.getMessage().startswith("Running upgrade"):
            ran.append(record.getMessage())
logger = logging.getLogger("alembic.runtime.migration")
logger.setLevel(logging.INFO)
logger.addHandler(Count())
url, start_at = sys.argv[1], float(sys.argv[2])
time.sleep(max(0.0, start_at - time.time()))
asyncio.run(upgrade(url))
print(len(ran))
"""


async def _upgrade_everywhere(urls: list[str]) -> tuple[list[int], list[str]]:
    start_at = str(time.time() + 3.0)  # after every interpreter has imported the package
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WORKER,
            url,
            start_at,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for url in urls
        for _ in range(PROCESSES_PER_NODE)
    ]
    try:
        outputs = await asyncio.wait_for(
            asyncio.gather(*(w.communicate() for w in workers)), timeout=120
        )
    except TimeoutError:
        done = [w.returncode for w in workers]
        raise AssertionError(f"upgrades still waiting after 120 s; exit codes: {done}") from None
    finally:
        for worker in workers:
            if worker.returncode is None:
                worker.kill()
                await worker.wait()
    ran, failures = [], []
    for worker, (out, err) in zip(workers, outputs, strict=True):
        if worker.returncode == 0:
            ran.append(int(out.split()[-1]))
        else:
            lines = err.decode().strip().splitlines()
            errors = [line for line in lines if "Error" in line and "sqlalche.me" not in line]
            ours = [line.strip() for line in lines if "agent_session_store" in line]
            failures.append(f"{(errors or lines)[-1]} at {ours[-2:]}")
    return ran, failures


@pytest.mark.slow
async def test_concurrent_upgrades_on_every_galera_node_apply_each_revision_once(
    galera_urls: list[str],
) -> None:
    tried = failed = 0
    for round_ in range(ROUNDS):
        if round_:
            await reset_database(galera_urls[0])
        ran, failures = await _upgrade_everywhere(galera_urls)
        tried += len(ran) + len(failures)
        failed += len(failures)
        assert not failures, failures
        # One process ran every revision; every other one found the work done.
        assert sorted(ran)[-1] >= 1 and sum(ran) == sorted(ran)[-1], ran
        for url in galera_urls:
            assert await current(url) == head_revision()
            await check(url)
    report(f"galera upgrades: {tried} tried, {failed} failed")
    async with SessionStore(galera_urls[1]) as store:
        await store.session("s").add_items([{"n": 1}])
    async with SessionStore(galera_urls[2]) as store:
        assert await store.session("s").get_items() == [{"n": 1}]

