"""Exactly-once ``add_items``: every batch carries a key that the database refuses twice.

Each ``add_items`` writes its batch's idempotency key (the caller's, or one generated per call)
into the keys table in the same transaction as the items; the key table's primary key
``(session_id, idempotency_key)`` refuses a second row. That turns an unknown outcome into a
known one:

* when the connection is lost at the commit point (``CommitOutcomeUnknownError`` from the
  transport), the same write is sent again with the same key: either it stores the batch
  (the first attempt never committed) or the database refuses the key (it did), and then the
  batch is there, once;
* a write refused for a key already stored (``IntegrityError``) is a success when the key is
  found: the batch was stored by an earlier call with that key.

Only when the database cannot be reached for :data:`RESOLVE_SECONDS` after a loss does the
caller see ``CommitOutcomeUnknownError``, carrying the key: calling ``add_items`` again with
``idempotency_key=`` that key stores the batch at most once.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import Awaitable, Callable

from sqlalchemy.exc import DBAPIError, IntegrityError

from agent_session_store.errors import (
    ArgumentTypeError,
    CommitOutcomeUnknownError,
    DatabaseConnectionError,
    InvalidArgumentError,
)

logger = logging.getLogger("agent_session_store")

#: Longest idempotency key, in characters (the keys table's column is ``VARCHAR(255)``).
MAX_KEY = 255
#: Seconds a write whose commit outcome is unknown keeps trying to reach the database to
#: settle it, before the caller is told (with the key to retry with).
RESOLVE_SECONDS = 15.0
#: Longest pause between two of those attempts.
_MAX_PAUSE = 0.5


def new_key() -> str:
    """A fresh key for one ``add_items`` call: 32 hex digits of a random UUID."""
    return uuid.uuid4().hex


def check_key(key: object) -> str:
    """``key`` if it is a usable idempotency key, else raise (nothing is sent)."""
    if not isinstance(key, str):
        raise ArgumentTypeError(
            f"idempotency_key must be a str, not {type(key).__name__}"
        )
    if not 0 < len(key) <= MAX_KEY:
        raise InvalidArgumentError(
            f"idempotency_key must have 1 to {MAX_KEY} characters, not {len(key)}"
        )
    return key


async def write_once(
    write: Callable[[], Awaitable[None]],
    stored: Callable[[], Awaitable[bool]],
    key: str,
    session_id: str,
) -> None:
    """Run ``write`` (which records ``key``) until the batch is known stored, or a real failure.

    ``stored`` tells whether ``key`` is in the database for ``session_id``.
    """
    in_doubt: BaseException | None = None
    deadline = 0.0
    attempt = 0
    while True:
        try:
            try:
                await write()
                return
            except IntegrityError:
                if await stored():
                    logger.debug(
                        "add_items for %r: key %r already stored; not stored again",
                        session_id,
                        key,
                    )
                    return
                raise
        except CommitOutcomeUnknownError as exc:
            in_doubt = in_doubt or exc
            last: BaseException = exc
        except DatabaseConnectionError as exc:
            if in_doubt is None:
                raise  # nothing of this call was ever sent
            last = exc
        except DBAPIError as exc:
            if in_doubt is None or not exc.connection_invalidated:
                raise  # a real failure, or a database that refuses the write
            last = exc
        if not deadline:
            deadline = time.monotonic() + RESOLVE_SECONDS
            logger.info(
                "add_items for %r: connection lost at the commit point; sending it again "
                "with its idempotency key, which the database stores once",
                session_id,
            )
        elif time.monotonic() >= deadline:
            raise _unresolved(key, last) from last
        else:
            await asyncio.sleep(random.uniform(0, min(_MAX_PAUSE, 0.02 * 2**attempt)))
        attempt += 1


def _unresolved(key: str, last: BaseException) -> CommitOutcomeUnknownError:
    error = CommitOutcomeUnknownError(
        f"the database connection was lost while committing and the database could not be "
        f"reached for {RESOLVE_SECONDS:g} s to settle it; the batch may or may not have "
        f"been saved. Call add_items again with idempotency_key={key!r}: it is stored at "
        f"most once ({type(last).__name__}: {last})"
    )
    error.idempotency_key = key
    return error
