"""Random sequences of add / get(limit) / pop / clear over several sessions match a list model."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from agent_session_store import SessionStore

from ..conftest import reset_database, server_url
from .figures import Figures

SESSION_IDS = ["a", "b", "c'; DROP TABLE agent_messages; --"]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**53), max_value=2**53)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=8,
)
items = st.dictionaries(st.text(max_size=8), json_values, max_size=4)


class StoreModel(RuleBasedStateMachine):
    """The store against ``dict[str, list[item]]``; set ``loop`` and ``store`` before running."""

    loop: asyncio.AbstractEventLoop
    store: SessionStore
    steps = 0
    added = 0

    def __init__(self) -> None:
        super().__init__()
        self.model: dict[str, list[dict[str, Any]]] = {sid: [] for sid in SESSION_IDS}
        for sid in SESSION_IDS:
            self.run(self.store.clear_session(sid))

    def run(self, awaitable: Any) -> Any:
        type(self).steps += 1
        return self.loop.run_until_complete(awaitable)

    @rule(sid=st.sampled_from(SESSION_IDS), batch=st.lists(items, max_size=4))
    def add(self, sid: str, batch: list[dict[str, Any]]) -> None:
        self.run(self.store.add_items(sid, batch))
        self.model[sid] += batch
        type(self).added += len(batch)

    @rule(sid=st.sampled_from(SESSION_IDS), limit=st.none() | st.integers(0, 6))
    def get(self, sid: str, limit: int | None) -> None:
        expected = self.model[sid] if limit is None else self.model[sid][-limit:] if limit else []
        assert self.run(self.store.get_items(sid, limit)) == expected

    @rule(sid=st.sampled_from(SESSION_IDS))
    def pop(self, sid: str) -> None:
        expected = self.model[sid].pop() if self.model[sid] else None
        assert self.run(self.store.pop_item(sid)) == expected

    @rule(sid=st.sampled_from(SESSION_IDS))
    def clear(self, sid: str) -> None:
        self.run(self.store.clear_session(sid))
        self.model[sid] = []

    @invariant()
    def sessions_stay_separate(self) -> None:
        sid = SESSION_IDS[self.steps % len(SESSION_IDS)]
        assert self.run(self.store.get_items(sid)) == self.model[sid]


KINDS = [
    pytest.param("sqlite_file", marks=pytest.mark.sqlite, id="sqlite_file"),
    pytest.param("postgresql", marks=pytest.mark.postgresql, id="postgresql"),
]


@pytest.mark.parametrize("kind", KINDS)
def test_random_add_get_pop_clear_sequences_match_an_in_memory_model(
    kind: str, tmp_path: Path, figures: Figures
) -> None:
    url = (
        f"sqlite+aiosqlite:///{tmp_path / 'model.db'}"
        if kind == "sqlite_file"
        else server_url(kind)
    )
    loop = asyncio.new_event_loop()
    started = time.perf_counter()
    try:
        if kind != "sqlite_file":
            loop.run_until_complete(reset_database(url))
        store = SessionStore(url)
        loop.run_until_complete(store.create_tables())

        class Machine(StoreModel):
            pass

        Machine.loop, Machine.store = loop, store
        run_state_machine_as_test(
            Machine,
            settings=settings(
                max_examples=40,
                stateful_step_count=25,
                deadline=None,
                database=None,
                suppress_health_check=[HealthCheck.too_slow],
            ),
        )
        loop.run_until_complete(store.close())
    finally:
        loop.close()
    figures.add(
        "hypothesis stateful model (add/get/pop/clear, 3 sessions)",
        kind,
        runs=Machine.steps,
        items=Machine.added,
        lost=0,
        seconds=time.perf_counter() - started,
        note="runs: store calls in 40 examples of up to 25 steps",
    )
    assert Machine.steps > 40 * 3
