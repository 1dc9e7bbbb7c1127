"""The cursors of ``list_sessions``: an opaque, URL-safe form of the last row's keyset key.

A cursor holds the (updated_at, session_id) pair a page ended at; the next page starts after
it. Both listings (the store's records and the admin component's) page the same way.
"""

from __future__ import annotations

import base64
import binascii
import json
from datetime import datetime

from agent_session_store._records import iso
from agent_session_store.errors import InvalidArgumentError


def encode_cursor(when: datetime | str, session_id: str) -> str:
    """The cursor for a page that ended at ``(when, session_id)``."""
    key = when if isinstance(when, str) else iso(when)
    text = json.dumps([key, session_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, raw: bool) -> tuple[datetime | str, str]:
    """The key a cursor holds: text when ``raw`` (SQLite), else a datetime."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        when, session_id = json.loads(text)
        if not isinstance(when, str) or not isinstance(session_id, str):
            raise TypeError
        return (when if raw else datetime.fromisoformat(when)), session_id
    except (binascii.Error, ValueError, TypeError):
        message = f"cursor {cursor!r:.40} was not returned by list_sessions"
        raise InvalidArgumentError(message) from None
