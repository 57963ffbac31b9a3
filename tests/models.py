"""Models that third-party session apps keep sessions in, or ones like them."""

from __future__ import annotations

from django.conf import settings
from django.contrib.sessions.base_session import AbstractBaseSession
from django.contrib.sessions.models import Session
from django.db import models


class UserSession(AbstractBaseSession):
    """Built on Django's base, with who and where from, as django-qsessions' is."""

    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.CASCADE)
    ip = models.GenericIPAddressField(null=True)

    class Meta:
        app_label = "tests"


class PlainSession(models.Model):
    """A model of its own with the three session fields, as older apps have."""

    session_key = models.CharField(max_length=40, unique=True)
    session_data = models.TextField()
    expire_date = models.DateTimeField(db_index=True)

    class Meta:
        app_label = "tests"


class KeyedSession(AbstractBaseSession):
    """
    Sessions in a table of the site's own making, whose columns are named
    apart from its fields: on SQLite, made WITHOUT ROWID by the tests.
    """

    session_data = models.TextField(db_column="data")

    class Meta:
        app_label = "tests"
        managed = False
        db_table = "tests_keyed_session"


class ExtendedSession(Session):
    """Django's own sessions with a field more, in a table of its own (inheriting)."""

    note = models.CharField(max_length=20, blank=True)

    class Meta:
        app_label = "tests"


class NullableSession(models.Model):
    """A hand-made table whose session columns may all be NULL."""

    session_key = models.CharField(max_length=40, null=True)
    session_data = models.TextField(null=True)
    expire_date = models.DateTimeField(null=True)

    class Meta:
        app_label = "tests"
