"""Owners: the shipped table of known keys, and the read of the apps' own source."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from analyze_sessions.owners import (
    Owner,
    Owners,
    installed_owners,
    known_keys,
    read_sources,
)
from tests.helpers import within

VIEWS = """\
from django.http import HttpResponse

PREVIEW_KEY = "report_preview"


def preview(request):
    request.session[PREVIEW_KEY] = {"rows": []}
    request.session["shop_" + request.GET["x"]] = 1  # Not constant: not read.
    return HttpResponse()


def search(request, query_id):
    request.session[f"search_{query_id}"] = request.GET.get("q")
    if "tour_seen" in request.session:
        del request.session["onboarding"]
    request.session.setdefault("recently_viewed", [])
    return HttpResponse(request.session.get("currency", "EUR"))


def unrelated(session):
    return session.get("not a session key: no request.session in sight")
"""


@pytest.fixture
def site(tmp_path: Path) -> Path:
    """A site with an app, ``shop``, an app inside it, and tests that do not count."""
    shop = tmp_path / "shop"
    (shop / "payments").mkdir(parents=True)
    (shop / "tests").mkdir()
    (shop / "views.py").write_text(VIEWS)
    (shop / "payments" / "views.py").write_text(
        "def pay(request):\n    request.session.pop('payment_intent', None)\n"
    )
    (shop / "tests" / "test_views.py").write_text(
        "def test(client):\n    client.session['from_a_test'] = 1\n"
    )
    (shop / "broken.py").write_text("def (:\n")
    return tmp_path


def test_the_source_gives_keys_patterns_files_and_lines(site: Path) -> None:
    found = list(read_sources([("shop", site / "shop"), ("shop.payments", site / "shop/payments")]))

    assert found == [
        ("payment_intent", Owner("shop.payments", "shop/payments/views.py:2")),
        ("report_preview", Owner("shop", "shop/views.py:7")),
        ("search_*", Owner("shop", "shop/views.py:13")),
        ("tour_seen", Owner("shop", "shop/views.py:14")),
        ("onboarding", Owner("shop", "shop/views.py:15")),
        ("recently_viewed", Owner("shop", "shop/views.py:16")),
        ("currency", Owner("shop", "shop/views.py:17")),
    ]


def test_owners_of_keys_patterns_and_nested_paths(site: Path) -> None:
    owners = Owners(
        [
            ("_auth_user_id", Owner("django.contrib.auth")),
            *read_sources([("shop", site / "shop")]),
            ("*_oauth2_state_*", Owner("social_django")),
        ]
    )

    assert owners("_auth_user_id") == Owner("django.contrib.auth")
    # A pattern of the report's (ids and tokens made *) matches the table's.
    assert owners("github_oauth2_state_*") == Owner("social_django")
    assert owners("search_*") == Owner("shop", "shop/views.py:13")
    # A nested path is its key's.
    assert owners("recently_viewed[]") == Owner("shop", "shop/views.py:16")
    assert owners("report_preview.rows") == Owner("shop", "shop/views.py:7")
    assert owners("something_else") is None


def test_an_exact_key_wins_over_a_pattern() -> None:
    owners = Owners([("wizard_*", Owner("formtools")), ("wizard_checkout", Owner("shop"))])

    assert owners("wizard_checkout") == Owner("shop")
    assert owners("wizard_signup") == Owner("formtools")


def test_the_table_is_well_formed() -> None:
    table = json.loads(
        (Path(__file__).parent.parent / "analyze_sessions" / "known_keys.json").read_text()
    )
    keys = [entry["key"] for entry in table["keys"]]

    assert len(keys) == len(set(keys))
    assert all(entry["owner"] and entry["source"] for entry in table["keys"])
    # No key of the table is claimed by another owner's pattern.
    everyone = Owners(known_keys())
    for key, owner in known_keys():
        if "*" not in key:
            assert everyone(key) == owner, key


def test_the_installed_apps_own_their_keys() -> None:
    owners = installed_owners()

    assert owners("_auth_user_id") == Owner("django.contrib.auth")
    assert owners("_messages") == Owner("django.contrib.messages")
    # The test site's own views, read from their source.
    cart = owners("cart")
    assert cart is not None and cart.app == "tests"
    assert cart.where is not None and cart.where.startswith("tests/views.py:")
    wizard = owners("wizard_checkout")
    assert wizard is not None and wizard.app == "tests"


def test_a_pattern_that_says_little_claims_no_key(tmp_path: Path) -> None:
    app = tmp_path / "loose"
    app.mkdir()
    (app / "views.py").write_text(
        "def view(request, a, b):\n"
        "    request.session[f'{a}_{b}'] = 1\n"
        "    request.session[f'{a}_{b}_filter'] = 1\n"
    )

    owners = Owners(read_sources([("loose", app)]))

    assert owners("cart_items") is None
    assert owners("orders_open_filter") == Owner("loose", "loose/views.py:3")


def test_matching_a_pattern_takes_time_linear_in_the_name() -> None:
    owners = Owners([("*_*_*_*_*_*_filter", Owner("slow"))])

    # A regular expression of six .* takes minutes on this name.
    with within(seconds=1):
        assert owners("_" * 200) is None
        assert owners("a_" * 100 + "filter") == Owner("slow")


def test_a_source_nested_past_the_parser_is_skipped(tmp_path: Path) -> None:
    app = tmp_path / "deep"
    app.mkdir()
    views = (
        "x = " + "+".join(['"a"'] * 50_000) + "\n"
        "def view(request):\n    request.session['kept'] = 1\n"
    )
    forms = "x = " + "-" * 200_000 + "1\n"
    (app / "views.py").write_text(views)
    (app / "forms.py").write_text(forms)
    (app / "urls.py").write_text("def view(request):\n    request.session['found'] = 1\n")

    # What the parser gives up on (RecursionError, MemoryError or SyntaxError,
    # as the version of Python goes) is skipped; the rest is read.
    assert not parses(forms)
    expected = ["found", "kept"] if parses(views) else ["found"]
    assert [key for key, _ in read_sources([("deep", app)])] == expected


def parses(source: str) -> bool:
    try:
        ast.parse(source)
    except (SyntaxError, RecursionError, MemoryError):
        return False
    return True
