"""
Which installed app writes a session key: its owner.

Two sources, in this order of trust:

- ``known_keys.json``, shipped with the app: the session keys of Django and
  of popular third-party apps, exact or as patterns (``*_oauth2_state_*``),
  each with the ``AppConfig.name`` of the app that writes it;
- a read of the installed apps' own source with ``ast`` (nothing is
  imported, so nothing runs): ``request.session[...]``, ``del``, ``in``, and
  ``.session.get/pop/setdefault(...)`` with a constant key, a module's
  constant, or an f-string (a pattern), found with the file and line that
  writes it (``shop/views.py:27``).

Where both name a key, the table's owner is taken; an exact key's owner is
taken before a pattern's. Django's own apps are not read: the table has
their keys, nor is this app, which keeps none.
"""

from __future__ import annotations

import ast
import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

# What one read of the sources may cost, on a site of any size.
MAX_SOURCE_FILES = 20_000
MAX_SOURCE_SIZE = 1024 * 1024
# The fewest letters a pattern read from the source has, to claim keys.
MIN_PATTERN_LETTERS = 3
_SKIPPED_DIRECTORIES = frozenset({"tests", "test", "migrations", "node_modules", "static"})
_SESSION_METHODS = frozenset({"get", "pop", "setdefault", "__getitem__", "__setitem__"})
# Apps whose keys the table has (Django's), or that keep none (this one).
_NOT_READ = ("django.", "analyze_sessions")
# Where a nested path leaves its key: "cart[]", "wizard.step_data".
_NESTED = re.compile(r"[.\[]")


@dataclass(frozen=True)
class Owner:
    """The app that writes a key: its ``AppConfig.name``, and where, if read."""

    app: str
    where: str | None = None


class Owners:
    """Finds the owner of a key, or of a key's pattern, as the report names it."""

    def __init__(self, found: Iterable[tuple[str, Owner]]) -> None:
        self._exact: dict[str, Owner] = {}
        patterns: list[tuple[list[str], Owner]] = []
        for key, owner in found:
            if "*" in key:
                patterns.append((key.split("*"), owner))
            else:
                self._exact.setdefault(key, owner)
        # The pattern that says most first: wizard_checkout_* before wizard_*.
        self._patterns = sorted(patterns, key=lambda found: -sum(map(len, found[0])))
        self._cache: dict[str, Owner | None] = {}

    def __getstate__(self) -> dict[str, object]:
        # What a job sends back need not carry what it looked up.
        return {"_exact": self._exact, "_patterns": self._patterns, "_cache": {}}

    def __call__(self, name: str) -> Owner | None:
        """
        The owner of a key or pattern (``github_oauth2_state_*``); of a
        nested path (``socialaccount_states.*``), its key's.
        """
        if name in self._cache:
            return self._cache[name]
        owner = self._find(name)
        if owner is None and _NESTED.search(name):
            owner = self._find(_NESTED.split(name, maxsplit=1)[0])
        if len(self._cache) < 100_000:
            self._cache[name] = owner
        return owner

    def _find(self, key: str) -> Owner | None:
        owner = self._exact.get(key)
        if owner is None:
            owner = next((owner for parts, owner in self._patterns if _matches(parts, key)), None)
        return owner


def _matches(parts: list[str], name: str) -> bool:
    """
    Whether ``name`` (a ``*`` of its own included) is what the pattern of
    ``parts`` (the pattern split at its ``*``) stands for: in time linear in
    the name, as a regular expression of many ``.*`` would not be.
    """
    first, *middle, last = parts
    if len(name) < len(first) + len(last) or not (name.startswith(first) and name.endswith(last)):
        return False
    position, end = len(first), len(name) - len(last)
    for part in middle:
        found = name.find(part, position, end)
        if found < 0:
            return False
        position = found + len(part)
    return True


NO_OWNERS = Owners(())


def known_keys() -> list[tuple[str, Owner]]:
    """The shipped table's keys and their owners."""
    table = json.loads(Path(__file__).with_name("known_keys.json").read_text(encoding="utf-8"))
    return [(entry["key"], Owner(entry["owner"])) for entry in table["keys"]]


