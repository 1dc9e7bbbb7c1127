"""The records that export yields and import reads: building them, checking them.

A session header ``{"session": id, "format": 2, "created_at": ..., "updated_at": ..., "user_id":
..., "title": ..., "metadata": {...}, "expires_at": ...}`` is followed by its items, ``{"item":
{...}, "created_at": ...}`` (or ``{"raw": text, ...}`` for stored text that is not valid JSON).
Timestamps are ISO 8601 in UTC. Headers without ``format`` are format 1 (written before
revision 0002: no owner, title, metadata or expiry) and still import; a header of a format
newer than :data:`FORMAT` is refused rather than imported with fields dropped.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Iterable
from datetime import datetime, timezone
from typing import Any

from agent_session_store._json import DecodeError, check_session_id, check_user_id, decode, encode
from agent_session_store._record_sql import check_patch, check_title
from agent_session_store.errors import InvalidMetadataError, InvalidRecordError

Record = dict[str, Any]
#: The export format this version writes.
FORMAT = 2


def iso(value: datetime) -> str:
    """``value`` in UTC as ISO 8601, microseconds included."""
    return value.astimezone(timezone.utc).isoformat()


def item_record(text: str, created_at: datetime) -> Record:
    """The record of one stored item: decoded, or kept as ``raw`` text if it is not JSON."""
    try:
        return {"item": decode(text), "created_at": iso(created_at)}
    except (DecodeError, TypeError, RecursionError):
        return {"raw": text, "created_at": iso(created_at)}


def parse_time(value: object, what: str) -> datetime:
    """An aware datetime from an ISO 8601 string (naive values are taken to be UTC)."""
    if not isinstance(value, str):
        raise InvalidRecordError(f"{what} must be an ISO 8601 string, got {value!r}")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidRecordError(f"{what} {value!r} is not an ISO 8601 timestamp") from None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def header_record(
    session_id: str,
    created_at: datetime,
    updated_at: datetime,
    user_id: str | None = None,
    title: str | None = None,
    metadata: dict[str, Any] | None = None,
    expires_at: datetime | None = None,
) -> Record:
    """The header record of one session, in the current format."""
    return {
        "session": session_id,
        "format": FORMAT,
        "created_at": iso(created_at),
        "updated_at": iso(updated_at),
        "user_id": user_id,
        "title": title,
        "metadata": metadata or {},
        "expires_at": None if expires_at is None else iso(expires_at),
    }


def parse_header(record: object) -> Record:
    """The sessions-table row for a session header record, or raise."""
    if not isinstance(record, dict) or "session" not in record:
        raise InvalidRecordError(
            f"expected a session record such as {{\"session\": \"id\", ...}}, got {record!r:.80}"
        )
    try:
        session_id = check_session_id(record["session"])
    except (TypeError, ValueError) as exc:
        raise InvalidRecordError(f"bad session id in {record!r:.80}: {exc}") from None
    version = record.get("format", 1)
    if isinstance(version, bool) or version not in (1, FORMAT):
        raise InvalidRecordError(
            f"session {session_id!r} is in export format {version!r}; this version reads "
            f"formats 1 to {FORMAT}: import it with the agent-session-store that wrote it, "
            "or a newer one"
        )
    row: Record = {
        "session_id": session_id,
        "created_at": parse_time(record.get("created_at"), "created_at"),
        "updated_at": parse_time(record.get("updated_at"), "updated_at"),
    }
    if version == 1:
        return row
    user_id, title, expires = record.get("user_id"), record.get("title"), record.get("expires_at")
    if user_id is not None:
        try:
            check_user_id(user_id)
        except (TypeError, ValueError) as exc:
            raise InvalidRecordError(f"bad user_id of {session_id!r}: {exc}") from None
    try:
        row["title"] = check_title(title)
        row["metadata"] = check_patch(record.get("metadata") or {}) or None
    except InvalidMetadataError as exc:
        raise InvalidRecordError(f"session {session_id!r}: {exc}") from None
    row["user_id"] = user_id
    row["expires_at"] = None if expires is None else parse_time(expires, "expires_at")
    return row


def is_header(record: object) -> bool:
    """True for a session header record."""
    return isinstance(record, dict) and "session" in record


def parse_item(record: object, session_id: str) -> Record:
    """The messages-table row for an item record of ``session_id``, or raise."""
    if not isinstance(record, dict):
        raise InvalidRecordError(f"expected an item record {{\"item\": ...}}, got {record!r:.80}")
    if "item" in record:
        try:
            text = encode(record["item"])
        except (TypeError, ValueError, RecursionError) as exc:
            raise InvalidRecordError(f"item of {session_id!r} is not valid JSON: {exc}") from None
    elif isinstance(record.get("raw"), str):
        text = record["raw"]
    else:
        raise InvalidRecordError(f"expected an item record {{\"item\": ...}}, got {record!r:.80}")
    return {
        "session_id": session_id,
        "message_data": text,
        "created_at": parse_time(record.get("created_at"), "item created_at"),
    }


async def as_async(records: Iterable[Record] | AsyncIterable[Record]) -> AsyncIterator[Record]:
    """Iterate sync and async record sources alike."""
    if isinstance(records, AsyncIterable):
        async for record in records:
            yield record
    else:
        for record in records:
            yield record
