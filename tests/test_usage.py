"""The usage ledger: one row per run, sums in SQL equal to what the runs reported."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import date, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy import event, func, select
from sqlalchemy.ext.asyncio import create_async_engine

from agent_session_store import (
    AgentSessionStoreError,
    ArgumentTypeError,
    InvalidArgumentError,
    SessionOwnershipError,
    SessionStore,
    UsageTotals,
)

from .conftest import dialect_of

DAY0 = datetime(2026, 11, 27, tzinfo=timezone.utc)
MODELS = ("gpt-5", "gpt-5-mini", "GPT-5", None)  # names differ only by case on purpose
FIELDS = ("requests", "input_tokens", "output_tokens", "total_tokens", "cached_tokens",
          "reasoning_tokens")


def usage(inputs: int, outputs: int, *, cached: int | None = None,
          reasoning: int | None = None, requests: int = 1) -> dict[str, Any]:
    """A usage mapping shaped like the SDK's ``Usage``."""
    found: dict[str, Any] = {
        "requests": requests, "input_tokens": inputs, "output_tokens": outputs,
        "total_tokens": inputs + outputs,
    }
    if cached is not None:
        found["input_tokens_details"] = {"cached_tokens": cached}
    if reasoning is not None:
        found["output_tokens_details"] = {"reasoning_tokens": reasoning}
    return found


async def row_count(store: SessionStore) -> int:
    u = store.usage_table
    async with store.engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(u))).scalar_one())


class Runs:
    """Runs recorded through the API at chosen times, and the sums they must give."""

    def __init__(self) -> None:
        self.runs: list[dict[str, Any]] = []

    async def record(self, store: SessionStore, seed: int, count: int) -> None:
        rng = random.Random(seed)
        for n in range(count):
            user = f"u{n % 3}"
            session_id = f"{user}-s{rng.randrange(3)}"
            model = rng.choice(MODELS)
            # Times around midnight UTC too: the day a run counts for is its UTC day.
            moment = DAY0 + timedelta(days=rng.randrange(5), seconds=rng.choice(
                [0, 1, 3600 * 12, 86_399, rng.randrange(86_400)]))
            inputs, outputs = rng.randrange(0, 50_000), rng.randrange(0, 5_000)
            cached = rng.choice([None, rng.randrange(inputs + 1)])
            reasoning = rng.choice([None, rng.randrange(outputs + 1)])
            requests = rng.randrange(1, 6)
            handle = store.session(session_id, user_id=user)
            if n < 9:  # the session rows exist (owned) for some runs, not for others
                await handle.add_items([{"role": "user", "content": f"run {n}"}])
            reported = usage(inputs, outputs, cached=cached, reasoning=reasoning,
                             requests=requests)
            await store.record_usage(session_id, reported, model=model, user_id=user,
                                     created_at=moment)
            self.runs.append({"user": user, "session": session_id, "model": model,
                              "day": moment.date(), "at": moment, "cached": cached or 0,
                              "reasoning": reasoning or 0, **reported})

    def expected(self, key: str | None, **filters: Any) -> list[UsageTotals]:
        groups: dict[Any, dict[str, int]] = defaultdict(lambda: dict.fromkeys(
            ("runs", *FIELDS), 0))
        for run in self.runs:
            if filters.get("user_id") not in (None, run["user"]):
                continue
            if filters.get("session_id") not in (None, run["session"]):
                continue
            if filters.get("since") is not None and run["at"] < filters["since"]:
                continue
            if filters.get("until") is not None and run["at"] >= filters["until"]:
                continue
            sums = groups[None if key is None else run[key]]
            sums["runs"] += 1
            for name in ("requests", "input_tokens", "output_tokens", "total_tokens"):
                sums[name] += run[name]
            sums["cached_tokens"] += run["cached"]
            sums["reasoning_tokens"] += run["reasoning"]
        if key is None:
            return [UsageTotals(**groups[None])]
        field = {"day": "day", "model": "model", "session": "session_id"}[key]
        ordered = sorted(groups, key=lambda k: (k is not None, k or "") if key == "model"
                         else k)
        return [UsageTotals(**{field: k}, **groups[k]) for k in ordered]


