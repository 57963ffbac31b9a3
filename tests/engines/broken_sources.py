"""
Source classes that break the protocol each their own way, for the tests
of what the command makes of a site's source that fails.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from typing import Any

from django.contrib.sessions.backends.base import SessionBase

from analyze_sessions.sources import RawSession, SourceOptions

SECRET = "postgres://admin:hunter2@db.example.com/sessions"


class Working:
    keys_listed = keys_not_found = sessions_gone = 0

    def __init__(self) -> None:
        self.unreadable: Counter[str] = Counter()

    @classmethod
    def open(cls, engine: str, store_class: type[SessionBase], options: SourceOptions) -> Any:
        return cls()

    def total_sessions(self) -> int | None:
        return 2

    def batches(self) -> Iterator[Any]:
        moment = datetime(2100, 1, 1, tzinfo=timezone.utc)
        yield [RawSession("a" * 32, "not signed", moment, 10)]
        yield [RawSession("b" * 32, None, None, 99)]

    def scan(self) -> Iterator[Any]:
        return self.batches()

    def lookup(self, keys: Iterable[str]) -> Iterator[Any]:
        return self.batches()

    def close(self) -> None:
        raise RuntimeError(SECRET)


class OpenRaises(Working):
    @classmethod
    def open(cls, engine: str, store_class: type[SessionBase], options: SourceOptions) -> Any:
        raise RuntimeError(f"cannot connect to {SECRET}")


class OpensNothing(Working):
    @classmethod
    def open(cls, engine: str, store_class: type[SessionBase], options: SourceOptions) -> Any:
        return None


class FailsMidway(Working):
    def batches(self) -> Iterator[Any]:
        yield from list(super().batches())[:1]
        raise ConnectionError(f"lost {SECRET}")


class YieldsNone(Working):
    def batches(self) -> Iterator[Any]:
        yield None


class YieldsWrongTypes(Working):
    def batches(self) -> Iterator[Any]:
        yield [RawSession("a" * 32, b"bytes are not a session's data", None, "10")]  # type: ignore[arg-type]


class CountsWrong(Working):
    def total_sessions(self) -> Any:
        return "many"


class NotAClassMethod(Working):
    def open(self, engine: str, store_class: type[SessionBase], options: SourceOptions) -> Any:  # type: ignore[override]
        return self


class ExitsMidway(Working):
    def batches(self) -> Iterator[Any]:
        yield from list(super().batches())[:1]
        raise SystemExit(SECRET)


class SaysTooMuch(Working):
    def batches(self) -> Iterator[Any]:
        from analyze_sessions.sources import SourceError

        raise SourceError(f"Cannot reach {SECRET}")
        yield


class IgnoresShards(Working):
    """Yields every session whatever the key range: the guard keeps each shard's own."""

    def batches(self) -> Iterator[Any]:
        moment = datetime(2100, 1, 1, tzinfo=timezone.utc)
        yield [RawSession(f"{letter}" * 32, "not signed", moment, 10) for letter in "a0z9m"]


class OddReasons(Working):
    def __init__(self) -> None:
        super().__init__()
        self.unreadable = Counter({f"at {SECRET}": 3, "symbolic link": 1})


class YieldsDicts(Working):
    """A dict of the site's own objects would run their code where nothing contains it."""

    def batches(self) -> Iterator[Any]:
        yield [RawSession("a" * 32, {"cart": [1]}, None, 10)]


class ManyReasons(Working):
    def __init__(self) -> None:
        super().__init__()
        self.unreadable = Counter({f"reason {n}": 1000 for n in range(25)})
