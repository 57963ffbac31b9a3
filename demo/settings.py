"""A small shop whose sessions the demo fills and analyzes, kept in SQLite."""

from __future__ import annotations

import os
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent

SECRET_KEY = "demo-secret-key-2026"
# The key the shop signed sessions with until it was rotated last year.
SECRET_KEY_FALLBACKS = ["demo-secret-key-2025"]
DEBUG = False
ALLOWED_HOSTS = ["testserver", "localhost"]

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.messages",
    "django.contrib.sessions",
    "social_django",
    "analyze_sessions",
    "demo",
]
MIDDLEWARE = [
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
]
ROOT_URLCONF = "demo.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "APP_DIRS": True,
        "OPTIONS": {"context_processors": ["django.template.context_processors.request"]},
    }
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        # Another file where the test suite checks README's example.
        "NAME": os.environ.get("ANALYZE_SESSIONS_DEMO_DB", BASE_DIR / "db.sqlite3"),
    }
}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
USE_TZ = True

SESSION_ENGINE = "django.contrib.sessions.backends.db"
# Flash messages live in the session, as on many sites behind a CDN.
MESSAGE_STORAGE = "django.contrib.messages.storage.session.SessionStorage"
LOGIN_REDIRECT_URL = "/account/"
# "Log in with GitHub" through social-auth-app-django: each login started
# and never finished leaves its OAuth state in the session, under a key
# named after the state itself.
AUTHENTICATION_BACKENDS = [
    "social_core.backends.github.GithubOAuth2",
    "django.contrib.auth.backends.ModelBackend",
]
SOCIAL_AUTH_GITHUB_KEY = "demo-client-id"
SOCIAL_AUTH_GITHUB_SECRET = "demo-client-secret"
# The demo logs hundreds of users in; a slow password hash would only slow it.
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
