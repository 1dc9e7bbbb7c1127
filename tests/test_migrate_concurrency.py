"""Several processes upgrading one database at the same moment."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest
from alembic.script import ScriptDirectory

from agent_session_store import SessionStore, check, current
from agent_session_store.migrate import _script_location, head_revision

PROCESSES = 4

# Each worker waits for a common start time, upgrades, and prints how many revisions it ran.
# Every CREATE is slowed down, so that without a lock all workers would be mid-migration at once.
WORKER = """
import asyncio, logging, sys, time
from sqlalchemy import event
from sqlalchemy.ext.asyncio import create_async_engine
from sqlalchemy.pool import NullPool
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
engine = create_async_engine(url, poolclass=NullPool)

@event.listens_for(engine.sync_engine, "before_cursor_execute")
def slow_down(conn, cursor, statement, *args):
    if statement.lstrip().upper().startswith("CREATE"):
        time.sleep(0.3)

async def main():
    await upgrade(engine, sessions_table="race_sessions", messages_table="race_messages")
    await engine.dispose()

time.sleep(max(0.0, start_at - time.time()))
asyncio.run(main())
print(len(ran))
"""


@pytest.mark.slow
async def test_concurrent_upgrades_from_several_processes_apply_each_revision_once(
    shared_db_url: str,
) -> None:
    start_at = str(time.time() + 4.0)  # after every interpreter has imported the package
    workers = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-c",
            WORKER,
            shared_db_url,
            start_at,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        for _ in range(PROCESSES)
    ]
    outputs = [await asyncio.wait_for(w.communicate(), timeout=120) for w in workers]
    for worker, (_, err) in zip(workers, outputs, strict=True):
        assert worker.returncode == 0, err.decode()
    revisions_run = [int(out.split()[-1]) for out, _ in outputs]
    ours = len(list(ScriptDirectory(_script_location()).walk_revisions()))
    # One process ran every revision, the rest waited and found nothing to do.
    assert sorted(revisions_run) == [0] * (len(revisions_run) - 1) + [ours], revisions_run
    names = {"sessions_table": "race_sessions", "messages_table": "race_messages"}
    assert await current(shared_db_url, **names) == head_revision()
    await check(shared_db_url, **names)
    async with SessionStore(shared_db_url, **names) as store:
        await store.session("s").add_items([{"n": 1}])
        assert await store.session("s").get_items() == [{"n": 1}]
