"""
What the real apps that tests/sites.py drives leave in the session.

These pin down the data that the report's tests rely on: if an app stops
keeping something, or renames it, a test here says so first.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.contrib.sessions.backends.db import SessionStore
from django.test import Client
from django.utils.http import int_to_base36

from tests import sites

pytestmark = pytest.mark.django_db(transaction=True)

PASSWORD = "correct horse battery staple"
LOGGED_IN = sites.ALLAUTH_LOGIN_KEYS


def stored(session_key: str) -> dict[str, Any]:
    """The session as the database has it, read back without the client."""
    return SessionStore(session_key=session_key).load()


@pytest.fixture
def user() -> User:
    return User.objects.create_user("ada", "ada@example.com", PASSWORD)


def social_auth_states(session: dict[str, Any]) -> list[str]:
    """
    The states of the GitHub logins the social auth app waits for: each under
    a key of its own, and in the index that lets the app expire them.
    """
    pattern = re.compile(r"github_oauth2_state_([A-Za-z0-9]{32})")
    states = [match[1] for key in session if (match := pattern.fullmatch(key))]
    index = session["github_oauth2_transaction_index"]
    assert sorted(index) == sorted(states)
    for state in states:
        assert session[f"github_oauth2_state_{state}"] == {
            "state": state,
            "timestamp": index[state],
        }
    return states


def test_a_social_auth_login_left_at_github_keeps_its_state_and_next_page() -> None:
    session = stored(sites.abandoned_social_auth_login(Client(), next_url="/orders/"))

    (state,) = social_auth_states(session)
    assert set(session) == {
        f"github_oauth2_state_{state}",
        "github_oauth2_transaction_index",
        "next",
    }
    assert session["next"] == "/orders/"


def test_each_social_auth_login_left_at_github_keeps_a_state_of_its_own() -> None:
    client = Client()
    for _ in range(3):
        key = sites.abandoned_social_auth_login(client)

    session = stored(key)
    states = social_auth_states(session)
    assert len(set(states)) == 3
    assert set(session) == {f"github_oauth2_state_{state}" for state in states} | {
        "github_oauth2_transaction_index"
    }


def test_allauth_keeps_each_social_login_left_at_github_under_a_random_id() -> None:
    client = Client()
    sites.abandoned_allauth_login(client)
    session = stored(sites.abandoned_allauth_login(client, next_url="/orders/"))

    assert set(session) == {"socialaccount_states"}
    states = session["socialaccount_states"]
    assert len(states) == 2
    for state_id, (state, started, *provider) in states.items():
        assert re.fullmatch(r"[A-Za-z0-9]{16}", state_id)
        assert state["process"] == "login"
        assert isinstance(started, float)
        # Newer releases also say which provider the state is for.
        assert provider in ([], ["github"])
    assert sorted(str(state.get("next")) for state, *_ in states.values()) == ["/orders/", "None"]


def test_an_allauth_password_login_keeps_the_user_and_how_they_logged_in(user: User) -> None:
    session = stored(sites.allauth_password_login(Client(), user, PASSWORD))

    assert set(session) == LOGGED_IN
    assert session["_auth_user_id"] == str(user.pk)
    assert session["_auth_user_backend"] == "django.contrib.auth.backends.ModelBackend"
    assert re.fullmatch(r"[0-9a-f]{64}", session["_auth_user_hash"])
    if "account_authentication_methods_user" in LOGGED_IN:
        assert session["account_authentication_methods_user"] == str(user.pk)
    (method,) = session["account_authentication_methods"]
    assert method["method"] == "password"
    assert "Successfully signed in as ada." in session["_messages"]


def test_a_login_stopped_at_the_authenticator_code_keeps_the_pending_login(user: User) -> None:
    sites.enable_totp(user)

    session = stored(sites.allauth_mfa_started(Client(), user, PASSWORD))

    assert set(session) == sites.ALLAUTH_RECORDS | {"_session_expiry", "account_login"}
    # allauth writes an integer pk in base 36.
    assert session["account_login"]["user_pk"] == int_to_base36(user.pk)


def test_an_authenticator_setup_left_half_way_keeps_its_secret(user: User) -> None:
    client = Client()
    sites.allauth_password_login(client, user, PASSWORD)

    session = stored(sites.allauth_totp_setup_started(client, PASSWORD))

    assert set(session) == LOGGED_IN | {"mfa.totp.secret"}
    assert re.fullmatch(r"[A-Z2-7]{32}", session["mfa.totp.secret"])
    assert [
        method.get("reauthenticated") for method in session["account_authentication_methods"]
    ] == [
        None,
        True,
    ]


def test_a_wizard_left_half_way_keeps_the_steps_filled_in() -> None:
    session = stored(sites.wizard_steps(Client(), 2))

    assert set(session) == {"wizard_checkout_wizard"}
    wizard = session["wizard_checkout_wizard"]
    assert wizard["step"] == "review"
    assert set(wizard["step_data"]) == {"shipping", "payment"}
    assert wizard["step_data"]["shipping"]["shipping-city"] == ["London"]


def test_two_wizards_keep_their_steps_under_their_own_prefixes() -> None:
    client = Client()
    sites.wizard_steps(client, 1)
    session = stored(sites.wizard_steps(client, 1, wizard="signup"))

    assert set(session) == {"wizard_checkout_wizard", "wizard_signup_wizard"}
    assert session["wizard_checkout_wizard"]["step"] == "payment"
    assert session["wizard_signup_wizard"]["step"] == "profile"


def test_a_finished_wizard_is_not_a_session_to_make() -> None:
    with pytest.raises(ValueError, match="3 steps"):
        sites.wizard_steps(Client(), 3)


def test_a_long_lived_visitor_piles_every_flow_into_one_session(user: User) -> None:
    client = Client()
    sites.cart(client, 3, 4)
    sites.wizard_steps(client, 2)
    sites.abandoned_social_auth_login(client)
    sites.abandoned_allauth_login(client)
    sites.allauth_password_login(client, user, PASSWORD)
    session = stored(sites.flashed(client, "Order placed."))

    (state,) = social_auth_states(session)
    assert set(session) == LOGGED_IN | {
        "cart",
        "wizard_checkout_wizard",
        f"github_oauth2_state_{state}",
        "github_oauth2_transaction_index",
        "socialaccount_states",
    }
    assert len(session["cart"]) == 2
