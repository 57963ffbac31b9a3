"""Key patterns: session keys that differ only by the ids in them."""

from __future__ import annotations

import re

_IDS = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"  # UUIDs
    r"|(?<![0-9A-Za-z])[0-9a-fA-F]{8,}(?![0-9A-Za-z])"  # hex ids of 8 or more
    r"|[0-9]+"  # any run of digits
)


def key_pattern(key: str) -> str:
    """``key`` with its ids made ``*``: ``search_3a59507b24`` is ``search_*``."""
    return _IDS.sub("*", key)
