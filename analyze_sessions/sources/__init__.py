"""Where raw sessions come from: one module per kind of session store."""

from __future__ import annotations

from datetime import datetime
from importlib import import_module
from typing import NamedTuple

from django.contrib.sessions.backends.base import SessionBase


class RawSession(NamedTuple):
    """
    A session as its store keeps it, before any decoding.

    ``stored_size`` is the size of ``data`` as the store measures it, so that
    a size filter applied by the store and the sizes reported always agree.
    """

    key: str
    data: str
    expires_at: datetime | None
    stored_size: int


class UnsupportedEngine(Exception):
    """The configured session engine cannot be scanned; the message says why."""


def session_store_class(engine: str) -> type[SessionBase]:
    """Return the ``SessionStore`` class of the session engine module ``engine``."""
    try:
        store_class: type[SessionBase] = import_module(engine).SessionStore
    except (ImportError, AttributeError) as error:
        raise UnsupportedEngine(f"Cannot load session engine '{engine}': {error}.") from error
    return store_class
