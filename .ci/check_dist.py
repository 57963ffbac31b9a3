"""Check the built distributions: metadata renders, the wheel holds the app only."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REQUIRED = {
    "analyze_sessions/__init__.py",
    "analyze_sessions/apps.py",
    "analyze_sessions/py.typed",
    "analyze_sessions/report.schema.json",
    "analyze_sessions/management/commands/analyze_sessions.py",
    "analyze_sessions/management/commands/analyze-sessions.py",
}


def main(dist: Path) -> int:
    distributions = sorted(str(path) for path in dist.iterdir())
    subprocess.run([sys.executable, "-m", "twine", "check", "--strict", *distributions], check=True)
    [wheel] = dist.glob("*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    problems = [f"{wheel.name} lacks {name}" for name in sorted(REQUIRED - names)]
    problems += [
        f"{wheel.name} holds {name}"
        for name in sorted(names)
        if not name.startswith(("analyze_sessions/", "django_analyze_sessions-"))
    ]
    for problem in problems:
        print(problem, file=sys.stderr)
    if not problems:
        print(f"{wheel.name}: {len(names)} files, the app and its metadata only")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
