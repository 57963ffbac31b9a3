"""
Fill the demo shop's session table through real requests to its views.

The same sessions on every run, byte for byte, so that the report reads as
README shows it: the visitors are chosen with a fixed seed, the session
keys and OAuth states Django and social-auth draw come from it too, the
passwords have a fixed salt, and the expiry dates are fixed ones.
"""

from __future__ import annotations

import contextlib
import random
from argparse import ArgumentParser
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import social_core.backends.oauth
import social_django.strategy
from django.contrib.auth.hashers import make_password
from django.contrib.auth.models import User
from django.contrib.sessions.backends import base as session_base
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.core import signing
from django.core.management.base import BaseCommand
from django.db import transaction
from django.test import Client, override_settings
from django.utils import timezone as django_timezone
from django.utils.crypto import RANDOM_STRING_CHARS

from demo.views import CHECKOUT_STEPS

PASSWORD = "correct horse battery staple"
# When the sessions expire: live ones long after any run of the demo, the
# kiosk's before it.
LIVE_UNTIL = datetime(2100, 1, 1, tzinfo=timezone.utc)
KIOSK_UNTIL = datetime(2025, 1, 1, tzinfo=timezone.utc)
# When social-auth says the logins were started: any time, as long as it is fixed.
STATES_WRITTEN_AT = 1_800_000_000.0


class Command(BaseCommand):
    help = "Replace the demo's sessions with visitors made through real requests."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--sessions", type=int, default=3000, help="How many visitors. Defaults to 3000."
        )

    def handle(self, *args: Any, sessions: int, **options: Any) -> None:
        self.random = random.Random(2013)
        self.requests = 0
        with transaction.atomic(), self.drawn_from_the_seed():
            Session.objects.all().delete()
            User.objects.all().delete()
            # Long enough that logging in never hashes the password again.
            password = make_password(PASSWORD, salt="demo" * 6)
            User.objects.bulk_create(
                User(username=f"customer{n}", password=password) for n in range(sessions // 4)
            )
            self.usernames = list(User.objects.values_list("username", flat=True))
            for visitor in range(sessions):
                self.visit(visitor)
            # The in-store kiosk's sessions, whose age has run out: expired,
            # and still stored, as no clearsessions has run.
            with override_settings(SESSION_COOKIE_AGE=-60):
                for _ in range(sessions // 100):
                    self.browse(self.client())
            # Sessions from before the key was rotated still decode, through
            # SECRET_KEY_FALLBACKS.
            with override_settings(SECRET_KEY="demo-secret-key-2025"):
                for _ in range(20):
                    self.browse(self.client())
            now = django_timezone.now()
            Session.objects.filter(expire_date__lt=now).update(expire_date=KIOSK_UNTIL)
            Session.objects.filter(expire_date__gte=now).update(expire_date=LIVE_UNTIL)
            corrupt = self.store_corrupt_rows()
        self.stdout.write(
            f"Made {Session.objects.count()} sessions through {self.requests} requests "
            f"({corrupt} of them corrupt rows written straight to the table)."
        )

    @contextlib.contextmanager
    def drawn_from_the_seed(self) -> Iterator[None]:
        """
        Session keys and OAuth states drawn from the demo's seed, not the
        system's, and the time social-auth writes in its states a fixed one.
        """

        def drawn(length: int, allowed_chars: str = RANDOM_STRING_CHARS) -> str:
            return "".join(self.random.choice(allowed_chars) for _ in range(length))

        stand_ins = [
            (session_base, "get_random_string", drawn),
            (social_django.strategy, "get_random_string", drawn),
            (social_core.backends.oauth, "_time", lambda: STATES_WRITTEN_AT),
        ]
        kept = [(module, name, getattr(module, name)) for module, name, _ in stand_ins]
        for module, name, stand_in in stand_ins:
            setattr(module, name, stand_in)
        try:
            yield
        finally:
            for module, name, original in kept:
                setattr(module, name, original)

    def client(self) -> Client:
        return Client()

    def get(self, client: Client, path: str, data: Any = None) -> None:
        self.requests += 1
        assert client.get(path, data).status_code == 200, path

    def post(self, client: Client, path: str, data: Any = None) -> None:
        self.requests += 1
        response = client.post(path, data)
        assert response.status_code in (200, 302), path

    def visit(self, visitor: int) -> None:
        client = self.client()
        kind = self.random.random()
        if kind < 0.45:
            self.browse(client)
        elif kind < 0.70:
            self.log_in(client)
            self.browse(client)
        elif kind < 0.82:
            self.browse(client)
            self.check_out(client)
        elif kind < 0.90:
            self.post(client, "/contact/", {"message": "Where is my order?"})
        else:
            self.abandon_github_logins(client)
        if visitor % 250 == 0:
            # A handful of report previews, 20-60 KB each.
            self.log_in(client)
            self.post(client, "/reports/preview/", {"rows": self.random.randint(260, 740)})

    def browse(self, client: Client) -> None:
        for _ in range(self.random.randint(1, 6)):
            self.get(client, f"/products/{self.random.randint(1, 500)}/")
        if self.random.random() < 0.5:
            for _ in range(self.random.randint(1, 4)):
                product = self.random.randint(1, 500)
                self.post(client, f"/cart/add/{product}/", {"quantity": self.random.randint(1, 3)})
        if self.random.random() < 0.2:
            ids = self.random.sample(range(1, 500), 20)
            query = self.random.choice(["red shoes", "rain coat", "gift card", "socks"])
            self.get(client, "/search/", {"q": query, "id": ids})

    def abandon_github_logins(self, client: Client) -> None:
        """Start logging in with GitHub, once or more, and never come back."""
        self.browse(client)
        for _ in range(self.random.choice([1, 1, 1, 2, 3])):
            self.requests += 1
            response = client.post("/social/login/github/")
            assert response.status_code == 302, response.status_code

    def log_in(self, client: Client) -> None:
        username = self.random.choice(self.usernames)
        self.post(client, "/accounts/login/", {"username": username, "password": PASSWORD})
        self.get(client, "/account/")

    def check_out(self, client: Client) -> None:
        data = {
            "address": {"name": "A. Customer", "street": "1 Main Street", "city": "Lyon"},
            "shipping": {"method": "express", "instructions": "Leave at the door."},
            "payment": {"method": "card", "holder": "A. Customer"},
        }
        for step in CHECKOUT_STEPS[: self.random.randint(1, len(CHECKOUT_STEPS))]:
            self.post(client, f"/checkout/{step}/", data[step])

    def store_corrupt_rows(self) -> int:
        store = SessionStore()
        good = store.encode({"cart": {"currency": "EUR", "items": []}})
        rows = [
            good[: len(good) // 2],  # Truncated by a column that was too short.
            good[:-3],
            "{'legacy': 'pickled by a 2012 deploy'}",
            signing.dumps({"cart": []}, key="a-key-nobody-has", salt=store.key_salt),
            signing.TimestampSigner(salt=store.key_salt).sign("bm90IGpzb24"),  # "not json"
            signing.TimestampSigner(salt=store.key_salt).sign(".eJzLSM3JyVcozy"),  # Cut short.
        ]
        expires = LIVE_UNTIL
        Session.objects.bulk_create(
            Session(session_key=f"corrupt{n:025d}", session_data=data, expire_date=expires)
            for n, data in enumerate(rows)
        )
        return len(rows)
