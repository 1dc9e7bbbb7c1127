"""``agent-session-store``: look at, move, prune and migrate conversation history from a shell.

Every command takes ``--url`` (else ``AGENT_SESSION_STORE_URL``, else the embedded SQLite file
``agent_sessions.db``). Errors a person can act on print one line and exit with status 1, or 3
when the database cannot be reached; ``--debug`` shows the traceback instead.

This module imports click and nothing else of weight: each command lives in a module of its
own kind (``_cli_read``, ``_cli_transfer``, ``_cli_records``, ``_cli_migrate``), imported when
that command runs, so ``--version`` and ``--help`` of one command do not pay for SQLAlchemy,
rich or Alembic.
"""

from __future__ import annotations

import importlib

import click

from agent_session_store import __version__

#: Each command's name and where it is defined, as ``module:attribute``.
COMMANDS = {
    "check": "agent_session_store._cli_migrate:check_command",
    "current": "agent_session_store._cli_migrate:current_command",
    "demo": "agent_session_store._cli_read:demo_command",
    "downgrade": "agent_session_store._cli_migrate:downgrade_command",
    "erase-user": "agent_session_store._cli_records:erase_user_command",
    "export": "agent_session_store._cli_transfer:export_command",
    "import": "agent_session_store._cli_transfer:import_command",
    "import-sdk-sqlite": "agent_session_store._cli_transfer:import_sdk_sqlite_command",
    "prune": "agent_session_store._cli_read:prune_command",
    "restore": "agent_session_store._cli_records:restore_command",
    "sessions": "agent_session_store._cli_read:sessions_command",
    "show": "agent_session_store._cli_read:show_command",
    "upgrade": "agent_session_store._cli_migrate:upgrade_command",
}


class LazyGroup(click.Group):
    """A group whose commands are imported from :data:`COMMANDS` when first looked up."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command's name, without importing any of them."""
        return sorted({*super().list_commands(ctx), *COMMANDS})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command called ``cmd_name``, imported from its module the first time."""
        command = super().get_command(ctx, cmd_name)
        if command is not None or cmd_name not in COMMANDS:
            return command
        module, _, attribute = COMMANDS[cmd_name].partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):
            raise TypeError(f"{COMMANDS[cmd_name]} is not a click command")
        self.add_command(command, cmd_name)  # later lookups find it directly
        return command


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="agent-session-store")
def cli() -> None:
    """Look at, export, import, prune and migrate agent conversation history."""


def main() -> None:
    """The ``agent-session-store`` console script."""
    cli(prog_name="agent-session-store")
