"""The usage ledger under the real Agents SDK ``Runner`` and a scripted model reporting usage."""

from __future__ import annotations

import pytest

from agent_session_store import InvalidArgumentError, SessionStore, UsageTotals

pytest.importorskip("agents")

from agents import Model, ModelProvider, RunConfig, Runner
from agents.usage import Usage

from agent_session_store.scripted import DEMO_SCRIPT, Turn, demo_agent

SCRIPT = (*DEMO_SCRIPT, Turn("Thinking done: it stays wet.", reasoning="Check the forecast."))
PROMPTS = ("Hi!", "Weather in Paris?", "And tomorrow?", "Sure?")


def summed(usages: list[Usage], runs: int) -> UsageTotals:
    return UsageTotals(
        runs=runs,
        requests=sum(u.requests for u in usages),
        input_tokens=sum(u.input_tokens for u in usages),
        output_tokens=sum(u.output_tokens for u in usages),
        total_tokens=sum(u.total_tokens for u in usages),
        cached_tokens=sum(u.input_tokens_details.cached_tokens for u in usages),
        reasoning_tokens=sum(u.output_tokens_details.reasoning_tokens for u in usages),
    )


async def test_runner_results_recorded_with_record_usage_sum_to_what_the_model_reported(
    store: SessionStore,
) -> None:
    agent, model = demo_agent(SCRIPT, report_usage=True)
    session = store.session("chat", user_id="u1")
    for prompt in PROMPTS:
        result = await Runner.run(agent, prompt, session=session)
        recorded = await session.record_usage(result, model="scripted-1")
        run_usage = result.context_wrapper.usage
        assert (recorded.requests, recorded.input_tokens, recorded.cached_tokens) == (
            run_usage.requests, run_usage.input_tokens,
            run_usage.input_tokens_details.cached_tokens,
        )
    reported = model.reported
    assert len(reported) == 5  # four turns, one of which calls a tool: two requests
    assert all(u.input_tokens > 0 and u.output_tokens > 0 for u in reported)
    assert sum(u.input_tokens_details.cached_tokens for u in reported) > 0
    assert sum(u.output_tokens_details.reasoning_tokens for u in reported) > 0
    expected = summed(reported, runs=len(PROMPTS))
    assert await store.usage(session_id="chat") == [expected]
    assert await store.usage(user_id="u1", group_by="model") == [
        UsageTotals(model="scripted-1", **{k: v for k, v in vars(expected).items()
                                            if k not in ("day", "model", "session_id")})
    ]


async def test_a_streamed_run_is_recorded_once_its_events_are_consumed(
    store: SessionStore,
) -> None:
    agent, model = demo_agent(SCRIPT, report_usage=True)
    session = store.session("streamed")
    result = Runner.run_streamed(agent, "Weather in Paris?", session=session)
    with pytest.raises(InvalidArgumentError, match="has not finished"):
        await session.record_usage(result)
    events = [event async for event in result.stream_events()]
    assert events
    await session.record_usage(result)
    first = await Runner.run(agent, "Weather in Paris?", session=session)  # not streamed
    await session.record_usage(first.context_wrapper.usage)  # the Usage itself
    assert await store.usage(session_id="streamed") == [summed(model.reported, runs=2)]


class ByName(ModelProvider):
    """Serves every model name with the scripted model, as a provider serves a real one."""

    def __init__(self, model: Model) -> None:
        self.model = model

    def get_model(self, model_name: str | None) -> Model:
        return self.model


async def test_the_model_name_comes_from_the_agent_when_not_given(store: SessionStore) -> None:
    scripted_agent, model = demo_agent(SCRIPT, report_usage=True)
    agent = scripted_agent.clone(model="gpt-5-mini")  # a name, the way applications say it
    config = RunConfig(model_provider=ByName(model))
    session = store.session("s")
    result = await Runner.run(agent, "Hi!", session=session, run_config=config)
    await session.record_usage(result)
    await session.record_usage(result, model="explicit")
    unnamed = await Runner.run(scripted_agent, "Weather?", session=session)
    await session.record_usage(unnamed)  # a Model object without a name: no model
    assert [row.model for row in await store.usage(group_by="model")] == [
        None, "explicit", "gpt-5-mini"
    ]
