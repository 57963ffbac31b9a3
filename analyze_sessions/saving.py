"""Write a report to a file whole or not at all, for cron to keep and others to read."""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Iterable

from analyze_sessions.shown import printable


class SaveError(Exception):
    """The report could not be saved; the message says where and why."""


def save_atomically(path: str, lines: Iterable[str], *, what: str) -> None:
    """
    Write ``lines`` to ``path``, each ended by a newline: first to a new
    temporary file in the same directory, then renamed over ``path``, so
    that a reader of ``path`` (a monitoring agent, next week's run) sees
    the old file or the new one, never half of one. The file gets the mode
    a new file gets under the process's umask. A file or a symbolic link at
    ``path`` is replaced, never written through: the link is replaced by
    the file, not followed. Anything else there (a device, a FIFO, a
    directory) is refused.
    """
    directory = os.path.dirname(os.path.abspath(path))
    temporary = None
    try:
        try:
            status = os.lstat(path)
        except FileNotFoundError:
            pass
        else:
            # A device, a FIFO, a directory is never replaced: root's cron
            # job pointed at /dev/null would replace /dev/null.
            if not (stat.S_ISREG(status.st_mode) or stat.S_ISLNK(status.st_mode)):
                raise SaveError(
                    f"Cannot save the {what} to '{printable(path)}': it is there, and is not a "
                    f"regular file, so it is not replaced."
                )
        descriptor, temporary = tempfile.mkstemp(
            dir=directory, prefix=".analyze-sessions-", suffix=".tmp"
        )
        with os.fdopen(descriptor, "w", encoding="utf-8") as saved:
            os.fchmod(saved.fileno(), 0o666 & ~_umask())
            for line in lines:
                saved.write(line)
                saved.write("\n")
            saved.flush()
            os.fsync(saved.fileno())
        os.replace(temporary, path)
        temporary = None
        _sync_directory(directory)
    except OSError as error:
        raise SaveError(
            f"Cannot save the {what} to '{printable(path)}': "
            f"{error.strerror or type(error).__name__}."
        ) from error
    finally:
        if temporary is not None:
            try:
                os.unlink(temporary)
            except OSError:
                pass


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _sync_directory(directory: str) -> None:
    """Make the rename last through a crash, where the system allows it."""
    try:
        descriptor = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)