async def test_usage_sums_equal_what_the_runs_reported_across_sessions_users_models_and_days(
    store: SessionStore,
) -> None:
    runs = Runs()
    await runs.record(store, seed=12, count=60)
    assert await row_count(store) == 60
    since, until = DAY0 + timedelta(days=1, hours=6), DAY0 + timedelta(days=3)
    filters: list[dict[str, Any]] = [
        {}, {"user_id": "u1"}, {"session_id": "u2-s1"}, {"since": since},
        {"until": until}, {"user_id": "u0", "since": since, "until": until},
    ]
    for wanted in filters:
        for group in (None, "day", "model", "session"):
            key = {"session": "session"}.get(group or "", group)
            got = await store.usage(group_by=group, **wanted)  # type: ignore[arg-type]
            assert got == runs.expected(key, **wanted), (group, wanted)
    days = await store.usage(group_by="day")
    assert [row.day for row in days] == [date(2026, 11, 27 + n) for n in range(4)] + [
        date(2026, 12, 1)
    ]
    models = [row.model for row in await store.usage(group_by="model")]
    assert models == [None, "GPT-5", "gpt-5", "gpt-5-mini"]  # case kept apart everywhere


async def test_usage_of_nothing_is_one_row_of_zeros_and_no_groups(store: SessionStore) -> None:
    assert await store.usage() == [UsageTotals()]
    assert await store.usage(group_by="day") == []
    assert await store.usage(user_id="nobody", group_by="session") == []


@pytest.mark.parametrize("zone", ["+09:00", "-08:00"])
async def test_day_buckets_are_utc_days_whatever_the_connection_time_zone(
    db_url: str, zone: str
) -> None:
    dialect = dialect_of(db_url)
    engine = create_async_engine(db_url)

    @event.listens_for(engine.sync_engine, "connect")
    def set_zone(dbapi_connection: Any, _record: Any) -> None:
        statement = {"mariadb": f"SET time_zone = '{zone}'",
                     "postgresql": f"SET TIME ZONE '{zone}'"}
        if dialect in statement:
            cursor = dbapi_connection.cursor()
            cursor.execute(statement[dialect])
            cursor.close()

    try:
        store = SessionStore(engine)
        await store.create_tables()
        late = datetime(2026, 11, 1, 23, 30, tzinfo=timezone.utc)  # Nov 2 in Tokyo
        early = datetime(2026, 11, 2, 0, 30, tzinfo=timezone.utc)  # Nov 1 in California
        await store.record_usage("s", usage(10, 1), created_at=late)
        await store.record_usage("s", usage(20, 2), created_at=early)
        await store.record_usage("s", usage(40, 4))  # the database's clock
        days = await store.usage(group_by="day", until=datetime(2026, 11, 3, tzinfo=timezone.utc))
        now = await store.usage(since=datetime.now(timezone.utc) - timedelta(minutes=5))
    finally:
        await engine.dispose()
    assert [(row.day, row.input_tokens) for row in days] == [
        (date(2026, 11, 1), 10), (date(2026, 11, 2), 20)
    ]
    assert now[0].input_tokens == 40


async def test_record_usage_takes_a_usage_mapping_and_the_sdk_serialized_form(
    store: SessionStore,
) -> None:
    from agents.usage import Usage, serialize_usage
    from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

    session = store.session("s")
    sdk_usage = Usage(requests=2, input_tokens=100, output_tokens=30, total_tokens=130,
                      input_tokens_details=InputTokensDetails(cached_tokens=40,
                                                              cache_write_tokens=0),
                      output_tokens_details=OutputTokensDetails(reasoning_tokens=12))
    written = await session.record_usage(sdk_usage, model="m")
    assert (written.requests, written.cached_tokens, written.reasoning_tokens) == (2, 40, 12)
    await session.record_usage(serialize_usage(sdk_usage), model="m")
    # A bare mapping: one request, and a total of input + output, when not given.
    await session.record_usage({"input_tokens": 5, "output_tokens": 7}, model="m")
    (totals,) = await store.usage(session_id="s")
    assert totals == UsageTotals(runs=3, requests=5, input_tokens=205, output_tokens=67,
                                 total_tokens=272, cached_tokens=80, reasoning_tokens=24)
    u = store.usage_table
    async with store.engine.connect() as conn:
        rows = (await conn.execute(select(u.c.cached_tokens, u.c.reasoning_tokens,
                                          u.c.model).order_by(u.c.id))).all()
    # Details the run did not report stay NULL: "not reported" is not "zero".
    assert [tuple(row) for row in rows] == [(40, 12, "m"), (40, 12, "m"), (None, None, "m")]


