"""A scripted, offline model for the OpenAI Agents SDK: demos and tests without a network.

Importing this module imports the SDK (``pip install "agent-session-store[agents]"``); nothing
else in the package does.

Each turn of a :class:`ScriptedModel` either answers with text or first calls a tool and then
answers with text that includes the tool's output, so a conversation produces the item types a
real one does: user messages, function calls, function outputs and assistant messages.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from agents import Agent, function_tool
from agents.items import ModelResponse, TResponseInputItem, TResponseStreamEvent
from agents.models.interface import Model
from agents.usage import Usage
from openai.types.responses import (
    Response,
    ResponseCompletedEvent,
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
    ResponseReasoningItem,
)
from openai.types.responses.response_reasoning_item import Summary

__all__ = ["ScriptedModel", "Turn", "demo_agent"]


@dataclass(frozen=True)
class Turn:
    """One scripted assistant turn: optionally reasoning and a tool call, then a reply.

    ``reply`` may contain ``{tool_output}``, replaced by the tool's result. ``reasoning``, when
    set, is a reasoning item (with this summary) emitted first, as reasoning models do.
    """

    reply: str
    tool: str | None = None
    arguments: str = "{}"
    reasoning: str | None = None


class ScriptedModel(Model):
    """A ``Model`` that plays :class:`Turn` s in order and records every input it was given."""

    def __init__(self, turns: Sequence[Turn]) -> None:
        self._turns = list(turns)
        self._next_turn = 0
        self._ids = itertools.count(1)
        self.inputs: list[list[TResponseInputItem]] = []

    async def get_response(
        self,
        system_instructions: str | None,
        input: str | list[TResponseInputItem],
        model_settings: Any,
        tools: list[Any],
        output_schema: Any,
        handoffs: list[Any],
        tracing: Any,
        *,
        previous_response_id: str | None = None,
        conversation_id: str | None = None,
        prompt: Any = None,
        **kwargs: Any,
    ) -> ModelResponse:
        """Answer the next scripted turn; a tool output in ``input`` completes the turn."""
        items: list[TResponseInputItem] = (
            [{"role": "user", "content": input}] if isinstance(input, str) else list(input)
        )
        self.inputs.append(items)
        last: dict[str, Any] = dict(items[-1]) if items else {}
        if last.get("type") == "function_call_output":
            turn = self._turns[self._next_turn - 1]
            return self._respond(self._message(turn.reply.format(tool_output=last["output"])))
        if self._next_turn >= len(self._turns):
            raise RuntimeError(f"the script has only {len(self._turns)} turns")
        turn = self._turns[self._next_turn]
        self._next_turn += 1
        thought = [] if turn.reasoning is None else [self._reasoning(turn.reasoning)]
        if turn.tool is None:
            return self._respond(*thought, self._message(turn.reply))
        call = ResponseFunctionToolCall(
            type="function_call",
            id=f"fc_{next(self._ids)}",
            call_id=f"call_{next(self._ids)}",
            name=turn.tool,
            arguments=turn.arguments,
            status="completed",
        )
        return self._respond(*thought, call)

    async def stream_response(
        self, *args: Any, **kwargs: Any
    ) -> AsyncIterator[TResponseStreamEvent]:
        """Play the same turn as :meth:`get_response`, as one ``response.completed`` event.

        ``Runner.run_streamed`` builds the turn from that event alone, so a scripted
        conversation stores the same items streamed or not.
        """
        answer = await self.get_response(*args, **kwargs)
        response = Response(
            id=answer.response_id or "resp_scripted",
            created_at=0,
            model="scripted",
            object="response",
            output=answer.output,
            parallel_tool_calls=False,
            tool_choice="auto",
            tools=[],
        )
        yield ResponseCompletedEvent(
            type="response.completed", response=response, sequence_number=0
        )

    def _message(self, text: str) -> ResponseOutputMessage:
        return ResponseOutputMessage(
            type="message",
            id=f"msg_{next(self._ids)}",
            role="assistant",
            status="completed",
            content=[ResponseOutputText(type="output_text", text=text, annotations=[])],
        )

    def _reasoning(self, summary: str) -> ResponseReasoningItem:
        return ResponseReasoningItem(
            type="reasoning",
            id=f"rs_{next(self._ids)}",
            summary=[Summary(type="summary_text", text=summary)],
        )

    def _respond(self, *items: Any) -> ModelResponse:
        return ModelResponse(
            output=list(items), usage=Usage(), response_id=f"resp_{next(self._ids)}"
        )


@function_tool
def get_weather(city: str) -> str:
    """Return a (canned) weather report for a city."""
    return f"{city}: 18 °C, light rain"


DEMO_SCRIPT = (
    Turn("Hello! I'm the demo assistant. Ask me about the weather."),
    Turn(
        "The forecast says {tool_output}. Take an umbrella ☔.",
        tool="get_weather",
        arguments='{"city": "Paris"}',
    ),
    Turn("You asked about Paris: 18 °C and light rain. Anything else?"),
)


def demo_agent(turns: Sequence[Turn] = DEMO_SCRIPT) -> tuple[Agent[Any], ScriptedModel]:
    """An agent with a weather tool, driven by a :class:`ScriptedModel` playing ``turns``."""
    model = ScriptedModel(turns)
    agent: Agent[Any] = Agent(
        name="Assistant",
        instructions="Be brief.",
        model=model,
        tools=[get_weather],
    )
    return agent, model
