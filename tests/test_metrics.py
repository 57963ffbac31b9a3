"""
--format openmetrics and --save-metrics: read back by prometheus_client's
own parsers, every value checked against the JSON report of the same store.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.test import override_settings
from django.utils import timezone
from prometheus_client.openmetrics.parser import text_string_to_metric_families
from prometheus_client.parser import text_string_to_metric_families as text_format_families

from analyze_sessions.shown import printable
from tests.helpers import run_command

pytestmark = pytest.mark.django_db

WORDS = (
    "apple banana cherry damson elder fig grape hazel iris juniper kiwi lemon mango nectar olive "
    "peach quince rowan sage thyme ugli vanilla walnut yarrow zest acorn basil clove dill fennel "
    "ginger hops ivy jasmine kale lime mint nutmeg oregano pepper radish saffron tarragon "
    "umber violet wasabi yam zucchini almond borage caper daisy endive"
).split()
HOSTILE = 'quote"back\\slash\nnew line'


def make_store() -> None:
    for n, word in enumerate(WORDS):  # More keys than get a series of their own.
        store = SessionStore()
        store[f"pref_{word}"] = "x" * (n + 1)
        store["cart"] = list(range(n))
        store.save()
    store = SessionStore()
    store[HOSTILE] = "1"
    store.save()
    with override_settings(SECRET_KEY="retired-" * 8):
        store = SessionStore()
        store["cart"] = ["old"]
        store.save()
    expired = SessionStore()
    expired["cart"] = ["gone"]
    expired.set_expiry(timezone.now() - timedelta(days=1))
    expired.save()
    Session.objects.create(
        session_key="z" * 32, session_data="not signed", expire_date=timezone.now()
    )


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the OpenMetrics ``text``, by name and labels, as its parser reads it."""
    found = {}
    for family in text_string_to_metric_families(text):  # type: ignore[no-untyped-call]
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def without_time(text: str) -> list[str]:
    """The lines of OpenMetrics ``text`` but the run's start."""
    return [
        line
        for line in text.splitlines()
        if not line.startswith("django_sessions_report_timestamp_seconds ")
    ]


def value(found: dict[Any, float], name: str, **labels: str) -> float:
    return found[(f"django_sessions_{name}", tuple(sorted(labels.items())))]


def test_every_value_is_the_json_reports(tmp_path: Path) -> None:
    make_store()

    # One run: its JSON report, and its metrics beside it.
    path = tmp_path / "sessions.prom"
    printed, err, returncode = run_command("--format=json", f"--save-metrics={path}")
    document = json.loads(printed)
    out = path.read_text()

    assert (err, returncode) == ("", 0)
    assert out.endswith("# EOF\n")
    found = samples(out)
    assert value(found, "store_sessions") == document["sessions"]["total"]
    assert value(found, "processed_sessions") == document["sessions"]["processed"]
    assert value(found, "stored_bytes") == document["stored_bytes"]["total"]
    assert value(found, "payload_bytes") == document["payload_bytes"]["total"]
    assert value(found, "expired_sessions") == document["expired"]["sessions"] == 2
    assert value(found, "expired_bytes") == document["expired"]["stored_bytes"]
    reasons = document["undecodable"]["reasons"]
    assert reasons == {"bad signature": 2}
    for reason in ("bad signature", "bad encoding", "bad payload", "too large", "too costly"):
        assert value(found, "undecodable_sessions", reason=reason) == reasons.get(reason, 0)
    assert (
        value(found, "retired_key_bytes") == document["undecodable"]["unknown_key"]["stored_bytes"]
    )
    # A real histogram: cumulative buckets, the sum and the count.
    for bound in (2**bits - 1 for bits in range(4, 28)):
        below = sum(row["sessions"] for row in document["histogram"] if row["high"] <= bound)
        assert value(found, "stored_size_bytes_bucket", le=f"{bound}.0") == below
    assert value(found, "stored_size_bytes_bucket", le="+Inf") == document["sessions"]["processed"]
    assert value(found, "stored_size_bytes_sum") == document["stored_bytes"]["total"]
    assert value(found, "stored_size_bytes_count") == document["sessions"]["processed"]
    for row in document["owners"]:
        owner = row["owner"] or "(unknown apps)"
        assert value(found, "owner_bytes", owner=owner) == row["total_bytes"]
        assert value(found, "owner_sessions", owner=owner) == row["sessions"]
    # The 50 largest keys, and the rest summed: never more series than that.
    keys = sorted(document["keys"], key=lambda row: (-row["total_bytes"], row["key"]))
    key_series = {
        labels: v for (name, labels), v in found.items() if name == "django_sessions_key_bytes"
    }
    assert len(key_series) == 51 < len(keys)
    for row in keys[:50]:
        assert value(found, "key_bytes", key=printable(row["key"])) == row["total_bytes"]
        assert value(found, "key_sessions", key=printable(row["key"])) == row["sessions"]
    assert value(found, "key_bytes", key="(other keys)") == sum(
        row["total_bytes"] for row in keys[50:]
    )
    assert (
        value(found, "report_timestamp_seconds")
        == datetime.fromisoformat(document["generated_at"].replace("Z", "+00:00")).timestamp()
    )
    assert value(found, "report_partial") == 0
    # When they were written, and when they expire: the JSON's numbers too.
    for row in document["written"]["by_day"]:
        assert value(found, "written_day_sessions", date=row["date"]) == row["sessions"]
        assert value(found, "written_day_bytes", date=row["date"]) == row["stored_bytes"]
    for row in document["written"]["by_month"]:
        assert value(found, "written_month_sessions", month=row["month"]) == row["sessions"]
    assert value(found, "unplaced_sessions") == document["written"]["not_placed"]["sessions"]
    for within, row in document["expiring"].items():
        assert value(found, "expiring_sessions", within=within) == row["sessions"]
        assert value(found, "expiring_bytes", within=within) == row["stored_bytes"]
    # Written today: one a word, and the hostile one; the expired one set its
    # expiry as a date, and the other two cannot be read: not placed.
    assert sum(row["sessions"] for row in document["written"]["by_day"]) == len(WORDS) + 1
    assert document["written"]["not_placed"]["sessions"] == 3


