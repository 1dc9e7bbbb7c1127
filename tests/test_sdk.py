"""Our session under the real Agents SDK Runner, with a scripted offline model."""

from __future__ import annotations

import pytest

from agent_session_store import SessionStore, SQLAlchemySession

agents = pytest.importorskip("agents")
scripted = pytest.importorskip("agent_session_store.scripted")


@pytest.fixture(autouse=True)
def _no_tracing() -> None:
    agents.set_tracing_disabled(True)


async def test_runner_second_turn_model_input_contains_first_turn_items(
    store: SessionStore,
) -> None:
    agent, model = scripted.demo_agent()
    session = store.session("conversation-1")

    first = await agents.Runner.run(agent, "Hi there", session=session)
    assert first.final_output.startswith("Hello!")
    stored_after_first = await session.get_items()
    assert [i.get("role") for i in stored_after_first] == ["user", "assistant"]

    second = await agents.Runner.run(agent, "Weather in Paris?", session=session)
    assert "18 °C" in second.final_output

    second_turn_input = model.inputs[1]
    assert second_turn_input[: len(stored_after_first)] == stored_after_first
    assert second_turn_input[-1] == {"role": "user", "content": "Weather in Paris?"}

    history = await session.get_items()
    types = [i.get("type", "message") for i in history]
    assert types == ["message", "message", "message", "function_call", "function_call_output",
                     "message"]
    assert history[4]["output"] == "Paris: 18 °C, light rain"


async def test_runner_with_session_settings_limit_sends_only_recent_history(
    store: SessionStore,
) -> None:
    agent, model = scripted.demo_agent()
    session = store.session("limited", session_settings={"limit": 1})
    await agents.Runner.run(agent, "one", session=session)
    await agents.Runner.run(agent, "two", session=session)
    # Only the newest stored item (the first reply) precedes the new user message.
    assert [i.get("role") for i in model.inputs[1]] == ["assistant", "user"]
    assert len(await session.get_items(limit=100)) > 2


async def test_sdk_run_config_session_settings_override_ours(store: SessionStore) -> None:
    agent, model = scripted.demo_agent()
    session = store.session("override")
    await agents.Runner.run(agent, "one", session=session)
    config = agents.RunConfig(session_settings=agents.SessionSettings(limit=1))
    await agents.Runner.run(agent, "two", session=session, run_config=config)
    assert [i.get("role") for i in model.inputs[1]] == ["assistant", "user"]


async def test_runner_works_with_the_sdk_style_constructor(db_url: str) -> None:
    agent, _ = scripted.demo_agent()
    session = SQLAlchemySession.from_url("sdk-style", url=db_url, create_tables=True)
    try:
        result = await agents.Runner.run(agent, "hello", session=session)
        assert result.final_output.startswith("Hello!")
        assert len(await session.get_items()) == 2
    finally:
        await session.engine.dispose()
