"""
Count the letter pairs of the words in Python identifiers, for patterns.py.

The words are the parts of the identifiers in Django's source and the
standard library's, split at underscores and at changes of case, each
distinct word counted once. Run it with the newest Python and Django the
project supports, from the repository's root:

    python scripts/letter_pairs.py > analyze_sessions/letter_pairs.json
"""

from __future__ import annotations

import json
import re
import sys
import sysconfig
from collections import Counter
from itertools import pairwise
from pathlib import Path

import django

_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_WORD = re.compile(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])")
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def words(roots: list[Path]) -> set[str]:
    found: set[str] = set()
    for root in roots:
        for path in sorted(root.rglob("*.py")):
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            for identifier in _IDENTIFIER.findall(text):
                found.update(word.lower() for word in _WORD.findall(identifier) if len(word) > 1)
    return found


def main() -> None:
    roots = [Path(sysconfig.get_paths()["stdlib"]), Path(django.__file__).parent]
    pairs: Counter[str] = Counter()
    for word in words(roots):
        for before, after in pairwise("^" + word):
            pairs[before + after] += 1
    comment = (
        "How often each letter (a to z) follows another (^ is a word's start) in the words "
        f"of Python {sys.version_info[0]}.{sys.version_info[1]}'s and Django "
        f"{django.__version__}'s identifiers: see scripts/letter_pairs.py."
    )
    rows = [
        f"    {json.dumps(before)}: {json.dumps([pairs[before + after] for after in LETTERS])}"
        for before in "^" + LETTERS
    ]
    sys.stdout.write(
        f'{{\n  "comment": {json.dumps(comment)},\n  "pairs": {{\n'
        + ",\n".join(rows)
        + "\n  }\n}\n"
    )


if __name__ == "__main__":
    main()
