"""Settings for the benchmarks: a site whose sessions are in SQLite or PostgreSQL."""

from __future__ import annotations

import os

SECRET_KEY = "benchmark-secret-key"
SECRET_KEY_FALLBACKS = ["benchmark-secret-key-retired"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "analyze_sessions",
]
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
SESSION_ENGINE = "django.contrib.sessions.backends.db"

if os.environ.get("BENCHMARK_DB", "sqlite") == "sqlite":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ["BENCHMARK_DB_NAME"],
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ["BENCHMARK_DB_NAME"],
            "HOST": os.environ["BENCHMARK_DB_HOST"],
            "PORT": os.environ["BENCHMARK_DB_PORT"],
            "USER": "postgres",
        }
    }
