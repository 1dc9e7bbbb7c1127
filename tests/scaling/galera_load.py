"""Writers and poppers spread over the Galera nodes, and the checks of what they left.

Each writer appends numbered batches (``{"w": [node, task], "b": batch, "i": index}``) to a
few shared sessions; each popper pops and keeps what it got. Afterwards every item written
must be either in the history or popped, exactly once, and what is left of each batch must
be one contiguous run starting at its first item (a pop takes the newest items).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from agent_session_store import SessionStore
from agent_session_store.errors import CommitOutcomeUnknownError

SESSIONS = ("g0", "g1", "g2")

Key = tuple[int, int, int, int]  # node, task, batch, index


def batch_items(node: int, task: int, batch: int) -> list[dict[str, Any]]:
    """The items of one batch: 1 to 4 of them."""
    return [{"w": [node, task], "b": batch, "i": i} for i in range(1 + (node + task + batch) % 4)]


def session_of(node: int, task: int, batch: int) -> str:
    """Every writer writes to every session, so the nodes meet on the same rows."""
    return SESSIONS[(node + task + batch) % len(SESSIONS)]


def key(item: dict[str, Any]) -> Key:
    return (item["w"][0], item["w"][1], item["b"], item["i"])


@dataclass
class Tally:
    """What the callers saw."""

    acknowledged: list[tuple[int, int, int]] = field(default_factory=list)
    unknown: list[tuple[int, int, int]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    popped: list[Key] = field(default_factory=list)
    pops: int = 0
    slowest_call_s: float = 0.0

    def timed(self, started: float) -> None:
        self.slowest_call_s = max(self.slowest_call_s, time.monotonic() - started)


async def write(store: SessionStore, node: int, task: int, batches: int, tally: Tally) -> None:
    for batch in range(batches):
        started = time.monotonic()
        try:
            await store.add_items(session_of(node, task, batch), batch_items(node, task, batch))
        except CommitOutcomeUnknownError:
            tally.unknown.append((node, task, batch))
        except Exception as exc:  # counted: the test's point is that there are none
            tally.errors.append(f"add_items on node {node + 1}: {type(exc).__name__}: {exc}")
        else:
            tally.acknowledged.append((node, task, batch))
        tally.timed(started)


async def pop(store: SessionStore, node: int, pops: int, tally: Tally) -> None:
    for n in range(pops):
        started = time.monotonic()
        try:
            item = await store.pop_item(SESSIONS[(node + n) % len(SESSIONS)])
        except Exception as exc:
            tally.errors.append(f"pop_item on node {node + 1}: {type(exc).__name__}: {exc}")
        else:
            tally.pops += 1
            if item is not None:
                tally.popped.append(key(item))
        tally.timed(started)


@dataclass
class Outcome:
    lost: int
    duplicated: int
    split: int
    popped_twice: int
    unknown_stored: int


def judge(histories: dict[str, list[dict[str, Any]]], tally: Tally) -> Outcome:
    """Compare what is stored and popped with what the callers were told."""
    stored = Counter(key(item) for items in histories.values() for item in items)
    popped = Counter(tally.popped)
    seen = stored + popped
    wanted: Counter[Key] = Counter()
    for node, task, batch in tally.acknowledged:
        wanted.update(key(i) for i in batch_items(node, task, batch))
    unknown_stored = 0
    for node, task, batch in tally.unknown:
        keys = [key(i) for i in batch_items(node, task, batch)]
        if any(seen[k] for k in keys):  # an unknown outcome that did commit counts as written
            unknown_stored += 1
            wanted.update(keys)
    split = 0
    for items in histories.values():
        runs: dict[tuple[int, int, int], list[tuple[int, int]]] = {}
        for position, item in enumerate(items):
            runs.setdefault(key(item)[:3], []).append((position, item["i"]))
        for found in runs.values():
            positions = [p for p, _ in found]
            indexes = [i for _, i in found]
            contiguous = positions == list(range(positions[0], positions[0] + len(found)))
            if not contiguous or indexes != list(range(len(found))):
                split += 1
    return Outcome(
        lost=sum((wanted - seen).values()),
        duplicated=sum((seen - wanted).values()),
        split=split,
        popped_twice=sum(1 for count in popped.values() if count > 1),
        unknown_stored=unknown_stored,
    )
