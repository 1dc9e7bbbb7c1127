"""Every refusal of a bad argument is one of ours, and still the built-in class people catch."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from agent_session_store import (
    AgentSessionStoreError,
    ArgumentTypeError,
    InvalidArgumentError,
    SessionStore,
)

BAD_CALLS: list[tuple[str, Any, type[Exception]]] = [
    ("session id of the wrong type", lambda s: s.session(42), TypeError),
    ("empty session id", lambda s: s.session(""), ValueError),
    ("session id with NUL", lambda s: s.session("a\x00b"), ValueError),
    ("limit of the wrong type", lambda s: s.get_items("s", limit="3"), TypeError),
    ("negative limit", lambda s: s.get_items("s", limit=-1), ValueError),
    ("items not a list", lambda s: s.add_items("s", {"role": "user"}), TypeError),
    ("an item not a dict", lambda s: s.add_items("s", ["hi"]), TypeError),
    ("listing limit of zero", lambda s: s.list_sessions(limit=0), ValueError),
    ("a cursor nobody returned", lambda s: s.list_sessions(cursor="nope"), ValueError),
    ("naive older_than", lambda s: s.delete_sessions(older_than=datetime(2020, 1, 1)), ValueError),
    ("older_than of the wrong type", lambda s: s.delete_sessions(older_than="30d"), TypeError),
]


@pytest.mark.sqlite
@pytest.mark.parametrize(("what", "call", "builtin"), BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
async def test_a_bad_argument_raises_our_error_that_is_also_the_builtin_class(
    tmp_path: Path, what: str, call: Any, builtin: type[Exception]
) -> None:
    async with SessionStore(f"sqlite+aiosqlite:///{tmp_path / 'e.db'}") as store:
        await store.create_tables()
        with pytest.raises(builtin) as raised:
            result = call(store)
            if hasattr(result, "__await__"):
                await result
        assert isinstance(raised.value, AgentSessionStoreError), what
        ours = ArgumentTypeError if builtin is TypeError else InvalidArgumentError
        assert isinstance(raised.value, ours), (what, type(raised.value))
        assert str(raised.value), what
