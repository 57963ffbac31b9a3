"""An engine whose module uses two models that could hold its sessions."""

from __future__ import annotations

from django.contrib.sessions.backends.base import SessionBase

from tests.models import PlainSession, UserSession

__all__ = ["PlainSession", "SessionStore", "UserSession"]


class SessionStore(SessionBase):
    pass
