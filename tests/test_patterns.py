"""
The pattern rule: ids and random tokens made ``*``, names left whole.

Tokens are made as the apps that write them make theirs, from seeds that
hypothesis chooses (derandomized, so a run is repeatable): a token is a
draw from its alphabet, and hypothesis must not shrink one into
``aaaaaaaaaaaa``, which no generator of secrets gives.
"""

from __future__ import annotations

import base64
import json
import random
import re
import string
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analyze_sessions.owners import read_sources
from analyze_sessions.patterns import KeyPattern, is_token, key_pattern

SEEDS = st.integers(min_value=0, max_value=2**64)
PROPERTY = settings(derandomize=True, max_examples=500, deadline=None)
# What get_random_string() draws from, and what session keys are made of.
LETTERS_AND_DIGITS = string.ascii_letters + string.digits
SESSION_KEY_CHARACTERS = string.ascii_lowercase + string.digits


def drawn(seed: int, alphabet: str, length: int) -> str:
    rng = random.Random(seed)
    return "".join(rng.choice(alphabet) for _ in range(length))


@PROPERTY
@given(SEEDS)
def test_social_auth_states_are_tokens(seed: int) -> None:
    state = drawn(seed, LETTERS_AND_DIGITS, 32)  # social-core's state_token()

    assert key_pattern(f"github_oauth2_state_{state}") == KeyPattern(
        "github_oauth2_state_*", token=True
    )


@PROPERTY
@given(SEEDS)
def test_allauth_state_ids_are_tokens(seed: int) -> None:
    state_id = drawn(seed, LETTERS_AND_DIGITS, 16)  # allauth's STATE_ID_LENGTH

    assert key_pattern(f"socialaccount_states.{state_id}") == KeyPattern(
        "socialaccount_states.*", token=True
    )


@PROPERTY
@given(SEEDS)
def test_session_keys_with_a_digit_are_tokens(seed: int) -> None:
    key = drawn(seed, SESSION_KEY_CHARACTERS, 32)
    # All 32 letters and no digit (3 in 100,000 keys) is a word by the rule.
    if not any(character.isdigit() for character in key):
        key = key[:-1] + "7"

    assert key_pattern(f"impersonating_{key}") == KeyPattern("impersonating_*", token=True)


@PROPERTY
@given(SEEDS, st.integers(min_value=20, max_value=64))
def test_base62_tokens_of_any_length_are_tokens(seed: int, length: int) -> None:
    token = drawn(seed, LETTERS_AND_DIGITS, length)

    assert key_pattern(f"upload:{token}:progress") == KeyPattern("upload:*:progress", token=True)


@PROPERTY
@given(SEEDS, st.sampled_from([16, 24, 32]))
def test_base64url_tokens_keep_at_most_a_first_piece_that_reads_as_a_word(
    seed: int, size: int
) -> None:
    token = base64.urlsafe_b64encode(random.Random(seed).randbytes(size)).decode().rstrip("=")
    found = key_pattern(f"magic_link_{token}")

    assert found.token
    assert found.pattern.startswith("magic_link_")
    # "_" and "-" cut a token into pieces: a first piece that reads as a word
    # (lower case letters, say) may be kept, never most of it.
    kept = re.sub("[^A-Za-z0-9]", "", found.pattern.removeprefix("magic_link_"))
    assert len(kept) < len(token) / 3


@pytest.mark.parametrize(
    ("key", "pattern"),
    [
        ("search_3a59507b24", "search_*"),
        ("cart_12", "cart_*"),
        ("cart1234", "cart*"),
        ("checkout.3.step_data", "checkout.*.step_data"),
    ],
)
def test_ids_are_stars_and_not_tokens(key: str, pattern: str) -> None:
    assert key_pattern(key) == KeyPattern(pattern, token=False)


@pytest.mark.parametrize(
    ("key", "pattern"),
    [
        # Ids long enough to be secrets: UUIDs, hex of 16 or more, 6 digits or more.
        ("order-550e8400-e29b-41d4-a716-446655440000-lines", "order-*-lines"),
        ("oauth_state_ae7eeedd0ab466a5064ee9c3f25005ea", "oauth_state_*"),
        ("verify_123456", "verify_*"),
        # A token before words keeps them.
        ("dsk5DMysrgsq_state", "*_state"),
        # Base64 with its own separators, padding kept.
        ("nonce_qpCe/BkvMKA4FnX/SFMlQA==", "nonce_*=="),
        ("state%3DAbC%2B9dEf%2Fgh12", "state%*"),
        # A word between two pieces of a token is a piece of it.
        ("state_aB3_abc_Xy7kQr9zLm2", "state_*"),
        # Cut short in a nested path: what is left of a token.
        ("socialaccount_states.Xk9fQ2mL\u2026", "socialaccount_states.*\u2026"),
    ],
)
def test_tokens_in_every_shape_are_stars(key: str, pattern: str) -> None:
    assert key_pattern(key) == KeyPattern(pattern, token=True)


# Names that must stay whole: words cut at digits (oauth2) were the old
# rule's fault, and camelCase is no token.
NAMES = [
    "oauth2callback",
    "github_oauth2_transaction_index",
    "sha256signature",
    "step2validation",
    "ipv6",
    "2fa_code",
    "shop_cart_v2_itemsCount",
    "user_id_v2",
    "userPreferences",
    "recentlyViewedProducts",
    "lastVisitedPage",
    "XMLHttpRequest",
    "getHTTPResponseCode",
    "PasswordResetView",
    "ReauthenticateWebAuthnView",
    "TOTPDeviceForm",
    "shoppingCartItems",
    "socialaccount_sociallogin",
    "wizard_default_wizard_view_name",
    "internationalization",
]


@pytest.mark.parametrize("name", NAMES)
def test_names_stay_whole(name: str) -> None:
    assert key_pattern(name) == KeyPattern(name, token=False)


def test_the_shipped_keys_of_popular_apps_stay_whole() -> None:
    table = Path(__file__).parent.parent / "analyze_sessions" / "known_keys.json"
    keys = [entry["key"] for entry in json.loads(table.read_text())["keys"]]
    exact = [key for key in keys if "*" not in key]

    assert len(exact) > 40
    assert [key for key in exact if key_pattern(key).pattern != key] == []


def test_the_keys_installed_apps_use_stay_whole() -> None:
    from django.apps import apps

    installed = [(config.name, Path(config.path)) for config in apps.get_app_configs()]
    found = {key for key, _ in read_sources(installed) if "*" not in key}

    assert {"socialaccount_states", "account_login", "socialaccount_sociallogin"} <= found
    assert [key for key in found if key_pattern(key).pattern != key] == []


def test_one_case_without_digits_is_a_word_however_long() -> None:
    assert not is_token("qwrtzpsdfghjklyxcvbnm")
    assert not is_token("QWRTZPSDFGHJKLYXCVBNM")
    assert is_token("qwrtzpsdfghjklyxcvbnm7")


def test_tokens_are_twelve_characters_or_more() -> None:
    assert not is_token("Xq7ZkLmP2vR")
    assert is_token("Xq7ZkLmP2vRt")