BAD_USAGE: list[tuple[Any, dict[str, Any], type[Exception], str]] = [
    (usage(-1, 2), {}, InvalidArgumentError, "input_tokens must be between 0"),
    ({**usage(1, 2), "total_tokens": 2**63}, {}, InvalidArgumentError, "total_tokens"),
    ({**usage(1, 2), "requests": True}, {}, ArgumentTypeError, "requests must be an int"),
    ({**usage(1, 2), "output_tokens": 2.0}, {}, ArgumentTypeError, "got a float"),
    ({"output_tokens": 2}, {}, ArgumentTypeError, "input_tokens must be an int, got missing"),
    ({**usage(1, 2), "input_token": 1}, {}, InvalidArgumentError, "unknown usage field"),
    (usage(10, 2, cached=11), {}, InvalidArgumentError, "cached_tokens (11) exceeds"),
    (usage(10, 2, reasoning=3), {}, InvalidArgumentError, "reasoning_tokens (3) exceeds"),
    ({**usage(1, 2), "input_tokens_details": {"cached_tokens": "3"}}, {}, ArgumentTypeError,
     "input_tokens_details.cached_tokens must be an int"),
    (usage(1, 2), {"model": ""}, InvalidArgumentError, "model must be a name"),
    (usage(1, 2), {"model": "m" * 256}, InvalidArgumentError, "model must be a name"),
    (usage(1, 2), {"model": 5}, ArgumentTypeError, "model must be a str"),
    ("100 tokens", {}, ArgumentTypeError, "record_usage takes an Agents SDK RunResult"),
    (None, {}, ArgumentTypeError, "record_usage takes"),
]


@pytest.mark.parametrize(("value", "kwargs", "error", "message"), BAD_USAGE,
                         ids=[case[3][:30] for case in BAD_USAGE])
async def test_bad_usage_is_refused_with_a_clear_error_and_nothing_is_written(
    store: SessionStore, value: Any, kwargs: dict[str, Any], error: type[Exception],
    message: str,
) -> None:
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)")) as raised:
        await store.session("s").record_usage(value, **kwargs)
    assert isinstance(raised.value, AgentSessionStoreError)
    assert await row_count(store) == 0


async def test_bad_filters_and_times_are_refused(store: SessionStore) -> None:
    with pytest.raises(InvalidArgumentError, match="group_by must be one of"):
        await store.usage(group_by="week")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="timezone-aware"):
        await store.usage(since=datetime(2026, 1, 1))
    with pytest.raises(ArgumentTypeError, match="until must be a datetime"):
        await store.usage(until="2026-01-01")  # type: ignore[arg-type]
    with pytest.raises(InvalidArgumentError, match="is after until"):
        await store.usage(since=DAY0, until=DAY0 - timedelta(seconds=1))
    with pytest.raises(InvalidArgumentError, match="timezone-aware"):
        await store.record_usage("s", usage(1, 1), created_at=datetime(2026, 1, 1))
    with pytest.raises(InvalidArgumentError, match="session_id must not be empty"):
        await store.record_usage("", usage(1, 1))
    assert await row_count(store) == 0


