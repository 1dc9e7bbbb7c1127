"""``python -m agent_session_store``: the CLI, for when no script is on PATH."""

from agent_session_store.cli import main

if __name__ == "__main__":
    main()
