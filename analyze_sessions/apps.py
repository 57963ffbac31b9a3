from __future__ import annotations

from django.apps import AppConfig


class AnalyzeSessionsConfig(AppConfig):
    name = "analyze_sessions"
    verbose_name = "Analyze sessions"
