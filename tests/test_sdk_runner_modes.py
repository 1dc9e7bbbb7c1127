"""Our session under the real ``Runner`` in each of its modes, as the SDK's test_session.py runs.

Modes: ``run``; ``run_sync`` from a plain thread that has no event loop; ``run_sync`` from a
running loop's worker thread (``asyncio.to_thread``); and ``run_streamed``. The model is our
offline :class:`~agent_session_store.scripted.ScriptedModel`. Every mode is bounded in time:
a hang fails the test.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from agent_session_store import SessionStore

agents = pytest.importorskip("agents")
scripted = pytest.importorskip("agent_session_store.scripted")

CHILD_ENV = "AGENT_SESSION_STORE_RUNNER_MODES_CHILD"
IN_CHILD = os.environ.get(CHILD_ENV) == "1"
THREAD_MODES = ["run_sync_in_a_plain_thread", "run_sync_in_a_loop_worker_thread"]


def _mode(mode: str) -> Any:
    # The run_sync modes use the store from a second event loop. Where that is unsafe the driver
    # can crash the interpreter (asyncpg did), so they run in a child pytest of their own.
    if mode in THREAD_MODES and not IN_CHILD:
        return pytest.param(mode, marks=pytest.mark.skip(
            reason="runs in a child process: test_the_thread_modes_pass_in_a_child_process"
        ))
    return mode


MODES = [_mode(m) for m in ["run", *THREAD_MODES, "run_streamed"]]
#: Seconds one run may take in any mode.
RUN_TIMEOUT = 30


@pytest.fixture(autouse=True)
def _no_tracing() -> None:
    agents.set_tracing_disabled(True)


def agent_saying(*replies: str) -> tuple[Any, Any]:
    model = scripted.ScriptedModel([scripted.Turn(reply) for reply in replies])
    return agents.Agent(name="test", model=model), model


def _run_sync_in_a_plain_thread(agent: Any, given: Any, **kwargs: Any) -> Any:
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = agents.Runner.run_sync(agent, given, **kwargs)
        except BaseException as exc:  # handed to the test below
            outcome["error"] = exc

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(RUN_TIMEOUT)
    if thread.is_alive():
        pytest.fail(f"Runner.run_sync still running after {RUN_TIMEOUT} s", pytrace=False)
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


async def run_in(mode: str, agent: Any, given: Any, **kwargs: Any) -> Any:
    """Run ``agent`` on ``given`` in ``mode``; the result, or the error the run raised."""
    if mode == "run":
        return await asyncio.wait_for(agents.Runner.run(agent, given, **kwargs), RUN_TIMEOUT)
    if mode == "run_sync_in_a_plain_thread":
        return await asyncio.to_thread(_run_sync_in_a_plain_thread, agent, given, **kwargs)
    if mode == "run_sync_in_a_loop_worker_thread":
        call = asyncio.to_thread(agents.Runner.run_sync, agent, given, **kwargs)
        return await asyncio.wait_for(call, RUN_TIMEOUT)
    result = agents.Runner.run_streamed(agent, given, **kwargs)

    async def consume() -> None:
        async for _event in result.stream_events():
            pass

    await asyncio.wait_for(consume(), RUN_TIMEOUT)
    return result


@pytest.mark.parametrize("mode", MODES)
async def test_second_turn_sends_the_first_turn_from_our_session_to_the_model(
    store: SessionStore, mode: str
) -> None:
    agent, model = agent_saying("San Francisco", "California")
    session = store.session("memory")
    first = await run_in(mode, agent, "What city is the Golden Gate Bridge in?", session=session)
    assert first.final_output == "San Francisco"
    second = await run_in(mode, agent, "What state is it in?", session=session)
    assert second.final_output == "California"
    sent = model.inputs[-1]
    assert sent[0] == {"role": "user", "content": "What city is the Golden Gate Bridge in?"}
    assert sent[-1] == {"role": "user", "content": "What state is it in?"}
    assert [item.get("role") for item in await session.get_items()] == [
        "user", "assistant", "user", "assistant"
    ]


@pytest.mark.parametrize("mode", MODES)
async def test_each_session_id_keeps_its_own_history_across_runs(
    store: SessionStore, mode: str
) -> None:
    agent, model = agent_saying("I like cats", "I like dogs", "Yes, you mentioned cats")
    cats, dogs = store.session("session_1"), store.session("session_2")
    await run_in(mode, agent, "I like cats", session=cats)
    await run_in(mode, agent, "I like dogs", session=dogs)
    result = await run_in(mode, agent, "What did I say I like?", session=cats)
    assert result.final_output == "Yes, you mentioned cats"
    sent = str(model.inputs[-1])
    assert "I like cats" in sent and "I like dogs" not in sent
    assert len(await dogs.get_items()) == 2


@pytest.mark.parametrize("mode", MODES)
async def test_list_input_is_sent_after_the_stored_history_and_appended_to_it(
    store: SessionStore, mode: str
) -> None:
    agent, model = agent_saying("This should run")
    session = store.session("list-input")
    history = [{"role": "user", "content": "Earlier message"},
               {"role": "assistant", "content": "Saved reply"}]
    await session.add_items(history)
    given = [{"role": "user", "content": "Test message"}]
    await run_in(mode, agent, given, session=session)
    assert model.inputs[-1] == history + given
    assert (await session.get_items())[: len(history) + 1] == history + given


@pytest.mark.parametrize("mode", MODES)
async def test_session_input_callback_decides_what_history_the_model_sees(
    store: SessionStore, mode: str
) -> None:
    agent, model = agent_saying("I'm gpt-4o")
    session = store.session("callback")
    history = [{"role": "user", "content": "Hello there."},
               {"role": "assistant", "content": "Hi, I'm here to assist you."}]
    await session.add_items(history)

    def users_only(stored: list[Any], new: list[Any]) -> list[Any]:
        return [item for item in stored if item["role"] == "user"] + new

    given = [{"role": "user", "content": "What your name?"}]
    config = agents.RunConfig(session_input_callback=users_only)
    await run_in(mode, agent, given, session=session, run_config=config)
    assert model.inputs[-1] == [history[0], given[0]]


@pytest.mark.parametrize("mode", MODES)
async def test_a_callback_repeating_history_does_not_store_it_twice(
    store: SessionStore, mode: str
) -> None:
    agent, _ = agent_saying("assistant 0", "assistant 1", "assistant 2")
    session = store.session("repeat")

    def repeat_first(stored: list[Any], new: list[Any]) -> list[Any]:
        return [*stored, stored[0], *new] if stored else new

    config = agents.RunConfig(session_input_callback=repeat_first)
    for turn in range(3):
        await run_in(mode, agent, f"user {turn}", session=session, run_config=config)
    stored = await session.get_items()
    assert [i.get("content") for i in stored if i.get("role") == "user"] == [
        "user 0", "user 1", "user 2"
    ]
    assert len(stored) == 6


@pytest.mark.parametrize("mode", MODES)
async def test_run_config_session_settings_limit_overrides_the_sessions_own(
    store: SessionStore, mode: str
) -> None:
    agent, model = agent_saying("Got it")
    session = store.session("override", session_settings=agents.SessionSettings(limit=100))
    await session.add_items([{"role": "user", "content": f"Turn {i}"} for i in range(10)])
    config = agents.RunConfig(session_settings=agents.SessionSettings(limit=2))
    await run_in(mode, agent, "New question", session=session, run_config=config)
    assert model.inputs[-1] == [
        {"role": "user", "content": "Turn 8"},
        {"role": "user", "content": "Turn 9"},
        {"role": "user", "content": "New question"},
    ]


async def test_a_store_error_surfaces_from_run_streamed_instead_of_hanging(db_url: str) -> None:
    """The SDK's regression test for a stream that hung when its session failed."""
    agent, _ = agent_saying("never reached")
    async with SessionStore(db_url) as store:  # no tables: every statement fails
        session = store.session("no-tables")
        result = agents.Runner.run_streamed(agent, "Hello", session=session)

        async def consume() -> None:
            async for _event in result.stream_events():
                pass

        with pytest.raises(Exception, match=r"(?i)agent_messages|agent_sessions|no such table"):
            await asyncio.wait_for(consume(), RUN_TIMEOUT)


