"""A scripted, offline model for the OpenAI Agents SDK: demos and tests without a network.

Importing this module imports the SDK (``pip install "agent-session-store[agents]"``); nothing
else in the package does.

Each turn of a :class:`ScriptedModel` either answers with text or first calls a tool and then
answers with text that includes the tool's output, so a conversation produces the item types a
real one does: user messages, function calls, function outputs and assistant messages.

With ``report_usage=True`` each response reports token usage as a real model would: input and
output tokens estimated from the text (about four characters a token), the part of the input
that repeats the previous request's as cached tokens, and the reasoning summary as reasoning
tokens. Every reported ``Usage`` is kept in :attr:`ScriptedModel.reported`.
"""

from __future__ import annotations

import itertools
import json
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
    ResponseUsage,
)
from openai.types.responses.response_reasoning_item import Summary
from openai.types.responses.response_usage import InputTokensDetails, OutputTokensDetails

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


def tokens_of(text: str) -> int:
    """A token count estimated from text: about four characters a token."""
    return (len(text) + 3) // 4


class ScriptedModel(Model):
    """A ``Model`` that plays :class:`Turn` s in order and records every input it was given.

    Args:
        turns: The script.
        report_usage: Report estimated token usage with each response (else zeros).
    """

    def __init__(self, turns: Sequence[Turn], *, report_usage: bool = False) -> None:
        self._turns = list(turns)
        self._next_turn = 0
        self._ids = itertools.count(1)
        self._report_usage = report_usage
        self._previous_input = ""
        self.inputs: list[list[TResponseInputItem]] = []
        #: The usage reported with each response, in order.
        self.reported: list[Usage] = []

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
        prompt = (system_instructions or "") + json.dumps(items, default=str)
        last: dict[str, Any] = dict(items[-1]) if items else {}
        if last.get("type") == "function_call_output":
            turn = self._turns[self._next_turn - 1]
            reply = self._message(turn.reply.format(tool_output=last["output"]))
            return self._respond(reply, prompt=prompt)
        if self._next_turn >= len(self._turns):
            raise RuntimeError(f"the script has only {len(self._turns)} turns")
        turn = self._turns[self._next_turn]
        self._next_turn += 1
        thought = [] if turn.reasoning is None else [self._reasoning(turn.reasoning)]
        if turn.tool is None:
            return self._respond(*thought, self._message(turn.reply), prompt=prompt)
        call = ResponseFunctionToolCall(
            type="function_call",
            id=f"fc_{next(self._ids)}",
            call_id=f"call_{next(self._ids)}",
            name=turn.tool,
            arguments=turn.arguments,
            status="completed",
        )
        return self._respond(*thought, call, prompt=prompt)

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
            usage=self._response_usage(answer.usage) if self._report_usage else None,
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

    def _respond(self, *items: Any, prompt: str) -> ModelResponse:
        usage = self._usage(prompt, items) if self._report_usage else Usage()
        self.reported.append(usage)
        return ModelResponse(output=list(items), usage=usage, response_id=f"resp_{next(self._ids)}")

    def _usage(self, prompt: str, items: Sequence[Any]) -> Usage:
        """One request's usage: the repeated start of the prompt is cached, as providers do."""
        previous = self._previous_input
        pairs = enumerate(zip(prompt, previous, strict=False))
        shared = next((n for n, (a, b) in pairs if a != b), min(len(prompt), len(previous)))
        cached = tokens_of(prompt[:shared]) // 2 * 2
        self._previous_input = prompt
        reasoning = sum(
            tokens_of(part.text)
            for item in items
            if isinstance(item, ResponseReasoningItem)
            for part in item.summary
        )
        written = sum(
            tokens_of(item.model_dump_json())
            for item in items
            if not isinstance(item, ResponseReasoningItem)
        )
        input_tokens = tokens_of(prompt)
        output_tokens = written + reasoning
        return Usage(
            requests=1,
            input_tokens=input_tokens,
            input_tokens_details=InputTokensDetails(
                cached_tokens=min(cached, input_tokens), cache_write_tokens=0
            ),
            output_tokens=output_tokens,
            output_tokens_details=OutputTokensDetails(reasoning_tokens=reasoning),
            total_tokens=input_tokens + output_tokens,
        )

    @staticmethod
    def _response_usage(usage: Usage) -> ResponseUsage:
        return ResponseUsage(
            input_tokens=usage.input_tokens,
            input_tokens_details=usage.input_tokens_details,
            output_tokens=usage.output_tokens,
            output_tokens_details=usage.output_tokens_details,
            total_tokens=usage.total_tokens,
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


def demo_agent(
    turns: Sequence[Turn] = DEMO_SCRIPT, *, report_usage: bool = False
) -> tuple[Agent[Any], ScriptedModel]:
    """An agent with a weather tool, driven by a :class:`ScriptedModel` playing ``turns``."""
    model = ScriptedModel(turns, report_usage=report_usage)
    agent: Agent[Any] = Agent(
        name="Assistant",
        instructions="Be brief.",
        model=model,
        tools=[get_weather],
    )
    return agent, model