async def test_an_owner_bound_handle_records_usage_only_on_sessions_it_owns(
    store: SessionStore,
) -> None:
    await store.session("theirs", user_id="u2").add_items([{"n": 1}])
    await store.session("nobodys").add_items([{"n": 1}])
    for session_id in ("theirs", "nobodys"):
        with pytest.raises(SessionOwnershipError, match="nothing was read or changed"):
            await store.session(session_id, user_id="u1").record_usage(usage(5, 5))
    assert await row_count(store) == 0
    await store.session("new", user_id="u1").record_usage(usage(1, 1))  # no row yet: u1's
    await store.session("theirs", user_id="u2").record_usage(usage(2, 2))
    await store.session("theirs").record_usage(usage(4, 4))  # a plain handle copies the owner
    await store.session("nobodys").record_usage(usage(8, 8))
    by_user = {
        user: (await store.usage(user_id=user))[0].input_tokens for user in ("u1", "u2")
    }
    assert by_user == {"u1": 1, "u2": 6}
    assert [(r.session_id, r.runs) for r in await store.usage(group_by="session")] == [
        ("new", 1), ("nobodys", 1), ("theirs", 2)
    ]


async def test_usage_rows_outlive_clear_session_expiry_and_prune_keeping_their_owner(
    store: SessionStore,
) -> None:
    for n in range(3):
        handle = store.session(f"s{n}", user_id="u1")
        await handle.add_items([{"n": n}])
        await handle.record_usage(usage(100, 10), model="m")
    await store.session("s0", user_id="u1").clear_session()
    await store.session("s1", user_id="u1").update(expires_at=DAY0)
    assert (await store.purge_expired()).sessions == 1
    soon = datetime.now(timezone.utc) + timedelta(minutes=1)
    assert (await store.delete_sessions(older_than=soon)).sessions == 1
    assert (await store.list_sessions(include_expired=True)).sessions == []
    (totals,) = await store.usage(user_id="u1")
    assert (totals.runs, totals.input_tokens) == (3, 300)  # billing survives the sessions


async def test_erase_user_removes_that_users_usage_rows_and_no_one_elses(
    store: SessionStore,
) -> None:
    await store.session("mine", user_id="u1").add_items([{"n": 1}])
    await store.session("mine", user_id="u1").record_usage(usage(1, 1))
    # Recorded through a plain handle before the session existed, then the session was made
    # by u1: the row has no owner but belongs to u1's session, and goes too.
    await store.session("later").record_usage(usage(2, 2))
    await store.session("later", user_id="u1").add_items([{"n": 1}])
    await store.session("gone", user_id="u1").record_usage(usage(4, 4))  # no session row
    await store.session("other", user_id="u2").record_usage(usage(8, 8))
    dry = await store.erase_user("u1", dry_run=True)
    assert (dry.sessions, dry.usage_rows) == (2, 3)
    done = await store.erase_user("u1", batch_size=1)
    assert (done.sessions, done.items, done.usage_rows) == (2, 2, 3)
    assert await store.usage(group_by="session") == [
        UsageTotals(session_id="other", runs=1, requests=1, input_tokens=8, output_tokens=8,
                    total_tokens=16)
    ]


async def test_session_record_usage_after_close_raises_store_closed(db_url: str) -> None:
    from agent_session_store import StoreClosedError

    store = SessionStore(db_url)
    await store.create_tables()
    session = store.session("s")
    await store.close()
    with pytest.raises(StoreClosedError):
        await session.record_usage(usage(1, 1))


async def test_concurrent_runs_recorded_at_once_are_each_counted_once(store: SessionStore) -> None:
    import asyncio

    await store.session("busy", user_id="u1").add_items([{"n": 0}])
    handles = [store.session("busy", user_id="u1") for _ in range(4)]

    async def writer(n: int) -> None:
        for i in range(10):
            await handles[n].record_usage(usage(n + 1, i), model=f"m{n}")

    await asyncio.gather(*(writer(n) for n in range(4)))
    assert [(r.model, r.runs, r.input_tokens, r.output_tokens)
            for r in await store.usage(group_by="model")] == [
        (f"m{n}", 10, 10 * (n + 1), sum(range(10))) for n in range(4)
    ]
