"""``django-admin analyze-sessions``: the name the 2013 tool documented."""

from __future__ import annotations

from analyze_sessions.management.commands.analyze_sessions import Command

__all__ = ["Command"]
