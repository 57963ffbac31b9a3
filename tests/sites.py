"""
Sessions made the way real sites make them: through the views of the login,
social login and form wizard apps that tests/settings.py installs.

Each function drives a test client through one flow, or the start of one,
and returns the key of the session it leaves. A client that already has a
session keeps it, so flows can be stacked on one client to make the crowded
sessions that long-lived visitors have.
"""

from __future__ import annotations

from importlib.metadata import version

from allauth.mfa.totp.internal.auth import TOTP, generate_totp_secret
from django.contrib.auth.base_user import AbstractBaseUser
from django.test import Client


def release(distribution: str) -> tuple[int, ...]:
    """The installed version of ``distribution``, as numbers to compare."""
    return tuple(int(part) for part in version(distribution).split(".")[:2])


# allauth's record of how the user logged in. 65.21 also records whose that
# record is; Python 3.10 stops at 65.19.
ALLAUTH_RECORDS = frozenset(
    {"account_authentication_methods"}
    | ({"account_authentication_methods_user"} if release("django-allauth") >= (65, 21) else set())
)
# What a password login through allauth leaves: the login, the remember-me
# choice, the "Successfully signed in" message, and the record.
ALLAUTH_LOGIN_KEYS = ALLAUTH_RECORDS | {
    "_auth_user_id",
    "_auth_user_backend",
    "_auth_user_hash",
    "_messages",
    "_session_expiry",
}

CHECKOUT = {
    "shipping": {
        "name": "Ada Lovelace",
        "address": "12 St James's Square",
        "city": "London",
        "postcode": "SW1Y 4JH",
    },
    "payment": {"cardholder": "A. Lovelace", "method": "card"},
    "review": {"accept_terms": "on"},
}
SIGNUP = {
    "account": {"username": "ada", "email": "ada@example.com"},
    "profile": {"display_name": "Ada", "bio": "Writes programs for engines."},
}
# The wizards in tests/wizard.py: where each is served, its prefix in the
# session, and what a visitor types into each of its steps.
WIZARDS = {
    "checkout": ("/wizard/checkout/", "checkout_wizard", CHECKOUT),
    "signup": ("/wizard/signup/", "signup_wizard", SIGNUP),
}


def session_key(client: Client) -> str:
    """The key of the client's session, which must have been saved."""
    key = client.session.session_key
    assert key is not None, "The flow left no session."
    return key


def abandoned_social_auth_login(client: Client, next_url: str | None = None) -> str:
    """
    Start a GitHub login through the social auth app's begin view (a form's
    POST, as the app asks), and never come back from GitHub: the state it keeps
    to check the callback stays.
    """
    response = client.post("/social/login/github/", {"next": next_url} if next_url else {})
    assert response.status_code == 302, response
    assert response["Location"].startswith("https://github.com/login/oauth/authorize?")
    return session_key(client)


def abandoned_allauth_login(client: Client, next_url: str | None = None) -> str:
    """
    Start a GitHub login through allauth's provider login view, and never come
    back: allauth keeps the login's state under a random id until it expires.
    """
    data = {"process": "login", **({"next": next_url} if next_url else {})}
    response = client.post("/accounts/github/login/", data)
    assert response.status_code == 302, response
    assert response["Location"].startswith("https://github.com/login/oauth/authorize?")
    return session_key(client)


def allauth_password_login(client: Client, user: AbstractBaseUser, password: str) -> str:
    """Log ``user`` in through allauth's login form."""
    response = client.post("/accounts/login/", {"login": user.get_username(), "password": password})
    assert response.status_code == 302, response
    return session_key(client)


def allauth_mfa_started(client: Client, user: AbstractBaseUser, password: str) -> str:
    """
    Give the password of ``user``, who has an authenticator app, and stop at
    the code: allauth keeps the half-done login in the session meanwhile.
    """
    response = client.post("/accounts/login/", {"login": user.get_username(), "password": password})
    assert response.status_code == 302, response
    assert response["Location"] == "/accounts/2fa/authenticate/", response["Location"]
    return session_key(client)


def allauth_totp_setup_started(client: Client, password: str) -> str:
    """
    As a logged-in user, confirm the password as allauth asks, open its page
    that sets up an authenticator app, and leave: the secret that the page
    shows as a QR code stays in the session.
    """
    response = client.post("/accounts/reauthenticate/", {"password": password})
    assert response.status_code == 302, response
    response = client.get("/accounts/2fa/totp/activate/")
    assert response.status_code == 200, response
    return session_key(client)


def enable_totp(user: AbstractBaseUser) -> None:
    """Give ``user`` an authenticator app, as if set up earlier."""
    TOTP.activate(user, generate_totp_secret())


def wizard_steps(client: Client, steps: int, wizard: str = "checkout") -> str:
    """
    Fill in the first ``steps`` steps of a form wizard and stop before the end:
    the wizard keeps what was typed under ``wizard_<prefix>`` in the session.
    """
    url, prefix, answers = WIZARDS[wizard]
    if steps >= len(answers):
        raise ValueError(f"The {wizard} wizard has {len(answers)} steps; finishing it clears them.")
    response = client.get(url)
    assert response.status_code == 200, response
    for step, fields in list(answers.items())[:steps]:
        data = {f"{prefix}-current_step": step}
        data.update({f"{step}-{name}": value for name, value in fields.items()})
        response = client.post(url, data)
        assert response.status_code == 200, response
        form = response.context["wizard"]["form"]
        assert not form.errors, form.errors
    return session_key(client)


def flashed(client: Client, *texts: str) -> str:
    """Flash messages that nobody reads: they wait in the session."""
    for text in texts:
        assert client.get("/flash/", {"text": text}).status_code == 200
    return session_key(client)


def cart(client: Client, *product_ids: int) -> str:
    """Put products in the cart, which the session holds."""
    for product_id in product_ids:
        assert client.get(f"/cart/add/{product_id}/").status_code == 200
    return session_key(client)
