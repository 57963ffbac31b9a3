"""
Throwaway database servers for a test run, from the system's packages.

Each server lives in a temporary directory, listens on a free loopback
port, and is stopped and deleted when the run ends.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from mirakuru import TCPExecutor

HOST = "127.0.0.1"


class Unavailable(Exception):
    """The server cannot be started here; the message says how to fix that."""


class Server:
    """A running server: what Django needs to connect, and how to stop it."""

    def __init__(self, settings: dict[str, str], stop: Callable[[], None]) -> None:
        self.settings = settings
        self.stop = stop


def start(backend: str) -> Server:
    if backend == "postgres":
        return start_postgresql()
    if backend == "mysql":
        return start_mariadb()
    raise Unavailable(f"Unknown database '{backend}': use sqlite, postgres or mysql.")


def start_redis(replica_of: int | None = None, password: str | None = None) -> Server:
    """
    A Redis server; with ``replica_of``, a replica of the one on that port;
    with ``password``, one that asks for it, and listens on a Unix socket too
    (its path is the settings' ``SOCKET``).
    """
    program = _redis_server()
    base = Path(tempfile.mkdtemp(prefix="analyze-sessions-redis-"))
    port = free_port()
    # Nothing is saved to disk: the data lives as long as the test run.
    command = [program, "--bind", HOST, "--port", str(port), "--dir", str(base)]
    command += ["--save", "", "--appendonly", "no", "--logfile", str(base / "server.log")]
    settings = {"LOCATION": f"redis://{HOST}:{port}/0"}
    if replica_of is not None:
        command += ["--replicaof", HOST, str(replica_of)]
    if password is not None:
        socket_path = str(base / "redis.sock")
        command += ["--requirepass", password, "--unixsocket", socket_path]
        command += ["--unixsocketperm", "700"]
        settings = {"LOCATION": f"redis://:{password}@{HOST}:{port}/0", "SOCKET": socket_path}
    return _start_daemon(command, base, port, settings)


def start_redis_sentinel(primary_port: int, service: str) -> Server:
    """A Redis Sentinel watching the primary on ``primary_port`` as ``service``."""
    program = _redis_server()
    base = Path(tempfile.mkdtemp(prefix="analyze-sessions-sentinel-"))
    port = free_port()
    # A Sentinel rewrites its configuration file: one of its own.
    config = base / "sentinel.conf"
    config.write_text(
        f"bind {HOST}\nport {port}\ndir {base}\nlogfile {base / 'sentinel.log'}\n"
        f"sentinel monitor {service} {HOST} {primary_port} 1\n"
    )
    command = [program, str(config), "--sentinel"]
    return _start_daemon(command, base, port, {"LOCATION": f"{HOST}:{port}"})


def _redis_server() -> str:
    """The Redis server program, which runs Sentinels too."""
    program = _which("redis-server", extra=("/usr/sbin",))
    if program is None:
        raise Unavailable(
            "Redis is not installed (redis-server): install it with 'apt-get install redis-server'."
        )
    return program


def start_memcached() -> Server:
    program = _which("memcached", extra=("/usr/bin", "/usr/sbin"))
    if program is None:
        raise Unavailable(
            "memcached is not installed: install it with 'apt-get install memcached'."
        )
    base = Path(tempfile.mkdtemp(prefix="analyze-sessions-memcached-"))
    port = free_port()
    # memcached runs as root only when told which user to be.
    as_user = ["-u", "root"] if os.geteuid() == 0 else []
    command = [program, "-l", HOST, "-p", str(port), "-U", "0", *as_user]
    return _start_daemon(command, base, port, {"LOCATION": f"{HOST}:{port}"})


def _start_daemon(command: list[str], base: Path, port: int, settings: dict[str, str]) -> Server:
    executor = TCPExecutor(command, host=HOST, port=port, timeout=60)
    try:
        executor.start()
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise

    def stop() -> None:
        try:
            executor.stop()
        finally:
            shutil.rmtree(base, ignore_errors=True)

    return Server(settings, stop)


def start_postgresql() -> Server:
    bindir = _postgresql_bindir()
    # PostgreSQL refuses to run as root; the package's own user runs it then.
    as_user: list[str] = []
    base = Path(tempfile.mkdtemp(prefix="analyze-sessions-postgresql-"))
    if os.geteuid() == 0:
        try:
            postgres = pwd.getpwnam("postgres")
        except KeyError:
            raise Unavailable(
                "PostgreSQL cannot run as root, and there is no 'postgres' user to run "
                "it as: install the server with 'apt-get install postgresql'."
            ) from None
        os.chown(base, postgres.pw_uid, postgres.pw_gid)
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = base / "data", free_port()

    def pg_ctl(*args: str) -> None:
        _run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), *args])

    try:
        pg_ctl(
            "initdb",
            "-s",
            "-o",
            "--auth=trust --username=postgres --encoding=UTF8 --locale=C --no-sync",
        )
        pg_ctl(
            "start",
            "-w",
            "-s",
            "-l",
            str(base / "server.log"),
            "-o",
            f"-p {port} -k {base} -c listen_addresses={HOST} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off",
        )
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise

    def stop() -> None:
        try:
            pg_ctl("stop", "-w", "-s", "-m", "fast")
        finally:
            shutil.rmtree(base, ignore_errors=True)

    return Server({"HOST": HOST, "PORT": str(port), "USER": "postgres"}, stop)


def start_mariadb() -> Server:
    install_db = _which("mariadb-install-db", "mysql_install_db")
    server = _which("mariadbd", "mysqld", extra=("/usr/sbin", "/usr/libexec"))
    if install_db is None or server is None:
        raise Unavailable(
            "MariaDB is not installed (mariadb-install-db, mariadbd): install it with "
            "'apt-get install mariadb-server libmariadb-dev pkg-config', or run the "
            "suite on SQLite with ANALYZE_SESSIONS_DB=sqlite."
        )
    base = Path(tempfile.mkdtemp(prefix="analyze-sessions-mariadb-"))
    data, port = base / "data", free_port()
    # MariaDB runs as root only when told to, which tests on a throwaway
    # directory may do.
    as_user = ["--user=root"] if os.geteuid() == 0 else []
    try:
        _run(
            [
                install_db,
                "--no-defaults",
                f"--datadir={data}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                *as_user,
            ]
        )
    except BaseException:
        shutil.rmtree(base, ignore_errors=True)
        raise
    command = [
        server,
        "--no-defaults",
        f"--datadir={data}",
        f"--socket={base / 'mariadb.sock'}",
        f"--pid-file={base / 'mariadb.pid'}",
        f"--log-error={base / 'server.log'}",
        f"--bind-address={HOST}",
        f"--port={port}",
        "--innodb-flush-log-at-trx-commit=0",
        "--skip-log-bin",
        *as_user,
    ]
    return _start_daemon(command, base, port, {"HOST": HOST, "PORT": str(port), "USER": "root"})


def _postgresql_bindir() -> Path:
    on_path = shutil.which("pg_ctl")
    candidates = [Path(on_path).resolve().parent] if on_path else []
    # Debian keeps each major version's programs apart, off PATH.
    candidates += [
        Path(path)
        for path in sorted(
            glob.glob("/usr/lib/postgresql/*/bin"), key=lambda path: int(path.split("/")[4])
        )[::-1]
    ]
    for bindir in candidates:
        if (bindir / "pg_ctl").exists() and (bindir / "initdb").exists():
            return bindir
    raise Unavailable(
        "PostgreSQL is not installed (pg_ctl, initdb): install it with 'apt-get install "
        "postgresql', or run the suite on SQLite with ANALYZE_SESSIONS_DB=sqlite."
    )


def _which(*names: str, extra: tuple[str, ...] = ()) -> str | None:
    path = os.pathsep.join([os.environ.get("PATH", ""), *extra])
    for name in names:
        found = shutil.which(name, path=path)
        if found:
            return found
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def _run(command: list[str]) -> None:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"'{' '.join(command)}' failed with status {result.returncode}:\n"
            f"{result.stdout}{result.stderr}"
        )