DIALECT_PARAMS = [
    pytest.param(name, marks=getattr(pytest.mark, name), id=name)
    for name in ("sqlite", "postgresql", "mariadb")
]


@pytest.mark.parametrize("dialect", DIALECT_PARAMS)
def test_the_thread_modes_pass_in_a_child_process(dialect: str) -> None:
    """Every test above in both run_sync modes, in a child pytest per dialect: a crash there
    fails this test instead of ending the run."""
    if IN_CHILD:
        pytest.skip(reason="this is the child process")
    root = Path(__file__).resolve().parents[1]
    # Without hypothesis' plugin: its lazy import at the end of the run met CPython 3.11's
    # "AST constructor recursion depth mismatch" after aiomysql ran on several loops (exit 1).
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "-p", "no:hypothesispytest", "-m", dialect, "-k", "run_sync_in_a",
               str(Path(__file__).relative_to(root))]
    try:
        done = subprocess.run(command, cwd=root, env={**os.environ, CHILD_ENV: "1"},
                              capture_output=True, text=True, timeout=600, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("the run_sync modes still running after 600 s", pytrace=False)
    lines = done.stdout.splitlines()
    summary = [line for line in lines if line.startswith(("FAILED", "ERROR"))] + lines[-1:]
    if done.returncode != 0:
        progress = lines[0] if lines else ""
        pytest.fail(f"child pytest exited with {done.returncode} (progress: {progress})\n"
                    + "\n".join(summary[-40:]), pytrace=False)
