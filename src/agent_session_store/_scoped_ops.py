"""get_items, add_items, pop_item and clear_session for a handle with a :class:`Scope`.

Each runs through the store's read and write funnels (retries, cancellation, the driver
path) with the statements of :mod:`agent_session_store._scoped`. Where a call is refused,
it raises ``SessionOwnershipError`` from inside the write's transaction, which rolls back.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Dialect

from agent_session_store._expiry import RowState, touched
from agent_session_store._family import is_mysql
from agent_session_store._json import decode_rows
from agent_session_store._scoped import Scope, ScopedStatements, check_state
from agent_session_store._transport import WriteShape
from agent_session_store.records import refuse_other_owner

_RETRY = object()


class ScopedOperations:
    """The scoped operations of one store; statements built on first use, per scope shape."""

    def __init__(self, store: Any, dialect: Dialect, prepare: Any) -> None:
        self._store, self._dialect, self._prepare = store, dialect, prepare
        self._built: dict[tuple[bool, bool], ScopedStatements] = {}
        self._mysql = is_mysql(dialect)

    def statements(self, scope: Scope) -> ScopedStatements:
        """The statements for this scope's shape."""
        key = (scope.user_id is not None, scope.ttl is not None)
        built = self._built.get(key)
        if built is None:
            store = self._store
            built = self._built[key] = ScopedStatements(
                store.sessions, store.messages, self._dialect, self._prepare,
                owned=key[0], ttl=key[1], keys=store.keys,
            )  # fmt: skip
        return built

    @staticmethod
    def _params(session_id: str, scope: Scope, **more: Any) -> dict[str, Any]:
        return {"sid": session_id, "uid": scope.user_id, "ttl": scope.ttl, **more}

    async def get_items(self, session_id: str, limit: int | None, scope: Scope) -> list[Any]:
        """The items, as the plain read returns them, if this scope may see the session."""
        st = self.statements(scope)
        warn = self._store._warn_corrupt(session_id)
        params = self._params(session_id, scope, lim=limit)
        stmt = st.all if limit is None else st.tail

        async def read(link: Any) -> list[Any]:
            rows = await link.rows(stmt, params)
            if not rows and scope.user_id is not None:
                # Empty: a session of another owner reads as a refusal, not as no items.
                check_state(session_id, scope, await link.rows(st.state, params))
            texts = [row[0] for row in rows]
            return decode_rows(texts if limit is None else reversed(texts), warn)

        result: list[Any] = await self._store._read(
            session_id, lambda on: on.transport.read(read)
        )
        return result

    async def add_items(
        self, session_id: str, encoded: list[str], scope: Scope, key: str | None = None
    ) -> None:
        """Append under the owner's condition, sliding the expiry; refuse another owner.

        With ``key``, the batch's idempotency key is recorded in the same transaction.
        """
        st, store = self.statements(scope), self._store
        params = self._params(session_id, scope, key=key)
        statement = st.append if key is None else st.append_keyed
        if statement is not None:
            one = {**params, "texts": encoded}

            async def append(link: Any) -> None:
                found = await link.rows(statement, one)
                if not found[0][0]:
                    state = await link.rows(st.state, params)
                    refuse_other_owner(session_id, scope.user_id, state[0][0] if state else None)

            await store._write_batch(append, WriteShape.ONE_STATEMENT, session_id, key)
            return
        rows = [{"sid": session_id, "text": text} for text in encoded]
        touch = st.touch
        assert touch is not None
        insert_key = store._statements.insert_key

        async def add(link: Any) -> None:
            if self._mysql:
                await store._check_packet(link, encoded, session_id)
            state = await touched(link, touch, params, mysql=self._mysql)
            if state is not RowState.LIVE:
                # Not written (rare): another owner's row, or an expired one. The upsert
                # holds the row (MySQL) or SQLite the whole file: this read is what it saw.
                expired = check_state(session_id, scope, await link.rows(st.state, params))
                if expired or state is RowState.EXPIRED:
                    await link.run(st.delete_messages, params)
                    await link.run(st.reset, params)
            if key is not None:
                await link.run(insert_key, params)
            await link.run(store._statements.insert, rows[0] if len(rows) == 1 else rows)

        await store._write_batch(add, WriteShape.SEVERAL_STATEMENTS, session_id, key)

    async def pop_item(self, session_id: str, scope: Scope) -> Any | None:
        """Remove and return the newest item this scope may see, or None."""
        if scope.archive:
            return await self._store._archiver.pop_item(session_id, scope)
        st, store = self.statements(scope), self._store
        params = self._params(session_id, scope)

        slide = scope.ttl is not None and not st.pop_slides

        async def pop(link: Any) -> Any:
            if self._mysql or not store._statements.pop_returns:
                if check_state(session_id, scope, await link.rows(st.state_locked, params)):
                    return None
                found = await link.rows(store._statements.select_newest_locked, params)
                if not found:
                    return None
                await link.run(store._statements.delete_by_id, {"row_id": found[0][0]})
                if slide:
                    await link.run(st.slide, params)
                return found[0][1]
            deleted = await link.rows(st.pop, params)
            if deleted:
                if slide:
                    await link.run(st.slide, params)
                return deleted[0][0]
            check_state(session_id, scope, await link.rows(st.state, params))
            # Nothing deleted: empty, or a concurrent popper took the row this one chose.
            return _RETRY if await link.rows(st.tail, {**params, "lim": 1}) else None

        one = not self._mysql and store._statements.pop_returns and not slide
        shape = WriteShape.ONE_STATEMENT if one else WriteShape.SEVERAL_STATEMENTS
        while True:
            text = await store._write(session_id, pop, shape)
            if text is None:
                return None
            if text is _RETRY:
                continue
            decoded = decode_rows([text], store._warn_corrupt(session_id))
            if decoded:
                return decoded[0]

    async def clear_session(self, session_id: str, scope: Scope) -> None:
        """Delete the session and its items if this scope owns it; refuse another owner."""
        if scope.archive:
            await self._store._archiver.clear_session(session_id, scope)
            return
        st, store = self.statements(scope), self._store
        params = self._params(session_id, scope)

        async def clear(link: Any) -> None:
            check_state(session_id, scope, await link.rows(st.state_locked, params))
            await link.run(st.delete_messages, params)
            await link.run(st.delete_session, params)

        await store._write(session_id, clear, WriteShape.SEVERAL_STATEMENTS)
