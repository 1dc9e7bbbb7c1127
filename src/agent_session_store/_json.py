"""Validation and JSON encoding of session ids, items and limits.

Everything here runs before a connection is taken, so bad input never reaches the database.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from agent_session_store.errors import ArgumentTypeError, InvalidArgumentError, InvalidItemError

MAX_SESSION_ID_LENGTH = 255

_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
encode = _encoder.encode
#: For items holding lone surrogates, which UTF-8 cannot carry but JSON escapes can.
_encode_ascii = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode
_has_surrogate = re.compile("[\ud800-\udfff]").search
decode = json.loads
DecodeError = json.JSONDecodeError


def check_session_id(session_id: object, name: str = "session_id") -> str:
    """Return ``session_id`` if it is a usable session id, else raise.

    ``name`` is what the messages call the value: owners' ids (``user_id``) follow the same
    rules, since they fill a column of the same type and compare the same way.

    Raises:
        TypeError: ``session_id`` is not a ``str``.
        ValueError: it is empty, longer than 255 characters, contains a NUL character, or
            ends with a space.
    """
    if not isinstance(session_id, str):
        raise ArgumentTypeError(f"{name} must be a str, not {type(session_id).__name__}")
    if not session_id:
        raise InvalidArgumentError(f"{name} must not be empty")
    if len(session_id) > MAX_SESSION_ID_LENGTH:
        raise InvalidArgumentError(
            f"{name} is {len(session_id)} characters long; the limit is {MAX_SESSION_ID_LENGTH}"
        )
    if "\x00" in session_id:
        raise InvalidArgumentError(f"{name} must not contain NUL characters")
    if session_id.endswith(" "):
        # MySQL/MariaDB compare VARCHARs ignoring trailing spaces: "a " would read "a"'s history.
        raise InvalidArgumentError(
            f"{name} {session_id!r} ends with a space; MySQL and MariaDB cannot tell it "
            "from the id without the space, so strip it (or choose another id)"
        )
    return session_id


def check_user_id(user_id: object) -> str:
    """Return ``user_id`` if it is a usable owner id (the rules of session ids), else raise.

    Checked before any statement, so a value the ``VARCHAR(255)`` column cannot hold is refused
    by name rather than truncated, refused by the driver, or silently matching nothing.
    """
    return check_session_id(user_id, "user_id")


def check_limit(limit: object) -> int | None:
    """Return ``limit`` if it is None or a non-negative int, else raise."""
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int):
        raise ArgumentTypeError(f"limit must be an int or None, not {type(limit).__name__}")
    if limit < 0:
        raise InvalidArgumentError(f"limit must be >= 0, got {limit}")
    return limit


def encode_items(items: object, *, ensure_ascii: bool = False) -> list[str]:
    r"""Encode every item to compact JSON text, or raise before anything is stored.

    Text holding a lone surrogate (``"\ud83d"`` cut from an emoji pair) is written with JSON
    escapes instead: UTF-8 cannot carry it, and every driver refused it mid-transaction.
    With ``ensure_ascii`` every non-ASCII character is escaped (the SDK's default format).

    Raises:
        TypeError: ``items`` is not a list, or one of its elements is not a dict.
        InvalidItemError: an item holds a value that strict JSON cannot represent.
    """
    if not isinstance(items, list):
        raise ArgumentTypeError(f"items must be a list of dicts, not {type(items).__name__}")
    encoded: list[str] = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise ArgumentTypeError(f"items[{index}] must be a dict, not {type(item).__name__}")
        try:
            text = _encode_ascii(item) if ensure_ascii else encode(item)
            if not text.isascii() and _has_surrogate(text):
                text = _encode_ascii(item)
            encoded.append(text)
        except (TypeError, ValueError) as exc:
            raise InvalidItemError(f"items[{index}] is not valid JSON: {exc}") from None
        except RecursionError:
            raise InvalidItemError(f"items[{index}] is nested too deeply to encode") from None
    return encoded


def decode_rows(rows: Iterable[str], on_error: Any) -> list[Any]:
    """Decode stored JSON texts, calling ``on_error(text)`` for each one that fails."""
    items: list[Any] = []
    append = items.append
    for text in rows:
        try:
            append(decode(text))
        except RecursionError:
            # Nested nearly as deep as encoding allowed, and read from a deeper call stack than
            # it was written from: not corrupt, so decode it where the stack is empty.
            try:
                append(_decode_on_fresh_stack(text))
            except (DecodeError, TypeError, RecursionError):
                on_error(text)
        except (DecodeError, TypeError):
            on_error(text)
    return items


def _decode_on_fresh_stack(text: str) -> Any:
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(decode, text).result()