def installed_owners() -> Owners:
    """The owners of the keys of the installed apps: the table, then their sources."""
    from django.apps import apps

    return _owners(
        tuple(
            (config.name, config.path)
            for config in apps.get_app_configs()
            if not config.name.startswith(_NOT_READ)
        )
    )


@lru_cache(maxsize=4)
def _owners(installed: tuple[tuple[str, str], ...]) -> Owners:
    """The owners of these apps' keys, read once a process however many runs it makes."""
    table = known_keys()
    read = list(read_sources([(name, Path(path)) for name, path in installed]))
    exact_table = [item for item in table if "*" not in item[0]]
    patterns_table = [item for item in table if "*" in item[0]]
    exact_read = [item for item in read if "*" not in item[0]]
    patterns_read = [item for item in read if "*" in item[0]]
    return Owners([*exact_table, *exact_read, *patterns_table, *patterns_read])


def read_sources(apps: list[tuple[str, Path]]) -> Iterator[tuple[str, Owner]]:
    """
    The session keys the apps' sources use, each with its app (the deepest
    installed app a file is in) and its first file and line.
    """
    # Deepest first: allauth.account's files are its, not allauth's.
    by_depth = sorted(apps, key=lambda app: len(app[1].parts), reverse=True)
    files = 0
    seen: set[Path] = set()
    for name, root in by_depth:
        depth = len(name.split("."))
        top = root.parents[depth - 1] if depth <= len(root.parents) else root.parent
        for path in _python_files(root, [other for _, other in by_depth if other != root]):
            if path in seen:
                continue
            seen.add(path)
            files += 1
            if files > MAX_SOURCE_FILES:
                return
            where = os.path.relpath(path, top)
            for key, line in sorted(_session_keys(path), key=lambda found: found[1]):
                yield key, Owner(name, f"{where}:{line}")


def _python_files(root: Path, others: list[Path]) -> Iterator[Path]:
    """The source files of an app, without those of the apps inside it."""
    for directory, subdirectories, names in os.walk(root):
        subdirectories[:] = sorted(
            sub
            for sub in subdirectories
            if sub not in _SKIPPED_DIRECTORIES
            and not sub.startswith((".", "_"))
            and Path(directory, sub) not in others
        )
        for name in sorted(names):
            if name.endswith(".py") and not (name.startswith("test_") or name == "tests.py"):
                yield Path(directory, name)


def _session_keys(path: Path) -> list[tuple[str, int]]:
    """The keys ``path`` reads or writes in ``request.session``, with their lines."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_SOURCE_SIZE:
            return []
        tree = ast.parse(path.read_bytes(), filename=str(path))
    # Not Python, or more deeply nested than the parser goes (RecursionError,
    # MemoryError): no module that runs, so no key of the site's.
    except (OSError, SyntaxError, ValueError, RecursionError, MemoryError):
        return []
    constants = {
        target.id: node.value.value
        for node in tree.body
        if isinstance(node, ast.Assign)
        and isinstance(node.value, ast.Constant)
        and isinstance(node.value.value, str)
        for target in node.targets
        if isinstance(target, ast.Name)
    }
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.expr):
            continue
        key_node = None
        if isinstance(node, ast.Subscript) and _is_session(node.value):
            key_node = node.slice
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in _SESSION_METHODS
            and _is_session(node.func.value)
            and node.args
        ):
            key_node = node.args[0]
        elif (
            isinstance(node, ast.Compare)
            and len(node.ops) == 1
            and isinstance(node.ops[0], (ast.In, ast.NotIn))
            and _is_session(node.comparators[0])
        ):
            key_node = node.left
        key = None if key_node is None else _key(key_node, constants)
        if key:
            found.append((key, node.lineno))
    return found


def _is_session(node: ast.expr) -> bool:
    return isinstance(node, ast.Attribute) and node.attr == "session"


def _key(node: ast.expr, constants: dict[str, str]) -> str | None:
    """A key expression as a key or pattern, where it can be read without running it."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    if isinstance(node, ast.JoinedStr):
        pattern = "".join(
            str(part.value) if isinstance(part, ast.Constant) else "*" for part in node.values
        )
        # f"{a}_{b}" would claim every key with a "_": a pattern must say more.
        if len(re.findall("[A-Za-z]", pattern)) < MIN_PATTERN_LETTERS:
            return None
        return re.sub(r"\*+", "*", pattern)
    return None
