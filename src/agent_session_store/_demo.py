"""The ``demo`` command's conversation: three turns through the real Agents SDK ``Runner``.

The model is :class:`~agent_session_store.scripted.ScriptedModel`, so the ``Runner`` does all it
does with a real model (reasoning items, tool calls, tool outputs, session writes) offline,
without an API key.
"""

from __future__ import annotations

from typing import Any

from agents import Agent, Runner, set_tracing_disabled
from agents.memory import Session

from agent_session_store.scripted import ScriptedModel, Turn, get_weather

DEMO_TURNS = ("What's the weather in Paris?", "And in Tokyo?", "Thanks!")
DEMO_SCRIPT = (
    Turn(
        "The forecast says {tool_output}.",
        tool="get_weather",
        arguments='{"city": "Paris"}',
        reasoning="The user wants the weather in Paris; call the weather tool.",
    ),
    Turn("The forecast says {tool_output}.", tool="get_weather", arguments='{"city": "Tokyo"}'),
    Turn("You're welcome! Ask me about any other city."),
)


async def run_demo(session: Session) -> list[str]:
    """Play the demo conversation into ``session``; return the agent's three answers."""
    set_tracing_disabled(True)
    agent: Agent[Any] = Agent(
        name="Weather assistant",
        instructions="Answer weather questions with the get_weather tool.",
        model=ScriptedModel(DEMO_SCRIPT),
        tools=[get_weather],
    )
    answers = []
    for turn in DEMO_TURNS:
        result = await Runner.run(agent, turn, session=session)
        answers.append(str(result.final_output))
    return answers
