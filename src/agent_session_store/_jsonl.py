"""The export file: JSON Lines, a format line first, then each session's header and items.

Reading is a generator over the file, so an import never holds more than one line at a time.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import IO, Any

from agent_session_store.errors import InvalidRecordError

FORMAT = "agent-session-store"
VERSION = 1
HEADER: dict[str, Any] = {"format": FORMAT, "version": VERSION}

class InvalidExportFileError(InvalidRecordError):
    """The file itself is not a readable export (format line, JSON syntax)."""


_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def dump_line(record: dict[str, Any]) -> str:
    """One record as a line of compact JSON, newline included."""
    return _encoder.encode(record) + "\n"


def read_records(
    stream: IO[str], name: str, on_line: Callable[[int, int], None] | None = None
) -> Iterator[dict[str, Any]]:
    """Yield the records of an export file, checking its format line first.

    Args:
        stream: The open text file.
        name: The file's name, for error messages.
        on_line: Called with each line's number and size in bytes (for progress bars and
            error messages).

    Raises:
        InvalidExportFileError: the file is not an export of a version this package reads, or
            a line is not a JSON object.
    """
    number = 0
    for number, line in enumerate(stream, start=1):
        if on_line is not None:
            on_line(number, len(line.encode("utf-8")))
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise InvalidExportFileError(f"{name}:{number}: not valid JSON ({exc})") from None
        if not isinstance(record, dict):
            raise InvalidExportFileError(f"{name}:{number}: expected a JSON object")
        if number == 1:
            if record.get("format") != FORMAT:
                raise InvalidExportFileError(
                    f"{name} is not an agent-session-store export: its first line should be "
                    f"{dump_line(HEADER).strip()}"
                )
            if record.get("version") != VERSION:
                raise InvalidExportFileError(
                    f"{name} is export format version {record.get('version')!r}; this "
                    f"agent-session-store reads version {VERSION}: upgrade the package"
                )
            continue
        yield record
    if number == 0:
        raise InvalidExportFileError(f"{name} is empty: not an agent-session-store export")
