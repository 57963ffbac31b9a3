"""
An engine written from scratch on a model of its own, without
get_model_class(), as django-user-sessions' is.
"""

from __future__ import annotations

from typing import Any

from django.contrib.sessions.backends.base import CreateError, SessionBase
from django.db import IntegrityError, transaction
from django.utils import timezone

from tests.models import PlainSession


class SessionStore(SessionBase):
    def load(self) -> dict[str, Any]:
        row = PlainSession.objects.filter(
            session_key=self.session_key, expire_date__gt=timezone.now()
        ).first()
        if row is None:
            self._session_key = None
            return {}
        session: dict[str, Any] = self.decode(row.session_data)
        return session

    def exists(self, session_key: str) -> bool:
        return PlainSession.objects.filter(session_key=session_key).exists()

    def create(self) -> None:
        while True:
            self._session_key = self._get_new_session_key()  # type: ignore[attr-defined]
            try:
                self.save(must_create=True)
            except CreateError:
                continue
            self.modified = True
            return

    def save(self, must_create: bool = False) -> None:
        fields = {
            "session_data": self.encode(self._get_session(no_load=must_create)),  # type: ignore[attr-defined]
            "expire_date": self.get_expiry_date(),
        }
        key = self._get_or_create_session_key()  # type: ignore[attr-defined]
        if must_create:
            try:
                with transaction.atomic():
                    PlainSession.objects.create(session_key=key, **fields)
            except IntegrityError as error:
                raise CreateError from error
        else:
            PlainSession.objects.update_or_create(session_key=key, defaults=fields)

    def delete(self, session_key: str | None = None) -> None:
        PlainSession.objects.filter(session_key=session_key or self.session_key).delete()

    @classmethod
    def clear_expired(cls) -> None:
        PlainSession.objects.filter(expire_date__lt=timezone.now()).delete()
