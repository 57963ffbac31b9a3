"""
Measure analyze_sessions against the cost of decoding, side by side.

    python -m benchmarks.run [--sessions N] [--legacy-sessions M] [--no-postgres]
    python -m benchmarks.run --token-keys [--sessions N]
    python -m benchmarks.run --distinct-users [--sessions N]
    python -m benchmarks.run --scale [--sessions N]

Generates N realistic sessions into SQLite (kept in benchmarks/.data, so a
second run reuses them), and copies them into throwaway PostgreSQL and
MariaDB servers where they can be started here (the servers installed, and
the test suite's psycopg, mysqlclient and mirakuru); then times each
variant of benchmarks/variants.py in a process of its own, on each
database, and prints a table of wall times, ratios to the floor and to the
tight floor, and peak RSS.

With --token-keys, the sessions also hold one to three keys named after a
random OAuth state each (as social-auth-app-django names them), so that the
store holds about twice as many distinct keys as sessions; the command is
timed on a tenth of them and on all, to show that its memory stays flat.
With --distinct-users, each session is a distinct user's, with a search
key of its own: the users are sketched past 10,000. With --scale, every
session is logged in, two to a user, and one in ten holds a search key of
its own, so that N sessions hold N/2 distinct users and N/10 distinct
dynamic keys (ten million: five million users, a million keys); the
command's memory is measured on 100,000 of them and on all.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sqlite3
import string
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from importlib.util import find_spec
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "benchmarks" / ".data"
# The 2013 algorithm last: it reads a store of its own, which on MariaDB
# pushes the main store out of a buffer pool too small for both, so that
# whatever ran after it read from the disk.
VARIANTS = (
    "floor",
    "tight",
    "by_hand",
    "analyze_jobs_1",
    "analyze_jobs_2",
    *(("analyze_tasks_2",) if find_spec("django_tasks_db") else ()),
    "analyze_ids_from",
    "legacy_2013",
)


def sessions(
    count: int,
    seed: int = 2013,
    *,
    tokens: bool = False,
    distinct: bool = False,
    scaled: bool = False,
) -> Iterator[tuple[str, str, str]]:
    """
    (key, data, expire_date) for ``count`` sessions like a shop's; with
    ``tokens``, each with abandoned social logins' states under keys of their
    own; with ``distinct``, each of a user of its own, with a search of its
    own; with ``scaled``, each logged in, two to a user, one in ten with a
    search of its own.
    """
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "benchmarks.settings")
    import django

    django.setup()
    from django.contrib.sessions.backends.db import SessionStore
    from django.core import signing

    rng = random.Random(seed)
    store = SessionStore()
    now = datetime.now(timezone.utc)
    letters = string.ascii_lowercase + string.digits
    for number in range(count):
        session: dict[str, object] = {
            "recently_viewed": rng.sample(range(1, 5000), rng.randint(1, 12))
        }
        if rng.random() < 0.4:  # Logged in.
            session["_auth_user_id"] = str(rng.randint(1, 50_000))
            session["_auth_user_backend"] = "django.contrib.auth.backends.ModelBackend"
            session["_auth_user_hash"] = "".join(rng.choices("0123456789abcdef", k=64))
            session["preferences"] = {"language": "en", "theme": rng.choice(["light", "dark"])}
        if rng.random() < 0.35:
            session["cart"] = {
                "currency": "EUR",
                "items": [
                    {"product_id": rng.randint(1, 5000), "quantity": rng.randint(1, 3)}
                    for _ in range(rng.randint(1, 6))
                ],
            }
        if rng.random() < 0.15:
            session["_messages"] = '[["__json_message", 0, 25, "Saved.", ""]]'
        if rng.random() < 0.05:  # A key per search: dynamic keys.
            session[f"search_{rng.getrandbits(40):010x}"] = rng.sample(range(5000), 20)
        if rng.random() < 0.02:  # A report preview: 20-60 KB stored.
            session["report_preview"] = [
                {"order": row, "ref": f"{rng.getrandbits(128):032x}"}
                for row in range(rng.randint(350, 1050))
            ]
        if scaled:
            session["_auth_user_id"] = str(1_000_000 + number // 2)
            if number % 10 == 0:
                session[f"search_{number:010x}"] = rng.sample(range(5000), 5)
        if distinct:
            session["_auth_user_id"] = str(1_000_000 + number)
            session[f"search_{rng.getrandbits(40):010x}"] = rng.sample(range(5000), 5)
        if tokens:
            for _ in range(rng.choice((1, 1, 2, 3))):
                state = "".join(rng.choices(string.ascii_letters + string.digits, k=32))
                session[f"github_oauth2_state_{state}"] = {"state": state, "timestamp": 1795752249}
        data = store.encode(session)
        if rng.random() < 0.001:
            data = data[: len(data) // 2]  # Corrupt.
        elif rng.random() < 0.002:
            data = signing.dumps(session, key="a-key-long-gone", salt=store.key_salt, compress=True)
        expires = now + timedelta(days=rng.randint(-10, 14))  # A few in the past.
        key = "".join(rng.choices(letters, k=32))
        yield key, data, expires.isoformat(sep=" ")


def sqlite_store(
    count: int, *, tokens: bool = False, distinct: bool = False, scaled: bool = False
) -> Path:
    DATA.mkdir(parents=True, exist_ok=True)
    kind = "-tokens" if tokens else "-distinct" if distinct else "-scaled" if scaled else ""
    path = DATA / f"sessions-{count}{kind}.sqlite3"
    if path.exists():
        return path
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    env = {**os.environ, "BENCHMARK_DB_NAME": str(partial), "PYTHONPATH": str(ROOT)}
    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "-v0", "--settings=benchmarks.settings"],
        env=env,
        check=True,
    )
    os.environ["BENCHMARK_DB_NAME"] = str(partial)
    database = sqlite3.connect(partial)
    rows = sessions(count, tokens=tokens, distinct=distinct, scaled=scaled)
    while batch := [row for _, row in zip(range(10_000), rows, strict=False)]:
        database.executemany(
            "INSERT INTO django_session (session_key, session_data, expire_date) VALUES (?, ?, ?)",
            batch,
        )
        database.commit()
    database.close()
    partial.rename(path)
    return path


def ids_file(store: Path) -> Path:
    """A file listing every key in ``store``, for --ids-from."""
    path = store.with_suffix(".ids")
    if not path.exists():
        database = sqlite3.connect(store)
        with open(path, "w") as ids:
            for (key,) in database.execute("SELECT session_key FROM django_session"):
                ids.write(f"{key}\n")
        database.close()
    return path


def measure(variant: str, env: dict[str, str]) -> dict[str, float]:
    started = time.perf_counter()
    result = subprocess.run(
        [sys.executable, "-m", "benchmarks.variants", variant],
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    measured = json.loads(result.stdout.splitlines()[-1])
    seconds = time.perf_counter() - started - measured.pop("untimed_seconds", 0.0)
    return {"seconds": seconds, **measured}


def migrated_with_rows(
    env: dict[str, str], count: int, path: Path
) -> tuple[sqlite3.Connection, sqlite3.Cursor]:
    """
    Make the sessions table in the server's database for ``count``
    sessions, and open the rows of the SQLite store at ``path`` to copy.
    """
    env["BENCHMARK_DB_NAME"] = f"sessions_{count}"
    subprocess.run(
        [sys.executable, "-m", "django", "migrate", "-v0"],
        env={**env, "DJANGO_SETTINGS_MODULE": "benchmarks.settings"},
        check=True,
    )
    source = sqlite3.connect(path)
    rows = source.execute(
        "SELECT session_key, session_data, expire_date FROM django_session ORDER BY rowid"
    )
    return source, rows


def postgresql_store(stores: dict[int, Path]) -> tuple[dict[str, str], Callable[[], None]]:
    """
    A throwaway PostgreSQL server holding the sessions of ``stores``, each
    count in a database of its own: the settings that reach it, and what
    stops it. Unavailable (from the test suite's servers) if it cannot start.
    """
    import psycopg

    from tests import servers  # Needs the test suite's mirakuru.

    server = servers.start_postgresql()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCHMARK_DB": "postgres"}
    env.update(BENCHMARK_DB_HOST=server.settings["HOST"], BENCHMARK_DB_PORT=server.settings["PORT"])
    try:
        address = f"host={env['BENCHMARK_DB_HOST']} port={env['BENCHMARK_DB_PORT']} user=postgres"
        with psycopg.connect(address, autocommit=True) as admin:
            for count, path in stores.items():
                admin.execute(f"CREATE DATABASE sessions_{count}")
                source, rows = migrated_with_rows(env, count, path)
                with psycopg.connect(f"{address} dbname=sessions_{count}") as database:
                    with database.cursor().copy(
                        "COPY django_session (session_key, session_data, expire_date) FROM STDIN"
                    ) as copy:
                        for row in rows:
                            copy.write_row(row)
                    database.execute("ANALYZE django_session")
                source.close()
    except BaseException:
        server.stop()
        raise
    return env, server.stop


def mariadb_store(stores: dict[int, Path]) -> tuple[dict[str, str], Callable[[], None]]:
    """As postgresql_store(), on a throwaway MariaDB server."""
    import MySQLdb  # type: ignore[import-untyped]

    from tests import servers  # Needs the test suite's mirakuru.

    server = servers.start_mariadb()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCHMARK_DB": "mysql"}
    env.update(BENCHMARK_DB_HOST=server.settings["HOST"], BENCHMARK_DB_PORT=server.settings["PORT"])
    try:
        admin = MySQLdb.connect(
            host=env["BENCHMARK_DB_HOST"], port=int(env["BENCHMARK_DB_PORT"]), user="root"
        )
        for count, path in stores.items():
            admin.cursor().execute(f"CREATE DATABASE sessions_{count} CHARACTER SET utf8mb4")
            source, rows = migrated_with_rows(env, count, path)
            database = MySQLdb.connect(
                host=env["BENCHMARK_DB_HOST"],
                port=int(env["BENCHMARK_DB_PORT"]),
                user="root",
                database=f"sessions_{count}",
            )
            cursor = database.cursor()
            while batch := [row for _, row in zip(range(5_000), rows, strict=False)]:
                cursor.executemany(
                    "INSERT INTO django_session (session_key, session_data, expire_date) "
                    "VALUES (%s, %s, %s)",
                    [(key, data, expires.split("+")[0]) for key, data, expires in batch],
                )
                database.commit()
            cursor.execute("ANALYZE TABLE django_session")
            database.close()
            source.close()
        admin.close()
    except BaseException:
        server.stop()
        raise
    return env, server.stop


def table(title: str, results: dict[str, dict[str, float]]) -> str:
    lines = [
        title,
        "",
        f"{'variant':<22} {'sessions':>9} {'seconds':>8} {'vs floor':>8} {'vs tight':>8} "
        f"{'peak RSS':>9} {'workers':>8}",
    ]

    def base(name: str, sessions: float) -> float | None:
        """The time of the variant ``name`` on as many sessions, if it was run."""
        found = [
            result["seconds"]
            for variant, result in results.items()
            if variant.split()[0] == name and result["sessions"] == sessions
        ]
        return found[0] if found else None

    for variant, result in results.items():
        floor = base("floor", result["sessions"])
        tight = base("tight", result["sessions"])
        workers = result["workers_peak_rss_kib"] / 1024
        # The 2013 algorithm runs on fewer sessions: no ratio to the floor.
        ratio = "-" if variant == "legacy_2013" or not floor else f"{result['seconds'] / floor:.2f}"
        to_tight = (
            "-" if variant == "legacy_2013" or not tight else f"{result['seconds'] / tight:.2f}"
        )
        lines.append(
            f"{variant:<22} {int(result['sessions']):>9} {result['seconds']:>8.2f} "
            f"{ratio:>8} {to_tight:>8} {result['peak_rss_kib'] / 1024:>7.1f}MB "
            f"{(f'{workers:.1f}MB' if workers else '-'):>8}"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=1_000_000)
    parser.add_argument(
        "--legacy-sessions",
        type=int,
        default=50_000,
        help="Sessions for the 2013 algorithm, whose OFFSET paging is quadratic.",
    )
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS))
    parser.add_argument(
        "--no-postgres",
        action="store_true",
        help="Measure on SQLite only, even where PostgreSQL and MariaDB servers could be started.",
    )
    parser.add_argument(
        "--token-keys",
        action="store_true",
        help="Time the command on stores with about two distinct keys a session, on SQLite.",
    )
    parser.add_argument(
        "--scale",
        action="store_true",
        help="Measure the command's memory on 100,000 and on N sessions of N/2 users, on SQLite.",
    )
    parser.add_argument(
        "--distinct-users",
        action="store_true",
        help="Time the command on stores whose sessions are each a distinct user's, on SQLite.",
    )
    args = parser.parse_args()

    print(f"{platform.node()}: {os.cpu_count()} cores, Python {platform.python_version()}")
    if args.scale:
        scale(args.sessions)
        return
    if args.token_keys or args.distinct_users:
        growing(args.sessions, tokens=args.token_keys, distinct=args.distinct_users)
        return
    counts = {
        variant: args.legacy_sessions if variant == "legacy_2013" else args.sessions
        for variant in args.variants
    }
    stores = {count: sqlite_store(count) for count in sorted(set(counts.values()))}
    ids = {count: ids_file(path) for count, path in stores.items()}
    sqlite_env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCHMARK_DB": "sqlite"}
    run("SQLite", args, counts, ids, sqlite_env, lambda count: str(stores[count]))
    if args.no_postgres:
        return
    try:
        postgres_env, stop = postgresql_store(stores)
    except Exception as error:  # ImportError, or the server could not start.
        print(f"\nPostgreSQL: not measured: {first_line(error)}")
        return
    try:
        run("PostgreSQL", args, counts, ids, postgres_env, lambda count: f"sessions_{count}")
    finally:
        stop()
    try:
        mariadb_env, stop = mariadb_store(stores)
    except Exception as error:  # ImportError, or the server could not start.
        print(f"\nMariaDB: not measured: {first_line(error)}")
        return
    try:
        run("MariaDB", args, counts, ids, mariadb_env, lambda count: f"sessions_{count}")
    finally:
        stop()


def growing(count: int, *, tokens: bool = False, distinct: bool = False) -> None:
    """
    The command's time and memory on a tenth of ``count`` sessions of a
    store made to grow what the report counts (token keys, or distinct users
    with distinct keys), and on all of them.
    """
    results: dict[str, dict[str, float]] = {}
    for sessions_in_store in (count // 10, count):
        path = sqlite_store(sessions_in_store, tokens=tokens, distinct=distinct)
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "BENCHMARK_DB": "sqlite",
            "BENCHMARK_DB_NAME": str(path),
        }
        for variant in ("floor", "tight", "analyze_jobs_1"):
            results[f"{variant} {sessions_in_store}"] = measure(variant, env)
    title = (
        "SQLite, sessions with a distinct key for each OAuth state"
        if tokens
        else "SQLite, each session of a user of its own, with a search of its own"
    )
    print(table(title, results))


def scale(count: int) -> None:
    """The command's time and memory on 100,000 sessions of the --scale store, and on ``count``."""
    results: dict[str, dict[str, float]] = {}
    for sessions_in_store in (100_000, count):
        path = sqlite_store(sessions_in_store, scaled=True)
        env = {
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "BENCHMARK_DB": "sqlite",
            "BENCHMARK_DB_NAME": str(path),
        }
        for variant in ("tight", "analyze_jobs_1"):
            results[f"{variant} {sessions_in_store}"] = measure(variant, env)
            print(f"  {variant} {sessions_in_store}: done", file=sys.stderr)
    print(table("SQLite, two sessions a user, one in ten with a key of its own", results))


def run(
    title: str,
    args: argparse.Namespace,
    counts: dict[str, int],
    ids: dict[int, Path],
    env: dict[str, str],
    name: Callable[[int], str],
) -> None:
    results: dict[str, dict[str, float]] = {}
    for variant, count in counts.items():
        env = {**env, "BENCHMARK_DB_NAME": name(count), "BENCHMARK_IDS": str(ids[count])}
        results[variant] = measure(variant, env)
        print(f"  {title} {variant}: {results[variant]['seconds']:.2f}s", file=sys.stderr)
    print(table(f"{title}, {args.sessions} sessions", results))
    if "legacy_2013" in results and "floor" in results:
        legacy = results["legacy_2013"]
        print(
            f"(legacy_2013 ran on {args.legacy_sessions} sessions: "
            f"{legacy['seconds'] / args.legacy_sessions * 1e6:.1f} µs a session, against "
            f"{results['floor']['seconds'] / args.sessions * 1e6:.1f} µs for the floor)"
        )


def first_line(error: Exception) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


if __name__ == "__main__":
    main()
