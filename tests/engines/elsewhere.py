"""An engine that keeps sessions somewhere no source knows how to list."""

from __future__ import annotations

from django.contrib.sessions.backends.base import SessionBase


class SessionStore(SessionBase):
    pass
