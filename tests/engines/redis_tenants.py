"""django-redis-sessions, made to keep each tenant's sessions under a name of its own."""

from __future__ import annotations

from redis_sessions import session


class SessionStore(session.SessionStore):  # type: ignore[misc]
    def get_real_stored_key(self, session_key: str) -> str:
        return f"tenant-a:{session_key}"