def test_a_key_name_cannot_break_out_of_its_label() -> None:
    store = SessionStore()
    store[HOSTILE] = "x" * 5000  # The largest key: a series of its own.
    store.save()

    out, err, returncode = run_command("--format=openmetrics")

    assert (err, returncode) == ("", 0)
    found = samples(out)
    assert value(found, "key_bytes", key=printable(HOSTILE)) > 5000
    assert "\nnew line" not in out


def test_saved_metrics_are_what_node_exporter_reads(tmp_path: Path) -> None:
    make_store()
    path = tmp_path / "sessions.prom"

    out, err, returncode = run_command(f"--save-metrics={path}", f"--save-json={tmp_path / 'j'}")
    printed, _, _ = run_command("--format=openmetrics", f"--save-metrics={tmp_path / 'again'}")

    assert (err, returncode) == ("", 0)
    assert out.startswith("Processed ")  # The text still goes out.
    saved = path.read_text()
    # What is printed is what is saved, in one run; and the same store's
    # metrics in another run, but for when that run started.
    assert printed == (tmp_path / "again").read_text()
    assert without_time(saved) == without_time(printed)
    # node_exporter's textfile collector reads the Prometheus text format: so does this.
    families = {family.name: family for family in text_format_families(saved)}
    assert families["django_sessions_stored_size_bytes"].type == "histogram"
    assert families["django_sessions_processed_sessions"].samples[0].value == len(WORDS) + 4
    assert sorted(entry.name for entry in tmp_path.iterdir()) == ["again", "j", "sessions.prom"]


def test_metrics_that_cannot_be_saved_are_one_sentence(tmp_path: Path) -> None:
    path = tmp_path / "missing" / "sessions.prom"

    out, err, returncode = run_command("--format=json", f"--save-metrics={path}")

    assert json.loads(out)["sessions"]["processed"] == 0
    assert (err, returncode) == (
        f"CommandError: Cannot save the metrics to '{path}': No such file or directory.\n",
        1,
    )


def test_names_that_escape_alike_are_one_series() -> None:
    # A line break, and a backslash and an n: shown alike, so counted as one.
    for name in ("note:a\nb", "note:a\\nb"):
        store = SessionStore()
        store[name] = "x" * 3000
        store.save()

    out, err, returncode = run_command("--format=openmetrics")

    assert (err, returncode) == ("", 0)
    found = samples(out)  # The OpenMetrics parser refuses a series given twice.
    assert value(found, "key_sessions", key="note:a\\nb") == 2
