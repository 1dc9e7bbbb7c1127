"""An offline agent conversation through the real Agents SDK ``Runner``, for ``demo`` and tests.

:class:`ScriptedModel` implements the SDK's ``Model`` interface by replaying canned responses,
so the ``Runner`` does everything it does with a real model (tool calls, tool outputs,
reasoning items, session writes) without a network call or an API key.
"""

from __future__ import annotations

from collections import deque
from collections.abc import AsyncIterator, Iterable
from typing import Any

from agents import Agent, Runner, function_tool, set_tracing_disabled
from agents.items import ModelResponse, TResponseOutputItem, TResponseStreamEvent
from agents.memory import Session
from agents.models.interface import Model
from agents.usage import Usage
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseReasoningItem,
)
from openai.types.responses.response_reasoning_item import Summary

DEMO_TURNS = ("What's the weather in Paris?", "And in Tokyo?", "Thanks!")
_WEATHER = {"Paris": "18°C and sunny", "Tokyo": "24°C with light rain"}


def say(text: str, item_id: str) -> ResponseOutputMessage:
    """An assistant message output item."""
    part = ResponseOutputText(type="output_text", text=text, annotations=[])
    return ResponseOutputMessage(
        id=item_id, type="message", role="assistant", status="completed", content=[part]
    )


def think(text: str, item_id: str) -> ResponseReasoningItem:
    """A reasoning output item with one summary line."""
    return ResponseReasoningItem(
        id=item_id, type="reasoning", summary=[Summary(type="summary_text", text=text)]
    )


def call(name: str, arguments: str, call_id: str) -> ResponseFunctionToolCall:
    """A function-tool call output item."""
    return ResponseFunctionToolCall(
        id=f"fc_{call_id}", call_id=call_id, type="function_call", name=name, arguments=arguments
    )


class ScriptedModel(Model):
    """A ``Model`` that answers each call with the next canned list of output items.

    Args:
        responses: One list of output items per expected model call, in order.
    """

    def __init__(self, responses: Iterable[list[TResponseOutputItem]]) -> None:
        self._responses = deque(responses)
        self.calls = 0

    async def get_response(self, *args: Any, **kwargs: Any) -> ModelResponse:
        """Return the next scripted response; raise when the script is used up."""
        if not self._responses:
            raise RuntimeError("the scripted model has no response left for this call")
        self.calls += 1
        output = self._responses.popleft()
        return ModelResponse(output=output, usage=Usage(), response_id=f"resp_{self.calls}")

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[TResponseStreamEvent]:
        """Not scripted: the demo runs without streaming."""
        raise NotImplementedError("ScriptedModel does not stream; use Runner.run")


def demo_script() -> list[list[TResponseOutputItem]]:
    """The model's side of the three demo turns: reasoning, tool calls and answers."""
    return [
        [think("The user wants the weather; call the tool.", "rs_1"),
         call("get_weather", '{"city":"Paris"}', "call_1")],
        [say(f"It is {_WEATHER['Paris']} in Paris.", "msg_1")],
        [call("get_weather", '{"city":"Tokyo"}', "call_2")],
        [say(f"Tokyo has {_WEATHER['Tokyo']}.", "msg_2")],
        [say("You're welcome! Ask me about any other city.", "msg_3")],
    ]


@function_tool
def get_weather(city: str) -> str:
    """Return the current weather for a city.

    Args:
        city: The city's name.
    """
    return _WEATHER.get(city, "unknown")


async def run_demo(session: Session, model: Model | None = None) -> list[str]:
    """Play the demo conversation into ``session``; return the agent's three answers."""
    set_tracing_disabled(True)
    agent: Agent[Any] = Agent(
        name="Weather assistant",
        instructions="Answer weather questions with the get_weather tool.",
        model=model or ScriptedModel(demo_script()),
        tools=[get_weather],
    )
    answers = []
    for turn in DEMO_TURNS:
        result = await Runner.run(agent, turn, session=session)
        answers.append(str(result.final_output))
    return answers
