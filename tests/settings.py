"""Settings for the test suite: a small site that keeps sessions in SQLite."""

from __future__ import annotations

import os
import tempfile

SECRET_KEY = "analyze-sessions-tests"
# Sessions signed with this key still decode; see test_decoding.py.
SECRET_KEY_FALLBACKS = ["analyze-sessions-tests-retired"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.messages",
    "django.contrib.sessions",
    "analyze_sessions",
    "tests",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]

ROOT_URLCONF = "tests.urls"
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"
SESSION_ENGINE = "django.contrib.sessions.backends.db"
# The suite logs users in through the login view; hashing need not be slow.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
USE_TZ = True
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": []},
    }
]

# The test database is a file, so that a django-admin process started by a
# test reads the rows the test wrote (ANALYZE_SESSIONS_DB_NAME points it there).
_TEST_DB = os.path.join(tempfile.gettempdir(), f"analyze-sessions-tests-{os.getpid()}.sqlite3")
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.environ.get("ANALYZE_SESSIONS_DB_NAME", _TEST_DB),
        "TEST": {"NAME": _TEST_DB},
    },
    "replica": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": os.path.join(tempfile.gettempdir(), "analyze-sessions-replica.sqlite3"),
    },
}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
