"""A session engine whose table was never created, as on a replica left behind."""

from __future__ import annotations

from django.contrib.sessions.backends import db
from django.contrib.sessions.base_session import AbstractBaseSession


class UnmigratedSession(AbstractBaseSession):
    class Meta:
        app_label = "tests"
        managed = False
        db_table = "unmigrated_session"


class SessionStore(db.SessionStore):
    @classmethod
    def get_model_class(cls) -> type[UnmigratedSession]:
        return UnmigratedSession
