"""README's example is what the demo prints, byte for byte."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import django
import pytest

from tests.helpers import DJANGO_ADMIN

ROOT = Path(__file__).resolve().parent.parent

# The demo makes 3,000 sessions through its views, in half a minute: once,
# with the newest Python and Django, whose report README shows. (It reads
# the same with the oldest: the demo draws every key, state and date from
# its seed.)
pytestmark = pytest.mark.skipif(
    sys.version_info[:2] != (3, 13)
    or django.VERSION[:2] != (6, 1)
    or os.environ.get("ANALYZE_SESSIONS_DB", "sqlite") != "sqlite",
    reason="Checked with Python 3.13 and Django 6.1 on SQLite (tox -e py313-django61-sqlite).",
)


def readme_blocks(section: str, following: str) -> list[str]:
    """The text code blocks of README's ``section``, up to the ``following`` one."""
    readme = (ROOT / "README.rst").read_text(encoding="utf-8")
    text = readme.split(f"\n{section}\n", 1)[1].split(f"\n{following}\n", 1)[0]
    blocks = re.findall(r"\.\. code-block:: text\n\n((?:    .*\n|\n)+)", text)
    return [textwrap.dedent(block).strip("\n") + "\n" for block in blocks]


def readme_examples() -> list[str]:
    """The code blocks of README's example: each a command, and what it printed."""
    return readme_blocks("Example", "Speed and memory")


def test_readme_shows_what_the_demo_prints(tmp_path: Path) -> None:
    # As a newcomer runs it: not in the development mode tox runs the tests
    # in, whose warnings about the demo's dependencies would be printed.
    inherited = {
        name: value
        for name, value in os.environ.items()
        if name not in {"PYTHONDEVMODE", "PYTHONWARNINGS"}
    }
    env = {
        **inherited,
        "DJANGO_SETTINGS_MODULE": "demo.settings",
        "PYTHONPATH": str(ROOT),
        "ANALYZE_SESSIONS_DEMO_DB": str(tmp_path / "demo.sqlite3"),
    }

    def django_admin(*args: str) -> str:
        finished = subprocess.run(
            [DJANGO_ADMIN, *args], env=env, capture_output=True, text=True, timeout=600
        )
        assert (finished.stderr, finished.returncode) == ("", 0), args
        return finished.stdout

    django_admin("migrate", "--verbosity=0")
    django_admin("fill_demo_sessions")
    examples = readme_examples()

    assert len(examples) == 2
    # The quick start's screenful is the head of the demo's whole report.
    quick_start = readme_blocks("Quick start", "Try it, and test it")[0]
    head = quick_start.removesuffix("    ...\n").removesuffix("...\n")
    assert examples[1].split("\n", 1)[1].startswith(head)
    for example in examples:
        command = example.splitlines()[0]
        assert command.startswith("$ django-admin analyze-sessions")
        printed = django_admin(*shlex.split(command)[2:])
        assert f"{command}\n{printed}" == example
