"""Session stores that differ from Django's in the ways third-party ones do."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.sessions.backends import db


class RenamedSessionStore(db.SessionStore):
    """Signs with its own salt, which follows the class name."""


class LegacySessionStore(db.SessionStore):
    """
    Also reads sessions that an old deploy kept as "legacy:" and unsigned
    JSON, where {"__set__": [...]} stands for a set. Anything else goes to
    Django's decode(), which returns {} for what it cannot read.
    """

    def decode(self, session_data: str | bytes) -> dict[str, Any]:
        if isinstance(session_data, str) and session_data.startswith("legacy:"):
            session: dict[str, Any] = json.loads(session_data[7:], object_hook=_revive_sets)
            return session
        return super().decode(session_data)


def _revive_sets(value: dict[str, Any]) -> Any:
    return set(value["__set__"]) if set(value) == {"__set__"} else value
