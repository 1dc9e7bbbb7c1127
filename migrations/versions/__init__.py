"""agent-session-store's revisions (branch label ``agent_session_store``)."""
