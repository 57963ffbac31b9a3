"""Session stores that differ from Django's in the ways third-party ones do."""

from __future__ import annotations

import json
from typing import Any

from django.contrib.sessions.backends import db


class RenamedSessionStore(db.SessionStore):
    """Signs with its own salt, which follows the class name."""


class PlainJSONSessionStore(db.SessionStore):
    """Keeps sessions as unsigned JSON, and raises on anything else."""

    def encode(self, session_dict: dict[str, Any]) -> str:
        return json.dumps(session_dict)

    def decode(self, session_data: str | bytes) -> dict[str, Any]:
        session: dict[str, Any] = json.loads(session_data)
        return session
