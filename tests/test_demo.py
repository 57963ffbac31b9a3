"""README's example is what the demo prints, byte for byte."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from pathlib import Path

import django
import pytest
from prometheus_client.parser import text_string_to_metric_families

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


class Demo:
    """The demo's store, made once, and how to run django-admin on it as a newcomer does."""

    def __init__(self, directory: Path) -> None:
        # As a newcomer runs it: not in the development mode tox runs the
        # tests in, whose warnings about the demo's dependencies would be printed.
        inherited = {
            name: value
            for name, value in os.environ.items()
            if name not in {"PYTHONDEVMODE", "PYTHONWARNINGS"}
        }
        self.env = {
            **inherited,
            "DJANGO_SETTINGS_MODULE": "demo.settings",
            "PYTHONPATH": str(ROOT),
            "ANALYZE_SESSIONS_DEMO_DB": str(directory / "demo.sqlite3"),
        }
        self.django_admin("migrate", "--verbosity=0")
        self.django_admin("fill_demo_sessions")

    def django_admin(self, *args: str) -> str:
        finished = subprocess.run(
            [DJANGO_ADMIN, *args], env=self.env, capture_output=True, text=True, timeout=600
        )
        assert (finished.stderr, finished.returncode) == ("", 0), args
        return finished.stdout


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Demo:
    return Demo(tmp_path_factory.mktemp("demo"))


def test_readme_shows_what_the_demo_prints(demo: Demo) -> None:
    examples = readme_examples()

    assert len(examples) == 2
    # The quick start's screenful is the head of the demo's whole report.
    quick_start = readme_blocks("Quick start", "Try it, and test it")[0]
    head = quick_start.removesuffix("    ...\n").removesuffix("...\n")
    assert examples[1].split("\n", 1)[1].startswith(head)
    for example in examples:
        command = example.splitlines()[0]
        assert command.startswith("$ django-admin analyze-sessions")
        printed = demo.django_admin(*shlex.split(command)[2:])
        assert f"{command}\n{printed}" == example


def readme_crontab() -> tuple[dict[str, str], list[str]]:
    """The settings and the commands of README's crontab, as cron reads them."""
    readme = (ROOT / "README.rst").read_text(encoding="utf-8")
    part = readme[readme.index("\nFrom cron\n") : readme.index("\nThe report\n")]
    block = re.search(r"\.\. code-block:: sh\n\n((?:    .*\n|\n)+)", part)
    assert block is not None
    settings: dict[str, str] = {}
    commands = []
    for line in textwrap.dedent(block.group(1)).splitlines():
        if not line or line.startswith("#"):
            continue
        assignment = re.fullmatch(r"([A-Z_]+)=(.*)", line)
        if assignment:
            settings[assignment[1]] = assignment[2]
        else:  # Minute, hour, day, month, weekday, user, then the command.
            commands.append(line.split(None, 6)[6])
    return settings, commands


def test_the_crontab_in_readme_mails_compares_keeps_and_feeds(demo: Demo, tmp_path: Path) -> None:
    settings, (weekly, daily) = readme_crontab()
    kept, metrics = tmp_path / "kept", tmp_path / "textfile"
    kept.mkdir()
    metrics.mkdir()
    assert settings["DJANGO_SETTINGS_MODULE"] == "mysite.settings"
    # Cron's settings, with this machine's paths, and the demo's one database.
    env = {
        **demo.env,
        **settings,
        "DJANGO_SETTINGS_MODULE": "demo.settings",
        "DJANGO_ADMIN": DJANGO_ADMIN,
        "READING": settings["READING"].replace("--database=replica", "--database=default"),
        "KEPT": str(kept),
        "METRICS": str(metrics),
    }

    def cron(command: str) -> str:
        finished = subprocess.run(
            ["/bin/sh", "-c", command], env=env, capture_output=True, text=True, timeout=600
        )
        assert (finished.stderr, finished.returncode) == ("", 0), command
        return finished.stdout

    first = cron(weekly)  # No report of last week yet: nothing to compare with.
    kept_first = json.loads((kept / "last.json").read_text())
    second = cron(weekly)
    cron(daily)

    assert first.startswith("Processed 3168 sessions out of 3168 total sessions\n")
    assert "\nSince " not in first
    assert "\nSince " in second  # Mailed with what changed since the run before.
    assert kept_first["sessions"]["processed"] == 3168
    assert (
        json.loads((kept / "last.json").read_text())["generated_at"] >= kept_first["generated_at"]
    )
    families = {
        f.name: f
        for f in text_string_to_metric_families((metrics / "django_sessions.prom").read_text())
    }
    assert families["django_sessions_processed_sessions"].samples[0].value == 3168
    assert sorted(path.name for path in kept.iterdir()) == ["last.json"]
    assert sorted(path.name for path in metrics.iterdir()) == ["django_sessions.prom"]
    for saved_file in (kept / "last.json", metrics / "django_sessions.prom"):
        assert saved_file.stat().st_mode & 0o777 == 0o644  # For node_exporter's own user.
