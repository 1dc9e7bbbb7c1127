"""``agent-session-store usage``: the ledger's sums as a rich table and as JSON, with filters."""

from __future__ import annotations

import asyncio
import json
from datetime import datetime, timedelta, timezone

from agent_session_store import SessionStore

from .test_cli import fails, invoke, ok
from .test_cli import url_fixture as url_fixture

DAY = datetime(2026, 10, 30, 12, tzinfo=timezone.utc)


def seed(url: str) -> None:
    async def run() -> None:
        async with SessionStore(url) as store:
            await store.create_tables()
            runs = [
                ("a", "u1", "gpt-5", 100, 10, DAY),
                ("a", "u1", "gpt-5", 200, 20, DAY + timedelta(days=1)),
                ("b", "u2", "mini", 1_000, 5, DAY + timedelta(days=1)),
                ("c", "u1", None, 7, 3, DAY + timedelta(days=2)),
            ]
            for session_id, user, model, inputs, outputs, at in runs:
                await store.record_usage(
                    session_id,
                    {"input_tokens": inputs, "output_tokens": outputs,
                     "input_tokens_details": {"cached_tokens": inputs // 10}},
                    model=model, user_id=user, created_at=at,
                )

    asyncio.run(run())


def usage_json(*args: str) -> dict[str, object]:
    payload: dict[str, object] = json.loads(ok("usage", "--json", *args).stdout)
    return payload


def test_usage_json_groups_and_filters_like_the_api(url: str) -> None:
    seed(url)
    everything = usage_json("--url", url)
    assert everything["rows"] == []
    assert everything["totals"] == {
        "runs": 4, "requests": 4, "input_tokens": 1_307, "output_tokens": 38,
        "total_tokens": 1_345, "cached_tokens": 130, "reasoning_tokens": 0,
    }
    by_day = usage_json("--url", url, "--by", "day")
    assert [(r["day"], r["runs"], r["input_tokens"]) for r in by_day["rows"]] == [  # type: ignore[index, union-attr]
        ("2026-10-30", 1, 100), ("2026-10-31", 2, 1_200), ("2026-11-01", 1, 7)
    ]
    by_model = usage_json("--url", url, "--by", "model", "--user", "u1")
    assert [(r["model"], r["total_tokens"]) for r in by_model["rows"]] == [  # type: ignore[index, union-attr]
        (None, 10), ("gpt-5", 330)
    ]
    window = usage_json("--url", url, "--by", "session", "--since", "2026-10-31",
                        "--until", "2026-11-01T00:00+00:00")
    assert [(r["session_id"], r["runs"]) for r in window["rows"]] == [("a", 1), ("b", 1)]  # type: ignore[index, union-attr]
    assert window["filters"] == {"user_id": None, "session_id": None,
                                 "since": "2026-10-31T00:00:00+00:00",
                                 "until": "2026-11-01T00:00:00+00:00"}
    assert usage_json("--url", url, "--session", "b")["totals"]["runs"] == 1  # type: ignore[index]
    recent = usage_json("--url", url, "--since", "1d")
    assert recent["totals"]["runs"] == 0  # type: ignore[index]  # the seeded runs are older


def test_usage_prints_a_table_with_a_total_row(url: str) -> None:
    seed(url)
    out = ok("usage", "--url", url, "--by", "model").stdout
    lines = [line for line in out.splitlines() if "│" in line or "┃" in line]
    assert any("(none)" in line for line in lines)
    assert any("gpt-5" in line and "330" in line for line in lines)
    total = next(line for line in lines if "total" in line and "│" in line)
    assert "1,345" in total and "130" in total
    plain = ok("usage", "--url", url, "--user", "u2").stdout
    assert "1,005" in plain  # ungrouped: one line of totals
    assert not any(line.startswith("│ total") for line in plain.splitlines())


def test_usage_with_nothing_recorded_says_so(url: str) -> None:
    seed(url)
    out = ok("usage", "--url", url, "--user", "nobody").stdout
    assert out.startswith("no usage recorded at ")


def test_usage_refuses_a_bad_time_or_grouping(url: str) -> None:
    seed(url)
    bad = invoke("usage", "--url", url, "--since", "last tuesday")
    assert bad.exit_code == 2 and "neither a date or time" in bad.output
    assert invoke("usage", "--url", url, "--by", "week").exit_code == 2
    fails("usage", "--url", url, "--since", "2026-11-02", "--until", "2026-11-01",
          match="is after until")


def test_erase_user_counts_usage_rows(url: str) -> None:
    seed(url)
    assert "would erase 0 sessions (0 items) and 3 usage rows of 'u1'" in ok(
        "erase-user", "u1", "--url", url
    ).stdout
    assert "erased 0 sessions (0 items) and 3 usage rows of 'u1'" in ok(
        "erase-user", "u1", "--url", url, "--yes"
    ).stdout
    assert usage_json("--url", url)["totals"]["runs"] == 1  # type: ignore[index]
