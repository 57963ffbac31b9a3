"""
The test site's Celery app, for the Celery task backend's worker: configured
from Django's settings (CELERY_*), as Celery's Django guide has it.
"""

import os

import django
from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.settings")
app = Celery("tests")
app.config_from_object("django.conf:settings", namespace="CELERY")
django.setup()

from analyze_sessions.tasks import analyze_shard  # noqa: E402 (after setup)

# Where Celery's is the default task backend, importing the task registers it
# with Celery (app.autodiscover_tasks() imports it). Here the database's is
# the default, so the task is put on Celery's by its alias.
analyze_shard.using(backend="celery")
