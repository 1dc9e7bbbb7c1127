"""The SDK's session wrappers over our session, driven by the real Runner and a scripted model.

``EncryptedSession`` runs entirely offline. ``OpenAIResponsesCompactionSession`` calls the
OpenAI ``responses.compact`` endpoint, so its tests start a loopback HTTP server that answers
like that endpoint and point the OpenAI client's ``base_url`` at it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from agent_session_store import SessionStore

agents = pytest.importorskip("agents")
pytest.importorskip("cryptography")

from agents.extensions.memory import EncryptedSession  # noqa: E402
from agents.memory import OpenAIResponsesCompactionSession  # noqa: E402
from cryptography.fernet import Fernet  # noqa: E402
from openai import AsyncOpenAI, DefaultAsyncHttpxClient  # noqa: E402

from agent_session_store._demo import DEMO_TURNS, run_demo  # noqa: E402

DEMO_KINDS = [
    "user", "reasoning", "function_call", "function_call_output", "message",
    "user", "function_call", "function_call_output", "message", "user", "message",
]


def kinds(items: list[Any]) -> list[str]:
    return [item.get("type", item.get("role")) for item in items]


# -- EncryptedSession ---------------------------------------------------------------------------


async def test_encrypted_session_over_ours_round_trips_a_runner_conversation(
    store: SessionStore,
) -> None:
    key = Fernet.generate_key().decode()
    session = EncryptedSession("enc", underlying_session=store.session("enc"), encryption_key=key)
    answers = await run_demo(session)
    assert answers[1] == "The forecast says Tokyo: 18 °C, light rain."
    items = await session.get_items()
    assert kinds(items) == DEMO_KINDS
    assert items[0]["content"] == DEMO_TURNS[0]
    assert kinds(await session.get_items(limit=2)) == ["user", "message"]


async def test_encrypted_session_honours_the_settings_limit_of_our_session(
    store: SessionStore,
) -> None:
    key = Fernet.generate_key().decode()
    ours = store.session("enc", session_settings={"limit": 3})
    session = EncryptedSession("enc", underlying_session=ours, encryption_key=key)
    await run_demo(session)
    assert kinds(await session.get_items()) == ["message", "user", "message"]
    assert len(await session.get_items(limit=100)) == len(DEMO_KINDS)


async def test_encrypted_session_stores_only_ciphertext_in_our_tables(store: SessionStore) -> None:
    key = Fernet.generate_key().decode()
    session = EncryptedSession("enc", underlying_session=store.session("enc"), encryption_key=key)
    await run_demo(session)
    raw = await store.get_items("enc")
    assert len(raw) == len(DEMO_KINDS)
    assert all(item.get("__enc__") == 1 for item in raw)
    assert "Paris" not in json.dumps(raw) and "get_weather" not in json.dumps(raw)
    other_key = Fernet.generate_key().decode()
    stranger = EncryptedSession("enc", underlying_session=store.session("enc"),
                                encryption_key=other_key)
    assert await stranger.get_items() == []


async def test_encrypted_session_pop_and_clear_act_on_our_rows(store: SessionStore) -> None:
    key = Fernet.generate_key().decode()
    session = EncryptedSession("enc", underlying_session=store.session("enc"), encryption_key=key)
    await run_demo(session)
    popped = await session.pop_item()
    assert popped is not None and popped["content"][0]["text"].startswith("You're welcome")
    assert await store.count_items("enc") == len(DEMO_KINDS) - 1
    await session.clear_session()
    assert await store.session_info("enc") is None


# -- OpenAIResponsesCompactionSession -----------------------------------------------------------

COMPACTED_OUTPUT = [
    {"type": "message", "role": "user", "id": "msg_u1", "status": "completed",
     "content": [{"type": "input_text", "text": "What's the weather in Paris?"}]},
    {"type": "compaction", "id": "cmp_1", "encrypted_content": "opaque-summary"},
]


class CompactEndpoint(BaseHTTPRequestHandler):
    """Answers POST /v1/responses/compact like the OpenAI API; records each request body."""

    requests: list[tuple[str, dict[str, Any]]]

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.requests.append((self.path, body))
        reply = json.dumps({
            "id": "cmp_resp_1", "object": "response.compaction", "created_at": 1_700_000_000,
            "output": COMPACTED_OUTPUT,
            "usage": {"input_tokens": 10, "output_tokens": 2, "total_tokens": 12,
                      "input_tokens_details": {"cached_tokens": 0},
                      "output_tokens_details": {"reasoning_tokens": 0}},
        }).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def compact_server() -> Iterator[tuple[str, list[tuple[str, dict[str, Any]]]]]:
    requests: list[tuple[str, dict[str, Any]]] = []
    handler = type("Handler", (CompactEndpoint,), {"requests": requests})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", requests
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def client_for(base_url: str) -> AsyncOpenAI:
    # trust_env=False: a proxy from the environment must not intercept the loopback calls.
    return AsyncOpenAI(base_url=base_url, api_key="test-key", max_retries=0,
                       http_client=DefaultAsyncHttpxClient(trust_env=False))


async def test_manual_compaction_replaces_our_history_with_the_compacted_items(
    store: SessionStore, compact_server: tuple[str, list[Any]]
) -> None:
    base_url, requests = compact_server
    session = OpenAIResponsesCompactionSession(
        "cmp", underlying_session=store.session("cmp"), client=client_for(base_url),
        should_trigger_compaction=lambda context: False,
    )
    await run_demo(session)
    assert requests == []  # the hook declined after every turn
    assert kinds(await store.get_items("cmp")) == DEMO_KINDS
    await session.run_compaction({"force": True, "compaction_mode": "input"})
    assert len(requests) == 1
    path, body = requests[0]
    assert path == "/v1/responses/compact" and body["model"] == "gpt-4.1"
    assert kinds(body["input"]) == DEMO_KINDS
    stored = await store.get_items("cmp")
    assert kinds(stored) == ["message", "compaction"]
    assert stored[1]["encrypted_content"] == "opaque-summary"
    assert stored[0]["content"][0]["text"] == "What's the weather in Paris?"
    assert await session.get_items() == stored


async def test_compaction_triggered_by_the_runner_after_a_turn_rewrites_our_session(
    store: SessionStore, compact_server: tuple[str, list[Any]]
) -> None:
    base_url, requests = compact_server
    session = OpenAIResponsesCompactionSession(
        "auto", underlying_session=store.session("auto"), client=client_for(base_url),
        compaction_mode="input", should_trigger_compaction=lambda context: True,
    )
    await run_demo(session)
    assert len(requests) >= 1
    assert kinds(requests[0][1]["input"])[:5] == DEMO_KINDS[:5]
    stored = await store.get_items("auto")
    assert "compaction" in kinds(stored)
    assert stored == await session.get_items()
