"""Django's cache engine, with session keys of the site's own making."""

from __future__ import annotations

from django.contrib.sessions.backends import cache
from django.contrib.sessions.backends.base import VALID_KEY_CHARS, CreateError
from django.utils.crypto import get_random_string


class SessionStore(cache.SessionStore):
    def create(self) -> None:
        while True:
            self._session_key = f"site{get_random_string(12, VALID_KEY_CHARS)}"
            try:
                self.save(must_create=True)
            except CreateError:
                continue
            self.modified = True
            return
