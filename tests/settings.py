"""
Settings for the test suite: a small site that keeps sessions in SQLite.

It runs the login, social login and form wizard apps that real sites run, so
that tests can make their sessions through those apps' own views.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import tempfile
import warnings
from typing import Any

# The social auth app loads python3-openid, which imports the deprecated
# defusedxml.cElementTree first, and so warns at startup whatever the site
# does. Importing it here, with that one warning silenced, leaves nothing to
# warn about later: in pytest, and in the django-admin processes tests start.
with warnings.catch_warnings():
    warnings.filterwarnings("ignore", "defusedxml.cElementTree is deprecated", DeprecationWarning)
    importlib.import_module("defusedxml.cElementTree")

# A worker started by a test may be given another key than the test's.
SECRET_KEY = os.environ.get("ANALYZE_SESSIONS_SECRET_KEY", "analyze-sessions-tests")
# Sessions signed with this key still decode; see test_decoding.py.
SECRET_KEY_FALLBACKS = ["analyze-sessions-tests-retired"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.messages",
    "django.contrib.sessions",
    "allauth",
    "allauth.account",
    "allauth.socialaccount",
    "allauth.socialaccount.providers.github",
    "allauth.mfa",
    "social_django",
    "formtools",
    "django_tasks_db",
    "analyze_sessions",
    "tests",
]

MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "allauth.account.middleware.AccountMiddleware",
]

# Password logins go through ModelBackend first, so a session's
# _auth_user_backend names it whichever login view made the session.
AUTHENTICATION_BACKENDS = [
    "django.contrib.auth.backends.ModelBackend",
    "allauth.account.auth_backends.AuthenticationBackend",
    "social_core.backends.github.GithubOAuth2",
]

# Both social login apps only ever redirect to the provider in tests, which
# is never called: the credentials need only look real.
SOCIALACCOUNT_PROVIDERS = {
    "github": {"APP": {"client_id": "analyze-sessions-id", "secret": "analyze-sessions-secret"}}
}
SOCIAL_AUTH_GITHUB_KEY = "analyze-sessions-key"
SOCIAL_AUTH_GITHUB_SECRET = "analyze-sessions-secret"
# Rate limits count in the cache, which some tests swap or empty.
ACCOUNT_RATE_LIMITS = False

ROOT_URLCONF = "tests.urls"
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"
# A worker started by a test may be given another engine than the test's.
SESSION_ENGINE = os.environ.get("ANALYZE_SESSIONS_ENGINE", "django.contrib.sessions.backends.db")
# The suite logs users in through the login view; hashing need not be slow.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
USE_TZ = True
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]

# ANALYZE_SESSIONS_DB picks the backend: sqlite (the default), postgres or
# mysql. For the last two, conftest.py starts a throwaway server and sets
# the ANALYZE_SESSIONS_DB_* variables that say where it is.
BACKEND = os.environ.get("ANALYZE_SESSIONS_DB", "sqlite")
DATABASES: dict[str, dict[str, Any]]

if BACKEND == "sqlite":
    # The test database is a file, so that a django-admin process started by
    # a test reads the rows the test wrote (ANALYZE_SESSIONS_DB_NAME points it
    # there).
    _TEST_DB = os.path.join(tempfile.gettempdir(), f"analyze-sessions-tests-{os.getpid()}.sqlite3")
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get("ANALYZE_SESSIONS_DB_NAME", _TEST_DB),
            "TEST": {"NAME": _TEST_DB},
        },
        "replica": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ.get(
                "ANALYZE_SESSIONS_REPLICA_NAME",
                os.path.join(tempfile.gettempdir(), "analyze-sessions-replica.sqlite3"),
            ),
        },
    }
else:
    _SERVER = {
        "ENGINE": {
            "postgres": "django.db.backends.postgresql",
            "mysql": "django.db.backends.mysql",
        }[BACKEND],
        "HOST": os.environ.get("ANALYZE_SESSIONS_DB_HOST", ""),
        "PORT": os.environ.get("ANALYZE_SESSIONS_DB_PORT", ""),
        "USER": os.environ.get("ANALYZE_SESSIONS_DB_USER", ""),
    }
    _TEST = {"CHARSET": "utf8mb4", "COLLATION": "utf8mb4_unicode_ci"} if BACKEND == "mysql" else {}
    DATABASES = {
        "default": {
            **_SERVER,
            "NAME": os.environ.get("ANALYZE_SESSIONS_DB_NAME", "analyze_sessions"),
            "TEST": {"NAME": "test_analyze_sessions", **_TEST},
        },
        "replica": {
            **_SERVER,
            "NAME": os.environ.get("ANALYZE_SESSIONS_REPLICA_NAME", "analyze_sessions_replica"),
            "TEST": {"NAME": "test_analyze_sessions_replica", **_TEST},
        },
    }
    if BACKEND == "mysql":
        for _database in DATABASES.values():
            _database["OPTIONS"] = {"charset": "utf8mb4"}
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"

# The site's task queue, for --tasks: django-tasks-db's queue in the test
# database, whose workers the tests start; a backend that cannot give
# results back, to be refused; and Celery's where it installs (Django 6.0
# and later), on a Redis the tests start (they set where).
TASKS: dict[str, dict[str, Any]] = {
    "default": {"BACKEND": "django_tasks_db.DatabaseBackend"},
    "immediate": {
        "BACKEND": (
            "django.tasks.backends.immediate.ImmediateBackend"
            if importlib.util.find_spec("django.tasks")
            else "django_tasks.backends.immediate.ImmediateBackend"
        )
    },
}
if importlib.util.find_spec("django_tasks_celery") and importlib.util.find_spec("celery"):
    TASKS["celery"] = {
        "BACKEND": "django_tasks_celery.CeleryBackend",
        "OPTIONS": {"CELERY_APP": "tests.celery_app.app"},
    }
CELERY_BROKER_URL = os.environ.get("ANALYZE_SESSIONS_CELERY_REDIS", "memory://")
CELERY_RESULT_BACKEND = os.environ.get("ANALYZE_SESSIONS_CELERY_REDIS", "cache+memory://")
CELERY_RESULT_EXTENDED = True
# A Redis that is down is told at once, rather than after half a minute of retries.
CELERY_BROKER_CONNECTION_MAX_RETRIES = 1
CELERY_RESULT_BACKEND_TRANSPORT_OPTIONS = {"retry_policy": {"max_retries": 1, "interval_max": 0.1}}
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_max": 0.1}

# Where the tests' own engine (tests/engines/jsonlines.py) keeps sessions: set by its tests.
JSONLINES_SESSIONS_FILE: str | None = None
