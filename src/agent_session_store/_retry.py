"""When a write that the server rolled back runs again, and for how long.

:class:`RetryPolicy` is the one place that decides it: which errors are worth another try
(its :class:`RetryKind` list, each a named test of the error), how long to sleep before the
next try (capped exponential backoff with full jitter), and when to stop (a total deadline
for the call, not a count of attempts). A Galera certification conflict can hit the same
batch many times in a row under multi-writer load; a fixed count of attempts ran out for
0.58% of batches there, while a deadline lets a call keep going as long as it is getting
somewhere and still bounds how long a caller can wait.

Other kinds (a standby that refused a write, no primary yet) are added with
:meth:`RetryPolicy.with_kinds`.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

from sqlalchemy.exc import DBAPIError

from agent_session_store.errors import ArgumentTypeError, InvalidArgumentError

#: Seconds a write may keep retrying after its first attempt failed, by default.
DEFAULT_RETRY_DEADLINE_S = 20.0
#: The first sleep's upper bound; each retry doubles it, up to ``MAX_SLEEP_S``.
FIRST_SLEEP_S = 0.005
#: The longest single sleep between two attempts.
MAX_SLEEP_S = 0.5


@dataclass(frozen=True)
class RetryKind:
    """A named kind of error after which running the write again is safe."""

    name: str
    matches: Callable[[DBAPIError], bool]


def _sqlstate(exc: DBAPIError) -> str | None:
    orig = exc.orig
    found = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return found if isinstance(found, str) else None


def _mysql_code(exc: DBAPIError) -> int | None:
    args = getattr(exc.orig, "args", ())
    return args[0] if args and isinstance(args[0], int) else None


def _deadlock(exc: DBAPIError) -> bool:
    # 1213 is also how Galera reports a certification conflict (the write set of another
    # node's transaction committed first): the transaction was rolled back, as for a deadlock.
    if _sqlstate(exc) == "40P01" or _mysql_code(exc) == 1213:
        return True
    return "deadlock" in str(exc.orig).lower()


def _serialization(exc: DBAPIError) -> bool:
    return _sqlstate(exc) == "40001"


def _lock_wait_timeout(exc: DBAPIError) -> bool:
    # MySQL's innodb_lock_wait_timeout and PostgreSQL's lock_timeout (55P03): the statement
    # gave up waiting for a row lock, and the transaction is rolled back with our handling.
    return _mysql_code(exc) == 1205 or _sqlstate(exc) == "55P03"


def _sqlite_busy(exc: DBAPIError) -> bool:
    return "database is locked" in str(exc.orig).lower()


#: What every store retries: the server rolled the whole transaction back.
ROLLED_BACK_KINDS: tuple[RetryKind, ...] = (
    RetryKind("deadlock or certification conflict", _deadlock),
    RetryKind("serialization failure", _serialization),
    RetryKind("lock wait timeout", _lock_wait_timeout),
    RetryKind("sqlite busy", _sqlite_busy),
)


@dataclass
class RetryStats:
    """What the retries of one store did, for figures and tests (not thread-exact)."""

    #: Calls that needed at least one retry.
    calls_retried: int = 0
    #: Retries over all calls.
    retries: int = 0
    #: The most attempts one call made.
    most_attempts: int = 1
    #: The longest a call spent sleeping between its attempts, in seconds.
    longest_wait_s: float = 0.0
    #: Calls that gave up because the deadline passed (their last error was raised).
    gave_up: int = 0
    #: Retries by kind name.
    by_kind: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class RetryPolicy:
    """Which errors a write is run again after, how long it sleeps, and when it stops.

    ``deadline_s``: once an attempt failed with a kind this policy retries, the call keeps
    retrying until this many seconds have passed since that first failure; 0 means never
    retry. The clock starts at the failure, not at the call: an attempt that was stalled
    (a Galera cluster waiting out a lost node's timeout, a lock held by another writer) and
    then rolled back still gets its retries once the stall is over. ``first_sleep_s`` and
    ``max_sleep_s``: the n-th sleep is uniform in ``[0, min(max_sleep_s, first_sleep_s * 2**n)]``
    ("full jitter": concurrent losers spread out instead of colliding again in step).
    """

    deadline_s: float = DEFAULT_RETRY_DEADLINE_S
    first_sleep_s: float = FIRST_SLEEP_S
    max_sleep_s: float = MAX_SLEEP_S
    kinds: tuple[RetryKind, ...] = ROLLED_BACK_KINDS
    stats: RetryStats = field(default_factory=RetryStats, compare=False)

    def with_kinds(self, *kinds: RetryKind) -> RetryPolicy:
        """This policy, also retrying ``kinds`` (its statistics shared)."""
        return replace(self, kinds=self.kinds + kinds)

    def kind_of(self, exc: BaseException) -> RetryKind | None:
        """The kind ``exc`` is, if it is one this policy retries; a lost connection is none."""
        if not isinstance(exc, DBAPIError) or exc.connection_invalidated:
            return None
        for kind in self.kinds:
            if kind.matches(exc):
                return kind
        return None

    def start(self) -> RetryClock:
        """The clock of one call (its deadline runs from the call's first failure)."""
        return RetryClock(self)


class RetryClock:
    """One call's attempts: how long to sleep before the next one, or None to give up."""

    def __init__(self, policy: RetryPolicy) -> None:
        """A call's clock; its deadline is set by the call's first failure."""
        self._policy = policy
        self._deadline: float | None = None
        self.attempts = 1
        self.waited_s = 0.0

    def next_sleep(self, kind: str) -> float | None:
        """Seconds to sleep before the next attempt after an error of ``kind``; None: stop."""
        policy = self._policy
        now = time.monotonic()
        if self._deadline is None:
            self._deadline = now + policy.deadline_s
        left = self._deadline - now
        if left <= 0:
            if self.attempts > 1:
                policy.stats.gave_up += 1
            return None
        bound = min(policy.max_sleep_s, policy.first_sleep_s * 2 ** min(self.attempts - 1, 30))
        sleep = min(random.uniform(0, bound), left)
        stats = policy.stats
        if self.attempts == 1:
            stats.calls_retried += 1
        self.attempts += 1
        self.waited_s += sleep
        stats.retries += 1
        stats.by_kind[kind] = stats.by_kind.get(kind, 0) + 1
        stats.most_attempts = max(stats.most_attempts, self.attempts)
        stats.longest_wait_s = max(stats.longest_wait_s, self.waited_s)
        return sleep


def retry_policy(deadline: object) -> RetryPolicy:
    """The policy for ``SessionStore(retry_deadline=...)``: seconds, a ``timedelta``, or None."""
    from datetime import timedelta

    if deadline is None:
        return RetryPolicy()
    if isinstance(deadline, timedelta):
        deadline = deadline.total_seconds()
    if isinstance(deadline, bool) or not isinstance(deadline, (int, float)):
        raise ArgumentTypeError(
            "retry_deadline must be a number of seconds or a timedelta, not "
            f"{type(deadline).__name__}"
        )
    if not 0 <= deadline < float("inf"):
        raise InvalidArgumentError(
            f"retry_deadline must be 0 (never retry) or a positive number of seconds, "
            f"got {deadline!r}"
        )
    return RetryPolicy(deadline_s=float(deadline))
