"""Every place the store reads something SQLAlchemy (or asyncpg) does not document.

One named function each, with the versions it was checked on. Each answers conservatively
when what it reads is missing or shaped differently: the caller then takes SQLAlchemy's own
path (Core), never a guess. ``_probe.py`` calls :func:`self_check` once per engine, so a
SQLAlchemy release that moves one of these names sends the store to Core with a warning
instead of changing its behaviour.

Checked on SQLAlchemy 2.0.36, 2.0.41, 2.0.50 (pyproject's floor, each name read in its
source) and 2.1.9, written ``2.0.36/41/50, 2.1.9`` below; asyncpg 0.29-0.30.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.pool import Pool, reset_none
from sqlalchemy.sql.compiler import SQLCompiler

#: Engine events a statement run on the driver path reproduces: none of them fire per
#: statement. ``engine_disposed`` has nothing to do with statements.
_ENGINE_EVENTS_REPRODUCED = frozenset({"engine_disposed"})
#: Dialect events the driver path reproduces: ``do_connect`` fires as the pool connects,
#: which the driver path uses too; ``do_execute`` and ``handle_error`` would be skipped.
_DIALECT_EVENTS_REPRODUCED = frozenset({"do_connect"})


def _listened(dispatch: Any) -> set[str]:
    # 2.0.36/41/50, 2.1.9: a dispatcher class lists its event names in ``_event_names``; each
    # name is a collection of listeners, truthy when it holds one. An engine made by
    # ``execution_options()`` may have a joined dispatcher (its own listeners and its
    # parent's), whose names are those of its local dispatcher.
    names = getattr(type(dispatch), "_event_names", None)
    if names is None:
        names = type(dispatch.local)._event_names
    return {name for name in names if getattr(dispatch, name)}


def may_have_listeners(engine: Engine) -> bool:
    """False only when no listener was ever added to ``engine`` or its dialect (cheap).

    Reads ``Engine._has_events`` / ``Dialect._has_events``, which SQLAlchemy sets when a
    listener is first added and never clears (2.0.36/41/50, 2.1.9). True when either is
    missing.
    """
    return bool(getattr(engine, "_has_events", True)) or bool(
        getattr(engine.dialect, "_has_events", True)
    )


def unreproduced_listeners(engine: Engine) -> list[str]:
    """The engine and dialect events with listeners the driver path would not fire."""
    engine_events = _listened(engine.dispatch) - _ENGINE_EVENTS_REPRODUCED
    dialect_events = _listened(engine.dialect.dispatch) - _DIALECT_EVENTS_REPRODUCED
    return sorted(engine_events | dialect_events)


def pool_needs_io_per_checkout(pool: Pool) -> bool:
    """True when checking an idle connection out of ``pool`` or back in may do I/O.

    That is: pre-ping, recycling by age, a reset on return, or a disconnect seen (after
    which the pool replaces older connections at checkout). Reads the pool's ``_pre_ping``,
    ``_recycle``, ``_reset_on_return`` and ``_invalidate_time`` (2.0.36/41/50, 2.1.9); True
    when any is missing.
    """
    return not (
        getattr(pool, "_pre_ping", True) is False
        and getattr(pool, "_recycle", 0) < 0
        and getattr(pool, "_reset_on_return", None) is reset_none
        and getattr(pool, "_invalidate_time", 1) == 0
    )


def invalidate_pool_since(fairy: Any, error: BaseException) -> None:
    """Invalidate ``fairy`` and every older connection of its pool, as SQLAlchemy does.

    On a disconnect SQLAlchemy's ``Connection`` calls ``pool._invalidate(fairy, e)``
    (2.0.36/41/50, 2.1.9): connections made before now are presumed gone (a server restart).
    Without that method, only this connection is invalidated.
    """
    pool = getattr(fairy, "_pool", None)
    invalidate = getattr(pool, "_invalidate", None)
    if invalidate is None:
        fairy.invalidate(error)
        return
    invalidate(fairy, error)


def invalidate_pool(pool: Pool) -> None:
    """Have every connection of ``pool`` made before now replaced at its next checkout.

    ``Pool._invalidate`` (2.0.36/41/50, 2.1.9) without a connection only moves the pool's
    invalidation time, as a disconnect does. Without that method the pool is left alone: a
    retry may then reuse a connection to the same server.
    """
    invalidate = getattr(pool, "_invalidate", None)
    if invalidate is not None:
        invalidate(None)


def on_connect_isolation_level(dialect: Dialect) -> str | None:
    """The ``isolation_level`` given to ``create_engine``, None when none was.

    Reads ``DefaultDialect._on_connect_isolation_level``, which ``create_engine`` sets from
    its ``isolation_level`` argument and the dialect applies to every new connection and at
    every reset (2.0.50, 2.1.9). ``"<unreadable>"`` when missing, so that the caller keeps to
    Core; :func:`self_check` reports that first.
    """
    level: str | None = getattr(dialect, "_on_connect_isolation_level", "<unreadable>")
    return level


def positional_bind_names(compiled: SQLCompiler) -> tuple[str, ...] | None:
    """The bind names of a positional statement in parameter order, None if unknown.

    ``SQLCompiler.positiontup`` (2.0.36/41/50, 2.1.9; public but undocumented).
    """
    names = getattr(compiled, "positiontup", None)
    return None if names is None else tuple(names)


def translate_asyncpg_error(adapted: Any, error: Exception) -> Exception:
    """``error`` from asyncpg as the DBAPI-style exception SQLAlchemy's adapter raises.

    Calls the adapted connection's ``_handle_exception`` (2.0.36/41/50, 2.1.9 translate
    asyncpg's classes there, by SQLSTATE, into the adapter module's ``Error`` subclasses). Returns
    ``error`` itself when it does not raise a translated exception.
    """
    handle = getattr(adapted, "_handle_exception", None)
    if handle is None:
        return error
    try:
        handle(error)
    except Exception as translated:
        return translated
    return error  # pragma: no cover - it always raises


def asyncpg_settings_reproduced(adapted: Any) -> str | None:
    """Why the driver path would not run asyncpg as this adapted connection does, or None.

    The driver path sends statements with asyncpg's own ``fetch``/``execute``, which prepare
    through asyncpg's statement cache under asyncpg's names. That matches SQLAlchemy's
    adapter only with its defaults: no ``prepared_statement_name_func`` (read from
    ``_prepared_statement_name_func``, a bound ``_default_name_func`` by default) and
    asyncpg's statement cache on (``Connection._stmt_cache.get_max_size()``, asyncpg
    0.29-0.30). Checked on SQLAlchemy 2.0.36/41/50, 2.1.9.
    """
    name_func = getattr(adapted, "_prepared_statement_name_func", None)
    if getattr(name_func, "__name__", None) != "_default_name_func":
        return "the engine sets prepared_statement_name_func (asyncpg)"
    cache = getattr(getattr(adapted, "_connection", None), "_stmt_cache", None)
    max_size = getattr(cache, "get_max_size", None)
    if max_size is None or max_size() <= 0:
        return "asyncpg's statement_cache_size is 0 (or could not be read)"
    return None


def self_check(dialect: Dialect) -> str | None:
    """Why this SQLAlchemy's internals do not look as the functions above expect, or None."""
    from sqlalchemy import create_engine

    engine = create_engine("sqlite://")
    try:
        if not hasattr(engine, "_has_events") or not hasattr(engine.dialect, "_has_events"):
            return "SQLAlchemy's Engine._has_events gate is missing"
        try:
            unreproduced_listeners(engine)
        except (AttributeError, TypeError):
            return "SQLAlchemy's event dispatchers no longer list their event names"
        if not hasattr(engine.pool, "_invalidate"):
            return "SQLAlchemy's Pool._invalidate is missing"
    finally:
        engine.dispose()
    if not hasattr(dialect, "_on_connect_isolation_level"):
        return "SQLAlchemy's Dialect._on_connect_isolation_level is missing"
    if dialect.driver == "asyncpg" and not hasattr(
        dialect.loaded_dbapi, "_asyncpg_error_translate"
    ):
        return "SQLAlchemy's asyncpg adapter no longer translates errors by SQLSTATE"
    return None
