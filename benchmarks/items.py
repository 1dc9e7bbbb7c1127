"""Items shaped like real Responses-API items: about 2.5 KB of JSON per turn of six."""

from __future__ import annotations

import hashlib
import itertools
import json
from typing import Any

_counter = itertools.count()

_QUESTION = (
    "I'm planning a three-day trip to Lisbon at the end of March. Could you check the weather "
    "forecast for the dates and tell me whether I should pack a rain jacket? Also, which "
    "neighbourhoods are nice to walk around in the evening? We like small restaurants, "
    "viewpoints and live music, and we would rather avoid the busiest tourist streets. "
)
_THOUGHT = (
    "The user wants a forecast for Lisbon for late March and packing advice. I should call the "
    "weather tool with the city and the date range, then summarise precipitation chances and "
    "temperatures, and suggest walkable neighbourhoods such as Alfama, Bairro Alto and Chiado. "
    "They prefer quieter places with music, so mention Mouraria and the fado houses as well, and "
    "keep the answer short enough to read on a phone. "
)
_FORECAST = {
    "city": "Lisbon",
    "days": [
        {"date": "2026-03-27", "high_c": 19, "low_c": 11, "rain_mm": 2.1, "summary": "showers"},
        {"date": "2026-03-28", "high_c": 20, "low_c": 12, "rain_mm": 0.0, "summary": "sunny"},
        {"date": "2026-03-29", "high_c": 18, "low_c": 11, "rain_mm": 5.4, "summary": "rain"},
    ],
    "source": "example-weather-service",
}
_ANSWER = (
    "Expect mild days around 18-20 °C with showers on the 27th and proper rain on the 29th, so "
    "yes, pack a light rain jacket. In the evening, Alfama's lanes and miradouros are lovely, "
    "Bairro Alto is lively after dark, and Chiado is good for a quieter stroll and dinner. "
    "For live music away from the crowds, try the small fado houses in Mouraria, where locals "
    "still sing; book a table a day ahead on weekends. Trams 28 and 12 get you up the hills "
    "if your legs are tired, though walking is the best way to find the viewpoints. "
)


def _hex(i: int, kind: str, length: int = 48) -> str:
    """A hex id like the API's (``rs_68a1...``), different per item and kind."""
    return hashlib.sha256(f"{kind}{i}".encode()).hexdigest()[:length]


def turn(n: int | None = None) -> list[dict[str, Any]]:
    """Six items of one agent turn: user, reasoning, function call and output, reasoning, reply."""
    i = next(_counter) if n is None else n
    call_id = f"call_{_hex(i, 'call', 24)}"
    return [
        {"role": "user", "content": f"{_QUESTION}(turn {i})"},
        {
            "id": f"rs_{_hex(i, 'rs')}",
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": _THOUGHT}],
        },
        {
            "id": f"fc_{_hex(i, 'fc')}",
            "type": "function_call",
            "call_id": call_id,
            "name": "get_weather_forecast",
            "arguments": json.dumps({"city": "Lisbon", "from": "2026-03-27", "days": 3}),
            "status": "completed",
        },
        {"type": "function_call_output", "call_id": call_id, "output": json.dumps(_FORECAST)},
        {
            "id": f"rs_{_hex(i, 'rs2')}",
            "type": "reasoning",
            "summary": [{"type": "summary_text", "text": "Forecast in hand; answer briefly."}],
        },
        {
            "id": f"msg_{_hex(i, 'msg')}",
            "type": "message",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": _ANSWER, "annotations": []}],
        },
    ]


def items(count: int) -> list[dict[str, Any]]:
    """``count`` items cycling through the shapes of a turn."""
    out: list[dict[str, Any]] = []
    while len(out) < count:
        out.extend(turn())
    return out[:count]


def payload_bytes(values: list[dict[str, Any]]) -> int:
    """Size of ``values`` as compact UTF-8 JSON, the way the stores write them."""
    return sum(
        len(json.dumps(v, ensure_ascii=False, separators=(",", ":")).encode()) for v in values
    )
