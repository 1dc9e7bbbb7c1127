"""What ``record_usage`` accepts, read into one checked :class:`RunUsage`.

A run's usage arrives as the SDK's ``RunResult``/``RunResultStreaming`` (its
``context_wrapper.usage``), an ``agents.usage.Usage``, or a mapping with the same fields (the
SDK's ``serialize_usage`` output included). The SDK is never imported: objects are read by
their attributes. Everything is checked before a connection is taken, so bad input writes
nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent_session_store.errors import ArgumentTypeError, InvalidArgumentError

#: The largest count a ``BIGINT`` column holds.
MAX_COUNT = 2**63 - 1
MAX_MODEL_LENGTH = 255
_COUNTS = ("requests", "input_tokens", "output_tokens", "total_tokens")
_FIELDS = frozenset(
    (*_COUNTS, "input_tokens_details", "output_tokens_details", "request_usage_entries")
)


@dataclass(frozen=True)
class RunUsage:
    """The usage of one run, as one ledger row stores it."""

    requests: int
    input_tokens: int
    output_tokens: int
    total_tokens: int
    cached_tokens: int | None
    reasoning_tokens: int | None
    model: str | None


def run_usage(source: Any, model: str | None = None) -> RunUsage:
    """Read and check the usage in ``source``; ``model`` names the model when given.

    Without ``model``, a run result's model is the one its requests name (the SDK's
    ``request_usage_entries``) when they all name the same, else its last agent's model when
    that is a name (or an SDK model object with a ``model`` name); otherwise None.

    Raises:
        ArgumentTypeError: ``source`` is none of the accepted kinds, or a count is not an int.
        InvalidArgumentError: a count is negative or too large, a detail exceeds its total,
            a mapping has a key the SDK's ``Usage`` does not, a streamed run has not
            finished, or ``model`` is not a usable name.
    """
    checked_model = check_model(model)
    usage, fallback_model = _usage_of(source)
    if isinstance(usage, Mapping):
        unknown = sorted(str(key) for key in set(usage) - _FIELDS)
        if unknown:
            raise InvalidArgumentError(
                f"unknown usage field(s) {unknown}; a usage mapping takes {sorted(_FIELDS)}"
            )
        get = usage.get
    elif all(hasattr(usage, name) for name in ("input_tokens", "output_tokens")):
        def get(name: str, default: Any = None) -> Any:
            return getattr(usage, name, default)
    else:
        raise ArgumentTypeError(
            "record_usage takes an Agents SDK RunResult or RunResultStreaming, an "
            "agents.usage.Usage, or a mapping with its fields (input_tokens, output_tokens, "
            f"...), not {type(source).__name__}"
        )
    input_tokens = _count(get("input_tokens"), "input_tokens")
    output_tokens = _count(get("output_tokens"), "output_tokens")
    given_requests, given_total = get("requests"), get("total_tokens")
    requests = 1 if given_requests is None else _count(given_requests, "requests")
    total = (
        input_tokens + output_tokens
        if given_total is None
        else _count(given_total, "total_tokens")
    )
    cached = _detail(get("input_tokens_details"), "cached_tokens", "input_tokens_details")
    reasoning = _detail(get("output_tokens_details"), "reasoning_tokens", "output_tokens_details")
    if cached is not None and cached > input_tokens:
        raise InvalidArgumentError(
            f"cached_tokens ({cached}) exceeds input_tokens ({input_tokens}): cached tokens "
            "are part of the input tokens"
        )
    if reasoning is not None and reasoning > output_tokens:
        raise InvalidArgumentError(
            f"reasoning_tokens ({reasoning}) exceeds output_tokens ({output_tokens}): "
            "reasoning tokens are part of the output tokens"
        )
    if checked_model is None:
        checked_model = _entries_model(get("request_usage_entries")) or fallback_model
    return RunUsage(
        requests, input_tokens, output_tokens, total, cached, reasoning, checked_model
    )


def check_model(model: object) -> str | None:
    """Return ``model`` if it is None or a model name of 1 to 255 characters, else raise."""
    if model is None:
        return None
    if not isinstance(model, str):
        raise ArgumentTypeError(f"model must be a str or None, not {type(model).__name__}")
    if not model or len(model) > MAX_MODEL_LENGTH or "\x00" in model:
        raise InvalidArgumentError(
            f"model must be a name of 1 to {MAX_MODEL_LENGTH} characters without NUL, "
            f"got {model[:40]!r}{'...' if len(model) > 40 else ''}"
        )
    return model


def _usage_of(source: Any) -> tuple[Any, str | None]:
    """The usage object or mapping in ``source``, and the model a run result names."""
    wrapper = getattr(source, "context_wrapper", None)
    if wrapper is None or isinstance(source, Mapping):
        return source, None
    if getattr(source, "is_complete", True) is False:
        raise InvalidArgumentError(
            "this streamed run has not finished, so its usage is not final: record it after "
            "the loop over result.stream_events() ends"
        )
    usage = getattr(wrapper, "usage", None)
    if usage is None:
        raise ArgumentTypeError(
            f"{type(source).__name__}.context_wrapper has no usage; pass the run's Usage"
        )
    return usage, _agent_model(getattr(source, "last_agent", None))


def _agent_model(agent: Any) -> str | None:
    named = getattr(agent, "model", None)
    if not isinstance(named, str):
        named = getattr(named, "model", None)  # OpenAIResponsesModel and its kin keep a name
    try:
        return check_model(named) if isinstance(named, str) else None
    except InvalidArgumentError:
        return None


def _entries_model(entries: Any) -> str | None:
    if not isinstance(entries, Sequence) or isinstance(entries, str) or not entries:
        return None
    names = {
        entry.get("model_name")
        if isinstance(entry, Mapping)
        else getattr(entry, "model_name", None)
        for entry in entries
    }
    if len(names) != 1:
        return None
    name = names.pop()
    return name if isinstance(name, str) and 0 < len(name) <= MAX_MODEL_LENGTH else None


def _count(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        shown = "missing" if value is None else f"a {type(value).__name__}"
        raise ArgumentTypeError(f"{name} must be an int, got {shown}: nothing was recorded")
    if value < 0 or value > MAX_COUNT:
        raise InvalidArgumentError(
            f"{name} must be between 0 and {MAX_COUNT}, got {value}: nothing was recorded"
        )
    return int(value)


def _detail(details: Any, name: str, where: str) -> int | None:
    """``details.name`` (a mapping, an object, or the SDK's serialized one-item list)."""
    if isinstance(details, Sequence) and not isinstance(details, (str, bytes)):
        if len(details) != 1:
            raise InvalidArgumentError(
                f"{where} must be one mapping or object (or a list of one), got "
                f"{len(details)} items"
            )
        details = details[0]
    if details is None:
        return None
    value = details.get(name) if isinstance(details, Mapping) else getattr(details, name, None)
    return None if value is None else _count(value, f"{where}.{name}")
