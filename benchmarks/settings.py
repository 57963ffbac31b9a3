"""Settings for the benchmarks: a site whose sessions are in SQLite, PostgreSQL or MariaDB."""

from __future__ import annotations

import os
from importlib.util import find_spec
from typing import Any

SECRET_KEY = "benchmark-secret-key"
SECRET_KEY_FALLBACKS = ["benchmark-secret-key-retired"]
INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "analyze_sessions",
]
# For --tasks: a task queue in the sessions' database, where django-tasks-db
# is installed (and django-tasks, on Django 5.2).
if find_spec("django_tasks_db"):
    INSTALLED_APPS.append("django_tasks_db")
    TASKS = {"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}}
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.AutoField"
SESSION_ENGINE = "django.contrib.sessions.backends.db"

DATABASES: dict[str, dict[str, Any]]
if os.environ.get("BENCHMARK_DB", "sqlite") == "sqlite":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ["BENCHMARK_DB_NAME"],
        }
    }
elif os.environ["BENCHMARK_DB"] == "postgres":
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": os.environ["BENCHMARK_DB_NAME"],
            "HOST": os.environ["BENCHMARK_DB_HOST"],
            "PORT": os.environ["BENCHMARK_DB_PORT"],
            "USER": "postgres",
        }
    }
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.mysql",
            "NAME": os.environ["BENCHMARK_DB_NAME"],
            "HOST": os.environ["BENCHMARK_DB_HOST"],
            "PORT": os.environ["BENCHMARK_DB_PORT"],
            "USER": "root",
            "OPTIONS": {"charset": "utf8mb4"},
        }
    }
