"""An engine on Django's db engine whose model adds the user and the address."""

from __future__ import annotations

from typing import Any

from django.contrib import auth
from django.contrib.sessions.backends import db

from tests.models import UserSession


class SessionStore(db.SessionStore):
    @classmethod
    def get_model_class(cls) -> type[UserSession]:
        return UserSession

    def create_model_instance(self, data: dict[str, Any]) -> UserSession:
        return UserSession(
            session_key=self._get_or_create_session_key(),  # type: ignore[attr-defined]
            session_data=self.encode(data),
            expire_date=self.get_expiry_date(),
            user_id=data.get(auth.SESSION_KEY),
            ip="192.0.2.1",
        )
