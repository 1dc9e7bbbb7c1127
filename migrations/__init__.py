"""agent-session-store's Alembic environment and revisions, shipped as a package resource.

A host application's ``alembic.ini`` includes the revisions with
``version_locations = ... agent_session_store.migrations:versions``.
"""
