"""Which executor an engine's statements take: the driver path, or SQLAlchemy Core.

The driver path is an optimisation that must not be seen: it is taken only when everything
about the engine is on an allow-list of settings it reproduces exactly. What cannot change
after the engine is made (its driver, dialect settings, execution options, the SQLAlchemy
version's internals) is looked at once; what can (listeners, SQL logging) is looked at on
every call, cheaply. The first time an engine goes to Core, one warning says why.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from typing import Any

from sqlalchemy.engine import Engine

from agent_session_store import _internals
from agent_session_store._driver import Driver
from agent_session_store._statements import Statements

logger = logging.getLogger("agent_session_store")

#: Engine execution options the driver path reproduces. ``schema_translate_map`` is compiled
#: into its SQL (``_statements.prepare``); anything else (``isolation_level``,
#: ``logging_token``, options of other libraries) sends the engine to Core.
ALLOWED_EXECUTION_OPTIONS = frozenset({"schema_translate_map"})
_KNOWN_DRIVERS = "asyncpg, aiosqlite, aiomysql"


class Path(enum.Enum):
    """Where an operation's statements run."""

    DRIVER = "driver"
    CORE = "core"


def schema_map(engine: Engine) -> Mapping[str | None, str | None] | None:
    """The engine's ``schema_translate_map`` execution option, if it has one."""
    found: Mapping[str | None, str | None] | None
    found = engine.get_execution_options().get("schema_translate_map")
    return found or None


def _fixed_reason(engine: Engine, driver: Driver | None, statements: Statements) -> str | None:
    """Why what cannot change about ``engine`` keeps it off the driver path, or None."""
    dialect = engine.dialect
    if driver is None:
        return (
            f"its driver {dialect.driver!r} is not one the driver path knows ({_KNOWN_DRIVERS})"
        )
    broken = _internals.self_check(dialect)
    if broken is not None:
        return f"this SQLAlchemy's internals differ from what the driver path expects: {broken}"
    unknown = sorted(set(engine.get_execution_options()) - ALLOWED_EXECUTION_OPTIONS)
    if unknown:
        return f"it sets execution options the driver path does not reproduce: {unknown}"
    isolation = _internals.on_connect_isolation_level(dialect)
    if isolation is not None:
        return f"it sets isolation_level={isolation!r}, which the driver path does not reproduce"
    if not statements.all_runnable_on_driver():
        return "a statement of the store needs SQLAlchemy's type processing on this dialect"
    return None


class Probe:
    """The executor decision for one engine (the store's, with its execution options)."""

    def __init__(self, engine: Engine, driver: Driver | None, statements: Statements) -> None:
        self._engine = engine
        self._fixed: str | None = _fixed_reason(engine, driver, statements)
        #: The first connection has been looked at (asyncpg settings, error translation).
        self.connection_checked = self._fixed is not None
        self._warned = False
        if self._fixed is not None:
            self._warn(self._fixed)

    @property
    def fixed_reason(self) -> str | None:
        """Why this engine never takes the driver path, or None."""
        return self._fixed

    def path(self) -> Path:
        """The executor for an operation starting now."""
        return Path.CORE if self.reason() is not None else Path.DRIVER

    def reason(self) -> str | None:
        """Why an operation starting now goes to Core, or None for the driver path."""
        if self._fixed is not None:
            return self._fixed
        engine = self._engine
        reason: str | None = None
        if _internals.may_have_listeners(engine):
            listened = _internals.unreproduced_listeners(engine)
            if listened:
                reason = f"listeners for {listened} would not see the driver path's statements"
        if reason is None and (engine.echo or engine.logger.isEnabledFor(logging.INFO)):
            reason = "it logs SQL (echo or the sqlalchemy.engine logger at INFO)"
        if reason is not None:
            self._warn(reason)
        return reason

    def needs_connection(self, driver: Driver) -> bool:
        """True while the first connection still has to be looked at (asyncpg's settings)."""
        if driver.names != ("asyncpg",):
            self.connection_checked = True
        return not self.connection_checked

    def check_connection(self, driver: Driver, adapted: Any) -> bool:
        """Look at the engine's first connection; False (and Core from now on) if it differs."""
        self.connection_checked = True
        reason = _connection_reason(driver, adapted, self._engine)
        if reason is None:
            return True
        self._fixed = reason
        self._warn(reason)
        return False

    def _warn(self, reason: str) -> None:
        if self._warned:
            logger.debug("engine %s runs on SQLAlchemy Core: %s", self._url(), reason)
            return
        self._warned = True
        logger.warning(
            "agent_session_store: the store runs its statements through SQLAlchemy Core on "
            "the engine for %s because %s (the same results, without the driver-path speed-up)",
            self._url(),
            reason,
        )

    def _url(self) -> str:
        return self._engine.url.render_as_string(hide_password=True)


def _connection_reason(driver: Driver, adapted: Any, engine: Engine) -> str | None:
    if driver.names != ("asyncpg",):
        return None
    settings = _internals.asyncpg_settings_reproduced(adapted)
    if settings is not None:
        return settings
    import asyncpg  # type: ignore[import-untyped]

    dbapi = engine.dialect.loaded_dbapi
    translated = driver.as_dbapi_error(adapted, asyncpg.exceptions.SerializationError("probe"))
    if not isinstance(translated, dbapi.Error) or getattr(translated, "sqlstate", None) != (
        "40001"
    ):
        return "SQLAlchemy's asyncpg adapter translates errors differently from 2.0.50-2.1.9"
    return None
